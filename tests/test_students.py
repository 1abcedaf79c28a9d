"""The student zoo: every interaction formula against a naive NumPy implementation, output shapes,
spec §2.6 parameter counts, vmapped groups vs separately built copies, per-copy dropout/BatchNorm,
and the KDEF_Latest configs.

Train mode is checked against the same references with the hash dropout mask patched to a fixed
pattern (student_refs.keep_pattern), so each dropout must sit exactly where the spec puts it.

Tiny shapes throughout (B=6, F=4, d=4). Parameters are perturbed with noise after init so zero biases
and unit BN scales cannot hide a wrong formula, and BN running statistics are made non-trivial so
eval mode exercises them. The NumPy references (tests/student_refs.py) loop explicitly (pairs i<j,
fields, heads, channels) rather than mirroring the vectorised code.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config_module
from student_refs import B, HIDDEN, NAIVE, Train, keep_pattern, np_ecn, np_final, np_relayout
from kdef_jax.config import KDEF_LATEST, base_config, use_kdef_latest, validate
from kdef_jax.data.synthetic import CRITEO_VOCAB
from kdef_jax.export import extract_student
from kdef_jax.models import layers
from kdef_jax.models.embedding import FeatureEmbedding
from kdef_jax.models.ensemble import KDEFModel, groups_from_config, vmapped
from kdef_jax.models.registry import STUDENTS, get_student
from kdef_jax.steps import count_params

F, D = 4, 4  # B = 6 rows, HIDDEN = (8, 6): tests/student_refs.py
K = 2  # copies per vmapped group in the equivalence tests


def _cfg(**sections):
    c = base_config()
    c.model.hidden_units = HIDDEN
    for kind, values in sections.items():
        for k, v in values.items():
            c.model[kind][k] = v
    return c.model


# Small non-default settings so every code path (W_res in AutoInt, 2 heads, ...) runs.
TINY = _cfg(
    ecn={"num_cross_layers": 2},
    crossnet={"num_cross_layers": 2},
    dcnv2={"num_cross_layers": 2},
    dcn={"num_cross_layers": 2},
    cin={"cin_layers": (3, 2)},
    xdeepfm={"cin_layers": (3, 2)},
    autoint={"attention_layers": 2, "num_heads": 2, "attention_dim": 6, "layer_norm": True},
    afn={"logarithmic_neurons": 3},
)


def _kwargs(kind, **over):
    _, build = get_student(kind)
    return {**build(TINY), **over}


def _emb(seed=0, b=B):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, F, D)), jnp.float32)


def _perturb(tree, seed, scale=0.1):
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [x + scale * rng.normal(size=x.shape).astype(np.float32) for x in leaves])


def _stats(tree, seed):
    """Non-trivial running statistics: means ~ N(0, 0.3²), variances in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)

    def f(path, x):
        if path[-1].key == "var":
            return jnp.asarray(rng.uniform(0.5, 1.5, size=x.shape), jnp.float32)
        return jnp.asarray(0.3 * rng.normal(size=x.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(f, tree)


def _np(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def test_every_registered_kind_has_a_naive_reference():
    assert set(NAIVE) == set(STUDENTS)


def _group(kind, count=K, seed=0, **over):
    """A vmapped group of ``kind``: (module, variables with perturbed params and non-trivial stats)."""
    cls, _ = get_student(kind)
    kw = _kwargs(kind, **over)
    vm = vmapped(cls, count)(**kw)
    v = vm.init({"params": jax.random.PRNGKey(seed)}, _emb(), False, None)
    return cls, kw, vm, {"params": _perturb(v["params"], seed + 1), "batch_stats": _stats(v.get("batch_stats", {}), seed + 2)}


@pytest.mark.parametrize("kind", sorted(STUDENTS))
def test_vmapped_group_matches_separate_copies_and_naive_numpy(kind):
    cls, kw, vm, v = _group(kind)
    emb = _emb(1)
    out = vm.apply(v, emb, False, None)
    assert out.shape == (K, B) and out.dtype == jnp.float32
    single = cls(**kw)
    for k in range(K):
        vk = jax.tree.map(lambda x: x[k], v)
        np.testing.assert_allclose(single.apply(vk, emb, False), out[k], rtol=1e-5, atol=1e-5)
        ref = NAIVE[kind](np.asarray(emb, np.float64), _np(vk["params"]), _np(vk.get("batch_stats", {})))
        np.testing.assert_allclose(np.asarray(out[k]), ref, rtol=2e-4, atol=2e-4)
    assert not np.allclose(out[0], out[1])  # the copies have their own parameters


@pytest.mark.parametrize("blocks,gate", [(2, True), (1, False)])
def test_final_2b_and_ungated(blocks, gate):
    cls, kw, vm, v = _group("final", count=1, blocks=blocks, field_gate=gate)
    emb = _emb(2)
    out = vm.apply(v, emb, False, None)[0]
    vk = jax.tree.map(lambda x: x[0], v)
    ref = np_final(np.asarray(emb, np.float64), _np(vk["params"]), _np(vk["batch_stats"]), blocks=blocks, gate=gate)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=2e-4, atol=2e-4)
    assert ("block2" in vk["params"]) == (blocks == 2)
    assert ("field_gate" in vk["params"]["block1"]) == gate


def test_initialisations():
    cls, _ = get_student("final")
    e = _emb()
    ones = cls(**_kwargs("final", gate_init="ones")).init(jax.random.PRNGKey(0), e)["params"]["block1"]["field_gate"]["linear"]
    assert np.all(np.asarray(ones["kernel"]) == 0) and np.all(np.asarray(ones["bias"]) == 1)
    xav = cls(**_kwargs("final")).init(jax.random.PRNGKey(0), e)["params"]["block1"]["field_gate"]["linear"]
    assert np.all(np.asarray(xav["bias"]) == 0) and np.std(np.asarray(xav["kernel"])) > 0.1
    with pytest.raises(ValueError, match="gate_init"):
        cls(**_kwargs("final", gate_init="zeros")).init(jax.random.PRNGKey(0), e)
    # ECN: b_i ~ U[0, 1); BN(1) is a scalar (γ, β and running statistics); LN scale 1, bias 0.
    ecn, _ = get_student("ecn")
    wide = jnp.zeros((2, 40, 100))
    v = ecn(num_cross_layers=1).init(jax.random.PRNGKey(0), wide)
    b = np.asarray(v["params"]["b_0"])
    assert b.shape == (4000,) and b.min() >= 0 and b.max() < 1 and abs(b.mean() - 0.5) < 0.03
    assert v["params"]["bn_0"]["scale"].shape == () and v["batch_stats"]["bn_0"]["mean"].shape == ()
    assert np.all(np.asarray(v["params"]["ln_0"]["scale"]) == 1) and np.all(np.asarray(v["params"]["ln_0"]["bias"]) == 0)
    assert v["params"]["w_0"]["kernel"].shape == (4000, 2000) and "bias" not in v["params"]["w_0"]


def test_ecn_relayout_pairs_halves_within_a_field():
    from kdef_jax.models.students.ecn import ecn_relayout

    e = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    x = np.asarray(ecn_relayout(jnp.asarray(e)))
    np.testing.assert_array_equal(x, np_relayout(e))
    # coordinate j of the first half pairs with coordinate j of the second half: e_f[k] ↔ e_f[d/2+k]
    np.testing.assert_array_equal(x[0, :6], [0, 1, 4, 5, 8, 9])
    np.testing.assert_array_equal(x[0, 6:], [2, 3, 6, 7, 10, 11])


def test_ipnn_pair_order_is_row_major_upper_triangle():
    from kdef_jax.models.students.pnn import inner_products

    e = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    got = np.asarray(inner_products(jnp.asarray(e)))
    want = [[e[b, i] @ e[b, j] for i in range(5) for j in range(i + 1, 5)] for b in range(2)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_ecn_train_mode_scalar_batchnorm_is_masked_and_per_copy():
    """Train mode: BN(1) statistics over the real rows × L/2 positions; padded rows never enter them;
    each vmapped copy updates its own scalar running statistics."""
    cls, kw, vm, v = _group("ecn", count=3, dropout=0.0)
    emb = np.asarray(_emb(3, b=8))
    mask = np.array([1] * 6 + [0] * 2, np.float32)
    padded = emb.copy()
    padded[6:] = 1e3  # garbage rows
    out, st = vm.apply(v, jnp.asarray(padded), True, jnp.asarray(mask), mutable=["batch_stats"])
    out_ref, st_ref = vm.apply(v, jnp.asarray(emb[:6]), True, None, mutable=["batch_stats"])
    np.testing.assert_allclose(out[:, :6], out_ref, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), st, st_ref)
    means = np.asarray(st["batch_stats"]["bn_0"]["mean"])
    assert means.shape == (3,) and len(set(np.round(means, 6))) == 3
    for k in range(3):
        vk = _np(jax.tree.map(lambda x: x[k], v))
        pk = vk["params"]
        ref = np_ecn(padded.astype(np.float64), pk, vk["batch_stats"], 2, train=Train(rows=mask))
        np.testing.assert_allclose(np.asarray(out[k, :6]), ref[:6], rtol=2e-4, atol=2e-4)
        h = np_relayout(emb[:6].astype(np.float64)) @ pk["w_0"]["kernel"]
        old = np.asarray(v["batch_stats"]["bn_0"]["mean"][k])
        np.testing.assert_allclose(means[k], 0.9 * old + 0.1 * h.mean(), rtol=1e-4, atol=1e-6)
        # the running variance: unbiased over the 6 rows × L/2 values (n = 6·L/2, not 6), spec §2.4
        old_var = np.asarray(v["batch_stats"]["bn_0"]["var"][k])
        np.testing.assert_allclose(st["batch_stats"]["bn_0"]["var"][k], 0.9 * old_var + 0.1 * h.var(ddof=1), rtol=1e-4)
        wrong_n = 0.9 * old_var + 0.1 * h.var() * 6 / 5  # Bessel's correction for n = 6 rows: told apart above
        assert abs(wrong_n - st["batch_stats"]["bn_0"]["var"][k]) > 1e-3


TRAIN_RATE = 0.25
# Every kind with a dropout or a BatchNorm (crossnet and cin have neither).
TRAIN_KINDS = ["afn", "autoint", "dcn", "dcnv2", "deepfm", "ecn", "final", "ipnn", "mlp", "widedeep", "xdeepfm"]


@pytest.mark.parametrize("kind", TRAIN_KINDS)
def test_train_mode_matches_naive_numpy_with_a_fixed_dropout_mask(kind, monkeypatch):
    """Train mode (BN batch statistics, dropout on, every row real) against the NumPy references: the hash mask
    is patched to ``keep_pattern``, which the references apply, scaled by 1/(1−p), at the spec's place — so a
    dropout moved (inside ECN's residual, before the MLP's BN) or a reordered block fails."""
    calls = []

    def fixed_mask(key, shape, keep_prob):
        calls.append((tuple(shape), keep_prob))
        return jnp.asarray(keep_pattern(shape))

    monkeypatch.setattr(layers, "hash_keep_mask", fixed_mask)
    _, _, vm, v = _group(kind, dropout=TRAIN_RATE, dropout_rng="hash")
    emb = _emb(5)
    out, _ = vm.apply(v, emb, True, None, rngs={"dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"])
    assert calls and all(kp == pytest.approx(1 - TRAIN_RATE) for _, kp in calls), calls
    for k in range(K):
        vk = _np(jax.tree.map(lambda x: x[k], v))
        ref = NAIVE[kind](np.asarray(emb, np.float64), vk["params"], vk["batch_stats"], train=Train(TRAIN_RATE))
        np.testing.assert_allclose(np.asarray(out[k]), ref, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("kind", ["ecn", "final", "autoint"])
def test_copies_draw_independent_dropout_masks(kind):
    cls, kw, vm, v = _group(kind, count=3, dropout=0.5)
    same = {"params": jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), v["params"]),
            "batch_stats": jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), v["batch_stats"])}
    emb = _emb(4)
    ev = vm.apply(same, emb, False, None)
    np.testing.assert_allclose(ev[0], ev[2], rtol=1e-6)
    tr, _ = vm.apply(same, emb, True, None, rngs={"dropout": jax.random.PRNGKey(5)}, mutable=["batch_stats"])
    for a, b in itertools.combinations(range(3), 2):
        assert not np.allclose(tr[a], tr[b]), (kind, a, b)


# ----------------------------------------------------------------------------- parameter counts (spec §2.6)
def _latest_counts(vocab, d, hidden, layers, lens=None):
    c = base_config()
    use_kdef_latest(c, num_cross_layers=layers)
    c.model.hidden_units = hidden
    model = KDEFModel(vocab_sizes=vocab, groups=groups_from_config(c.model), embedding_dim=d, max_lens=lens)
    cols = sum(lens) if lens else len(vocab)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.ones((2, cols), jnp.int32)))
    return count_params(shapes["params"])


def test_kdef_latest_parameter_counts_match_reference_logs():
    crit = _latest_counts(CRITEO_VOCAB, 16, (400,) * 3, 4)
    assert crit == {"embedding": 14_571_952, "group0_ipnn": 870_001, "group1_final": 824_761, "group2_ecn": 784_377,
                    "total": 17_051_091}
    # ML-1M: 7 fields (Genres a sequence, max_len 5), 9,751 embedding rows, 2 ECN layers
    ml = _latest_counts((9751 - 60,) + (10,) * 6, 16, (400,) * 3, 2, lens=(5, 1, 1, 1, 1, 1, 1))
    assert ml["embedding"] == 9751 * 16 and ml["total"] == 959_983
    # KKBox: d=128, [1000]×3, 3 ECN layers, 13 fields, 91,756 embedding rows
    kk = _latest_counts((91_756 - 120,) + (10,) * 12, 128, (1000,) * 3, 3)
    assert kk["embedding"] == 91_756 * 128 and kk["total"] == 24_999_951
    # Frappe shapes (reference-perf §5.1): 10 fields, 5,298 rows, 2 ECN layers
    fr = _latest_counts((5298 - 90,) + (10,) * 9, 16, (400,) * 3, 2)
    assert (fr["group0_ipnn"], fr["group1_final"], fr["group2_ecn"], fr["total"]) == (406_001, 452_111, 26_405, 969_285)


# ----------------------------------------------------------------------------- groups, configs
def test_mixed_groups_stack_in_config_order_and_run_in_bfloat16():
    c = base_config()
    c.model.hidden_units = HIDDEN
    c.model.students = "mlp:2,ecn:1,ipnn:1"
    groups = groups_from_config(c.model)
    assert [(g.kind, g.count) for g in groups] == [("mlp", 2), ("ecn", 1), ("ipnn", 1)]
    vocab = (5, 7, 4, 6)
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 4, size=(B, 4)), jnp.int32)
    model = KDEFModel(vocab_sizes=vocab, groups=groups, embedding_dim=D)
    v = model.init(jax.random.PRNGKey(0), ids)
    assert list(v["params"]) == ["embedding", "group0_mlp", "group1_ecn", "group2_ipnn"]
    out = model.apply(v, ids, False, None)
    assert out.shape == (4, B)
    ecn, _ = get_student("ecn")
    e = FeatureEmbedding(vocab, D).apply({"params": v["params"]["embedding"]}, ids)
    one = jax.tree.map(lambda x: x[0], {"params": v["params"]["group1_ecn"], "batch_stats": v["batch_stats"]["group1_ecn"]})
    np.testing.assert_allclose(ecn(**dict(groups[1].kwargs)).apply(one, e, False), out[2], rtol=1e-5, atol=1e-6)
    single, sv = extract_student(model, v, 3)  # export: the IPNN alone, from its group's slice
    np.testing.assert_allclose(single.apply(sv, ids, False, None)[0], out[3], rtol=1e-5, atol=1e-6)
    # bfloat16 compute on logits of order 1 (the 1e-4 init alone gives ~1e-3 logits, which any answer near 0 matches;
    # errors measured 0.3-0.7% of each student's largest logit)
    big = {**v, "params": {**v["params"], "embedding": {"table": v["params"]["embedding"]["table"] * 3e3}}}
    out = np.asarray(model.apply(big, ids, False, None))
    bf = model.clone(compute_dtype="bfloat16").apply(big, ids, False, None)
    assert bf.dtype == jnp.float32 and np.all(np.isfinite(bf))
    bf = np.asarray(bf)
    assert np.abs(out).max(1).min() > 0.1  # every student's logits of order 0.1-1 (measured 0.16-4.1)
    assert np.any(bf != out)  # it really ran in bf16 (8-bit mantissas)
    assert np.all(np.abs(bf - out).max(1) <= 3e-2 * np.abs(out).max(1))  # per student, within bf16's few-% error


def test_every_kind_builds_from_base_config():
    c = base_config()
    c.model.hidden_units = HIDDEN
    c.model.students = ",".join(f"{k}:1" for k in sorted(STUDENTS))
    validate(c)
    groups = groups_from_config(c.model)
    assert [g.kind for g in groups] == sorted(STUDENTS)


def test_config_errors_name_the_key():
    c = base_config()
    c.model.final.gate_init = "zeros"
    with pytest.raises(ValueError, match="model.final.gate_init"):
        validate(c)
    c = base_config()
    c.model.ecn.dropout = 1.5
    with pytest.raises(ValueError, match="model.ecn.dropout"):
        validate(c)
    c = base_config()
    use_kdef_latest(c)
    c.model.hidden_units = (400, 401)
    with pytest.raises(ValueError, match="even widths"):
        validate(c)


def test_kdef_latest_configs():
    fr = load_config_module("kdef_latest_frappe").get_config()
    assert fr.model.students == KDEF_LATEST == "ipnn:1,final:1,ecn:1"
    assert (fr.model.ipnn.dropout, fr.model.final.dropout, fr.model.ecn.dropout) == (0.1, 0.1, 0.3)
    assert fr.model.ecn.num_cross_layers == 2 and fr.model.ecn.batch_norm and fr.model.final.gate_init == "xavier"
    assert (fr.train.batch_size, fr.optim.embedding_l2, tuple(fr.model.hidden_units)) == (4096, 0.01, (400, 400, 400))
    assert fr.data.valid_mod == 10 and fr.data.files.test == "frappe.test.libfm"
    cr = load_config_module("kdef_latest_criteo").get_config()
    assert (cr.model.ipnn.dropout, cr.model.final.dropout, cr.model.ecn.dropout) == (0.1, 0.1, 0.1)
    assert (cr.model.ecn.num_cross_layers, cr.train.batch_size, cr.optim.embedding_l2) == (4, 4096, 1e-5)
    assert cr.data.min_count == 10
    ml = load_config_module("kdef_latest_movielens").get_config()
    assert (ml.model.ipnn.dropout, ml.model.final.dropout, ml.model.ecn.dropout, ml.model.ecn.num_cross_layers) == (0.1, 0.1, 0.3, 2)
    assert ml.data.fields[-1] == "genres" and ml.optim.embedding_l2 == 0.01 and ml.train.batch_size == 4096
    for name in ("kdef_latest_frappe", "kdef_latest_criteo", "kdef_latest_movielens"):
        tiny = load_config_module(name).get_config("tiny")
        validate(tiny)
        assert tiny.model.students == KDEF_LATEST and tiny.train.num_epochs <= 2
    other = load_config_module("kdef_latest")  # KDD12, KKBox, iPinYou: spec §5's EKTF_L columns
    for arg, dropouts, emb_l2, batch in (("kdd12", (0, 0, 0), 0.0, 10_000), ("kkbox", (0.1, 0.1, 0.2), 5e-4, 10_000),
                                         ("ipinyou", (0.3, 0.2, 0.2), 1e-3, 4096)):
        c = other.get_config(arg)
        validate(c)
        assert c.model.students == KDEF_LATEST and c.model.ecn.num_cross_layers == 3
        assert (c.model.ipnn.dropout, c.model.final.dropout, c.model.ecn.dropout) == dropouts
        assert (c.optim.embedding_l2, c.train.batch_size) == (emb_l2, batch)
    validate(other.get_config("ipinyou_tiny"))
    with pytest.raises(ValueError, match="use one of kdd12, kkbox"):
        other.get_config("criteo")


def test_kkbox_configs_give_the_reference_logs_parameter_counts():
    """spec §2.6: KKBox EKTF_L 24,999,951 and EKTF K=10 48,484,778 (13 fields, 91,756 embedding rows,
    d=128, [1000]×3), built from the configs themselves."""
    vocab = (91_756 - 120,) + (10,) * 12

    def total(c):
        model = KDEFModel(vocab_sizes=vocab, groups=groups_from_config(c.model), embedding_dim=c.model.embedding_dim)
        shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.ones((2, len(vocab)), jnp.int32)))
        return count_params(shapes["params"])["total"]

    assert total(load_config_module("kdef_latest").get_config("kkbox")) == 24_999_951
    assert total(load_config_module("kkbox").get_config()) == 48_484_778


def test_ecn_relayout_odd_dim_splits_ceil_then_floor():
    """An odd d splits as torch.tensor_split does: ceil(d/2) then floor(d/2)."""
    from kdef_jax.models.students.ecn import ecn_relayout

    e = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)  # row 0: e_1 = [0, 1, 2], e_2 = [3, 4, 5]
    x = np.asarray(ecn_relayout(jnp.asarray(e)))
    np.testing.assert_array_equal(x[0], [0, 1, 3, 4, 2, 5])  # first halves [0,1] [3,4], then second halves [2] [5]
    np.testing.assert_array_equal(x[1], [6, 7, 9, 10, 8, 11])


def _attention(use_scale, use_residual):
    from kdef_jax.models.students.autoint import MultiHeadSelfAttention

    eye = jnp.eye(2, dtype=jnp.float32)
    layer = MultiHeadSelfAttention(attention_dim=2, num_heads=1, dropout=0.0, use_residual=use_residual,
                                                                  use_scale=use_scale, layer_norm=False)
    x = jnp.asarray([[[1.0, 0.0], [0.0, 2.0]]])  # B=1, F=2, d=2; W_q = W_k = W_v = I, so Q = K = V = X
    params = {"W_q": {"kernel": eye}, "W_k": {"kernel": eye}, "W_v": {"kernel": eye}}
    return np.asarray(layer.apply({"params": params}, x, False))[0]


def test_autoint_attention_unscaled_without_residual_hand_values():
    """use_scale=False and use_residual=False by hand.

    S = X Xᵀ = [[1, 0], [0, 4]]; row 1: softmax([1, 0]) = [e/(1+e), 1/(1+e)] = [0.731059, 0.268941],
    O₁ = 0.731059·[1, 0] + 0.268941·[0, 2] = [0.731059, 0.537883]; row 2: softmax([0, 4]) =
    [0.017986, 0.982014], O₂ = [0.017986, 1.964028]. No residual, ReLU keeps them."""
    np.testing.assert_allclose(_attention(False, False), [[0.7310586, 0.5378828], [0.0179862, 1.9640276]], rtol=1e-5)


def test_autoint_attention_scaled_with_identity_residual_hand_values():
    """S = X Xᵀ/√2 = [[0.707107, 0], [0, 2.828427]]; row 1 softmax = [0.669762, 0.330238] → O₁ = [0.669762,
    0.660477] + X₁ = [1.669762, 0.660477]; row 2 softmax = [0.055807, 0.944193] → O₂ = [0.055807, 1.888386] + [0, 2]."""
    np.testing.assert_allclose(_attention(True, True), [[1.6697616, 0.6604769], [0.0558072, 3.8883856]], rtol=1e-5)


def test_afn_log_transform_clamps_at_1e5_and_flattens_neuron_major():
    """With identity BNs and W = I (N = F), C = exp(ln max(|E|, 1e-5)) =
    max(|E|, 1e-5), flattened neuron-major: E = [[0, -2], [3, 1e-7]] → [1e-5, 2, 3, 1e-5]."""
    from kdef_jax.models.students.afn import log_transform

    ident_bn = lambda x, train, mask: x  # noqa: E731
    e = jnp.asarray([[[0.0, -2.0], [3.0, 1e-7]]])
    out = np.asarray(log_transform(e, lambda a: a, ident_bn, ident_bn, False, None))
    np.testing.assert_allclose(out, [[1e-5, 2.0, 3.0, 1e-5]], rtol=1e-5, atol=0)



def test_afn_padded_all_pad_rows_cannot_overflow_into_the_real_rows():
    """A padded row is all PAD ids (|E| = 0 → every field at log 1e-5), AFN's most extreme input: with
    a coefficient W of -0.5 its exp overflows to inf where real rows stay finite. The masked step must
    give the real rows' loss, gradients and statistics (inf·0 = NaN in a masked product did not)."""
    from kdef_jax.losses import kdef_loss
    from kdef_jax.models.ensemble import StudentGroup

    f, n, pad = 20, 16, 4
    kw = (("batch_norm", True), ("dropout", 0.0), ("dropout_rng", "hash"), ("hidden_units", (8,)))
    model = KDEFModel(vocab_sizes=(50,) * f, groups=(StudentGroup("afn", 1, kw + (("logarithmic_neurons", 3),)),
                                                      StudentGroup("mlp", 1, kw)), embedding_dim=4, embedding_init_std=0.3)
    rng = np.random.default_rng(0)
    ids = np.zeros((n + pad, f), np.int32)
    ids[:n] = rng.integers(1, 50, (n, f))
    y = (rng.random(n + pad) < 0.5).astype(np.float32)
    mask = np.r_[np.ones(n), np.zeros(pad)].astype(np.float32)
    v = model.init(jax.random.PRNGKey(0), ids[:2], False)
    params = jax.tree.map(lambda x: x, v["params"])
    w = params["group0_afn"]["coefficient_W"]["kernel"]
    params["group0_afn"]["coefficient_W"]["kernel"] = jnp.full(w.shape, -0.5)

    def loss(p, ids, y, mask):
        z, new = model.apply({"params": p, "batch_stats": v["batch_stats"]}, ids, True, mask, mutable=["batch_stats"])
        return kdef_loss(z, y, mask=mask)[0], new

    step = jax.jit(jax.value_and_grad(loss, has_aux=True))  # one compile a shape, not one per op
    (l_real, s_real), g_real = step(params, ids[:n], y[:n], None)
    (l_pad, s_pad), g_pad = step(params, ids, y, mask)
    assert np.isfinite(float(l_real))
    np.testing.assert_allclose(float(l_pad), float(l_real), rtol=1e-5)
    for a, b in zip(jax.tree.leaves((g_pad, s_pad)), jax.tree.leaves((g_real, s_real))):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def _np_layer_norm(x, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)


def test_ecn_masker_layernorm_epsilon_is_1e5():
    """ECN's masker LayerNorm has torch's eps 1e-5 (flax's default is 1e-6). With BN off and embeddings of
    order 1e-3 its input H has a per-row variance ~1e-6, where the two differ by a factor ~2."""
    cls, _ = get_student("ecn")
    m = cls(num_cross_layers=1, dropout=0.0, batch_norm=False)
    e = 1e-3 * _emb(0)
    v = m.init(jax.random.PRNGKey(0), e)
    _, st = m.apply(v, e, False, capture_intermediates=True, mutable=["intermediates"])
    h = np.asarray(st["intermediates"]["w_0"]["__call__"][0], np.float64)  # H = x Wᵀ (BN off: the LN input)
    assert 1e-8 < h.var(-1).max() < 1e-4  # the regime where eps matters
    ln = np.asarray(st["intermediates"]["ln_0"]["__call__"][0])
    np.testing.assert_allclose(ln, _np_layer_norm(h), rtol=1e-3, atol=1e-4)


def test_autoint_layernorm_epsilon_is_1e5_hand_values():
    """W_q = W_k = W_v = I (A = d = 2, one head), no residual, LayerNorm on: X tiny, so softmax ≈ uniform and
    O ≈ the mean of the rows; LN over 2 features gives ±δ/√(δ² + eps), δ = (o₁ − o₂)/2, then ReLU."""
    from kdef_jax.models.students.autoint import MultiHeadSelfAttention

    x = np.asarray([[[1e-3, 0.0], [0.0, 2e-3]]], np.float32)
    eye = jnp.eye(2, dtype=jnp.float32)
    layer = MultiHeadSelfAttention(attention_dim=2, num_heads=1, dropout=0.0, use_residual=False, use_scale=True,
                                   layer_norm=True)
    params = {"W_q": {"kernel": eye}, "W_k": {"kernel": eye}, "W_v": {"kernel": eye},
              "layer_norm": {"scale": jnp.ones(2), "bias": jnp.zeros(2)}}
    got = np.asarray(layer.apply({"params": params}, jnp.asarray(x), False))[0]
    xd = x[0].astype(np.float64)
    s = xd @ xd.T / np.sqrt(2.0)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = np.maximum(_np_layer_norm(p @ xd), 0.0)  # ≈ [[0, 0.0788], [0, 0.0788]]; eps 1e-6: 0.2425
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
    assert 0.07 < got[0, 1] < 0.09


# every kind with a BatchNorm but afn, ecn and mlp, whose padded-row tests are above / in test_train.py
MASK_KINDS = ["autoint", "dcn", "dcnv2", "deepfm", "final", "ipnn", "widedeep", "xdeepfm"]


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_padded_rows_never_enter_any_students_batchnorm_statistics(kind):
    """Train mode on a last partial batch: 6 real rows + 2 padded garbage rows with the row mask give the real rows'
    outputs and the running statistics of the 6 real rows alone, for every student with a BatchNorm (each must
    hand the mask to its MLP tower / BN)."""
    _, _, vm, v = _group(kind, count=1, dropout=0.0)
    emb = np.asarray(_emb(3, b=8))
    padded = emb.copy()
    padded[6:] = 3.0 * np.random.default_rng(9).normal(size=padded[6:].shape)
    mask = jnp.asarray([1.0] * 6 + [0.0] * 2)
    out, st = vm.apply(v, jnp.asarray(padded), True, mask, mutable=["batch_stats"])
    ref, st_ref = vm.apply(v, jnp.asarray(emb[:6]), True, None, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(out[:, :6]), np.asarray(ref), rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), st, st_ref)


def test_fm_product_sum_by_hand():
    """Σ_{i<j} <e_i, e_j>: <e1,e2> = 11, <e1,e3> = 17, <e2,e3> = 39."""
    from kdef_jax.models.students.wide import fm_product_sum

    e = jnp.asarray([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    assert fm_product_sum(e).tolist() == [11.0 + 17.0 + 39.0]


def test_dcn_v1_cross_layer_by_hand():
    """x + x0·(xᵀw) + b with xᵀw = 1.5 − 2 = −0.5: [3 − 0.5 + 0.1, −1 − 1 − 0.2]."""
    from kdef_jax.models.students.dcn import CrossLayerV1

    x0, x = jnp.asarray([[1.0, 2.0]]), jnp.asarray([[3.0, -1.0]])
    p = {"w": {"kernel": jnp.asarray([[0.5], [2.0]])}, "b": jnp.asarray([0.1, -0.2])}
    np.testing.assert_allclose(CrossLayerV1().apply({"params": p}, x0, x), [[2.6, -2.2]], rtol=1e-6)
