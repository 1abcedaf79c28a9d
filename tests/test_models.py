"""Model structure: parameter counts (spec §2.6), vmapped students, embedding PAD rows, BatchNorm."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kdef_jax.config import base_config
from kdef_jax.data.synthetic import CRITEO_VOCAB
from kdef_jax.models.embedding import FeatureEmbedding, field_offsets
from kdef_jax.models.ensemble import KDEFModel, StudentGroup, groups_from_config
from kdef_jax.models.layers import BatchNorm
from kdef_jax.models.registry import STUDENTS, get_student
from kdef_jax.models.students.mlp import MLPStudent
from kdef_jax.steps import count_params

MLP_KW = (("batch_norm", True), ("dropout", 0.1), ("hidden_units", (400, 400, 400)))


def _param_count(model, num_columns):
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.ones((2, num_columns), jnp.int32)))
    return count_params(shapes["params"])


@pytest.mark.parametrize(
    "k,total",
    [(2, 15_719_154), (3, 16_292_755), (4, 16_866_356), (5, 17_439_957), (6, 18_013_558), (10, 20_307_962)],
)
def test_criteo_parameter_counts_match_reference_logs(k, total):
    assert sum(CRITEO_VOCAB) == 910_747
    model = KDEFModel(vocab_sizes=CRITEO_VOCAB, groups=(StudentGroup("mlp", k, MLP_KW),), embedding_dim=16)
    counts = _param_count(model, 39)
    assert counts["embedding"] == 14_571_952
    assert counts["group0_mlp"] == k * 573_601
    assert counts["total"] == total


def _small_model(k=3, dropout=0.0, hidden=(8, 6), vocab=(5, 7, 4), lens=None):
    kw = (("batch_norm", True), ("dropout", dropout), ("hidden_units", hidden))
    return KDEFModel(vocab_sizes=vocab, groups=(StudentGroup("mlp", k, kw),), embedding_dim=4, max_lens=lens)


def _ids(b=16, vocab=(5, 7, 4), seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.stack([rng.integers(1, v, size=b) for v in vocab], 1), jnp.int32)


def test_students_have_own_params_and_leading_k_axis():
    model = _small_model(k=3)
    v = model.init(jax.random.PRNGKey(0), _ids(), False)
    kern = v["params"]["group0_mlp"]["Dense_0"]["kernel"]
    assert kern.shape == (3, 12, 8)
    assert not np.allclose(kern[0], kern[1]) and not np.allclose(kern[1], kern[2])
    assert v["batch_stats"]["group0_mlp"]["BatchNorm_0"]["mean"].shape == (3, 8)


def test_students_have_own_batchnorm_statistics():
    model = _small_model(k=3)
    ids = _ids()
    v = model.init(jax.random.PRNGKey(0), ids, False)
    _, upd = model.apply(v, ids, True, None, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(1)})
    m = np.asarray(upd["batch_stats"]["group0_mlp"]["BatchNorm_0"]["mean"])
    assert not np.allclose(m[0], m[1])  # different weights → different batch statistics per student
    # Each student's running mean = 0.1 × its own batch mean of pre-BN activations.
    p = v["params"]
    emb = FeatureEmbedding((5, 7, 4), 4).apply({"params": p["embedding"]}, ids).reshape(16, -1)
    for k in range(3):
        h = emb @ p["group0_mlp"]["Dense_0"]["kernel"][k] + p["group0_mlp"]["Dense_0"]["bias"][k]
        np.testing.assert_allclose(m[k], 0.1 * np.asarray(h).mean(0), rtol=1e-5, atol=1e-7)


def test_students_draw_independent_dropout_masks():
    model = _small_model(k=4, dropout=0.5)
    ids = _ids()
    v = model.init(jax.random.PRNGKey(0), ids, False)
    # Give every student the same parameters: any difference in output comes from dropout alone.
    same = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), v["params"]["group0_mlp"])
    params = {**v["params"], "group0_mlp": same}
    var = {"params": params, "batch_stats": v["batch_stats"]}
    eval_out = model.apply(var, ids, False, None)
    np.testing.assert_allclose(eval_out[0], eval_out[3], rtol=1e-6)
    train_out, _ = model.apply(var, ids, True, None, rngs={"dropout": jax.random.PRNGKey(3)}, mutable=["batch_stats"])
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.allclose(train_out[a], train_out[b]), (a, b)


def test_vmapped_group_equals_separate_students():
    model = _small_model(k=3, dropout=0.1)
    ids = _ids()
    v = model.init(jax.random.PRNGKey(0), ids, False)
    v = jax.tree.map(lambda x: x, v)
    # Non-trivial running statistics so eval mode exercises them.
    bs = jax.tree.map(lambda x: x + 0.3 * jnp.arange(x.size).reshape(x.shape) / x.size, v["batch_stats"])
    logits = model.apply({"params": v["params"], "batch_stats": bs}, ids, False, None)
    emb = FeatureEmbedding((5, 7, 4), 4).apply({"params": v["params"]["embedding"]}, ids)
    single = MLPStudent(hidden_units=(8, 6), dropout=0.1)
    for k in range(3):
        pk = jax.tree.map(lambda x: x[k], v["params"]["group0_mlp"])
        sk = jax.tree.map(lambda x: x[k], bs["group0_mlp"])
        np.testing.assert_allclose(single.apply({"params": pk, "batch_stats": sk}, emb, False), logits[k], rtol=1e-5, atol=1e-6)


def test_xavier_normal_is_untruncated_with_reference_std():
    model = KDEFModel(vocab_sizes=(50,) * 20, groups=(StudentGroup("mlp", 2, (("batch_norm", True), ("dropout", 0.0), ("hidden_units", (400,)))),), embedding_dim=16)
    v = model.init(jax.random.PRNGKey(0), jnp.ones((2, 20), jnp.int32), False)
    w = np.asarray(v["params"]["group0_mlp"]["Dense_0"]["kernel"]).ravel()
    std = np.sqrt(2.0 / (320 + 400))
    assert abs(w.std() / std - 1) < 0.01
    assert np.abs(w).max() > 3 * std  # a truncated normal (JAX glorot_normal) stops at 2 std
    assert np.all(np.asarray(v["params"]["group0_mlp"]["Dense_0"]["bias"]) == 0)
    table = np.asarray(v["params"]["embedding"]["table"])
    rows = np.delete(table, field_offsets((50,) * 20), axis=0)
    assert abs(rows.std() / 1e-4 - 1) < 0.02


def test_pad_rows_are_zero_and_get_no_gradient():
    vocab, lens = (5, 7, 4), (1, 3, 1)
    emb = FeatureEmbedding(vocab, 4, lens)
    ids = jnp.asarray([[1, 2, 0, 0, 3], [4, 6, 5, 0, 1], [0, 0, 0, 0, 0]], jnp.int32)
    v = emb.init(jax.random.PRNGKey(0), ids)
    table = v["params"]["table"]
    pads = field_offsets(vocab)
    assert np.all(np.asarray(table)[pads] == 0)

    def f(t):
        return jnp.sum(jnp.sin(emb.apply({"params": {"table": t}}, ids) * 100.0))

    g = np.asarray(jax.grad(f)(table + 1.0))  # PAD rows non-zero here: the mask alone must stop them
    assert np.all(g[pads] == 0)
    assert np.any(g[np.setdiff1d(np.arange(table.shape[0]), pads)] != 0)


def test_an_id_outside_its_field_reads_that_fields_oov_row_not_a_neighbours():
    """Field offsets 0, 5, 12 (V = 5, 7, 4; OOV = V − 1): id 5 in field 0 would be field 1's PAD row,
    id −1 in field 1 field 0's OOV row; both read their own field's OOV row instead."""
    from kdef_jax.models.embedding import table_rows

    vocab, lens = (5, 7, 4), (1, 3, 1)
    ids = jnp.asarray([[5, -1, 2, 9, 4], [1, 6, 1, 0, 3]], jnp.int32)
    np.testing.assert_array_equal(np.asarray(table_rows(ids, vocab, lens)),
                                  [[0 + 4, 5 + 6, 5 + 2, 5 + 6, 12 + 3], [0 + 1, 5 + 6, 5 + 1, 5 + 0, 12 + 3]])
    emb = FeatureEmbedding(vocab, 4, lens)
    v = emb.init(jax.random.PRNGKey(0), ids)
    t = np.asarray(v["params"]["table"])
    out = np.asarray(emb.apply(v, ids))
    np.testing.assert_array_equal(out[0, 0], t[4])  # field 0's OOV
    np.testing.assert_allclose(out[0, 1], (t[11] + t[7] + t[11]) / 3, rtol=1e-6)  # −1 and 9 → field 1's OOV


def test_sequence_field_is_masked_mean_pooled():
    vocab, lens = (5, 7), (1, 3)
    emb = FeatureEmbedding(vocab, 2, lens)
    ids = jnp.asarray([[1, 2, 3, 0], [2, 0, 0, 0]], jnp.int32)
    v = emb.init(jax.random.PRNGKey(0), ids)
    t = np.asarray(v["params"]["table"])
    out = np.asarray(emb.apply(v, ids))
    assert out.shape == (2, 2, 2)
    np.testing.assert_allclose(out[0, 1], (t[5 + 2] + t[5 + 3]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[1, 1], np.zeros(2), atol=0)  # all-PAD sequence → 0
    np.testing.assert_allclose(out[1, 0], t[2], rtol=1e-6)


def test_masked_batchnorm_ignores_padding_rows_and_uses_unbiased_running_var():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    mask = np.array([1] * 7 + [0] * 3, np.float32)
    x_pad = x.copy()
    x_pad[7:] = 1e6  # garbage in the padded rows
    bn = BatchNorm()
    v = bn.init(jax.random.PRNGKey(0), x, False)
    y_pad, st_pad = bn.apply(v, jnp.asarray(x_pad), True, jnp.asarray(mask), mutable=["batch_stats"])
    y_ref, st_ref = bn.apply(v, jnp.asarray(x[:7]), True, None, mutable=["batch_stats"])
    np.testing.assert_allclose(y_pad[:7], y_ref, rtol=1e-5, atol=1e-5)
    for k in ("mean", "var"):
        np.testing.assert_allclose(st_pad["batch_stats"][k], st_ref["batch_stats"][k], rtol=1e-5)
    # torch: running_var = 0.9 * 1 + 0.1 * unbiased batch variance
    np.testing.assert_allclose(st_ref["batch_stats"]["var"], 0.9 + 0.1 * x[:7].var(0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(st_ref["batch_stats"]["mean"], 0.1 * x[:7].mean(0), rtol=1e-5, atol=1e-7)
    # normalisation uses the biased batch variance, eps 1e-5
    expect = (x[:7] - x[:7].mean(0)) / np.sqrt(x[:7].var(0) + 1e-5)
    np.testing.assert_allclose(y_ref, expect, rtol=1e-4, atol=1e-5)


def test_groups_from_config_and_bad_counts():
    m = ml_collections.ConfigDict(
        {"students": "", "student": "mlp", "num_students": 4, "hidden_units": (8,), "dropout": 0.0, "batch_norm": True,
         "dropout_rng": "hash"}
    )
    (g,) = groups_from_config(m)
    assert (g.kind, g.count) == ("mlp", 4)
    m.num_students = 0
    with pytest.raises(ValueError, match="need 1 to 2\*\*31 - 1 students per group"):
        groups_from_config(m)
    m.students = "nosuch:2"
    with pytest.raises(ValueError, match="unknown student kind 'nosuch'"):
        groups_from_config(m)


def test_model_batch_norm_false_switches_off_every_students_batchnorm_ecns_too():
    from kdef_jax.config import use_kdef_latest

    c = base_config()
    use_kdef_latest(c)

    def bn(m):
        return {g.kind: dict(g.kwargs)["batch_norm"] for g in groups_from_config(m)}

    assert bn(c.model) == {"ipnn": True, "final": True, "ecn": True}
    c.model.ecn.batch_norm = False  # the original ECN's default, the others keep theirs
    assert bn(c.model) == {"ipnn": True, "final": True, "ecn": False}
    c.model.ecn.batch_norm, c.model.batch_norm = True, False  # the master switch
    assert bn(c.model) == {"ipnn": False, "final": False, "ecn": False}


def test_student_names_are_unique_in_logit_order():
    from kdef_jax.report import student_names

    def names(spec):
        return student_names([StudentGroup(k, int(n), ()) for k, n in (p.split(":") for p in spec.split(","))])

    assert names("mlp:3") == ["mlp_0", "mlp_1", "mlp_2"]
    assert names("mlp:1") == ["mlp"]
    assert names("ipnn:1,final:1,ecn:1") == ["ipnn", "final", "ecn"]
    assert names("mlp:2,ecn:1,mlp:2") == ["mlp_0", "mlp_1", "ecn", "mlp_2", "mlp_3"]  # a kind named twice
    assert names("ecn:1,mlp:1,ecn:1") == ["ecn_0", "mlp", "ecn_1"]


def test_hash_dropout_mask_statistics():
    from kdef_jax.models.layers import hash_keep_mask

    n = 1_000_000
    a = np.asarray(hash_keep_mask(jax.random.PRNGKey(0), (n,), 0.9))
    b = np.asarray(hash_keep_mask(jax.random.PRNGKey(1), (n,), 0.9))
    sd = np.sqrt(0.9 * 0.1 / n)
    assert abs(a.mean() - 0.9) < 5 * sd and abs(b.mean() - 0.9) < 5 * sd
    # independent masks: P(both kept) = 0.81; neighbours within one mask are independent too
    assert abs((a & b).mean() - 0.81) < 5 * np.sqrt(0.81 * 0.19 / n)
    assert abs((a[1:] & a[:-1]).mean() - 0.81) < 5 * np.sqrt(0.81 * 0.19 / n)
    np.testing.assert_array_equal(a, np.asarray(hash_keep_mask(jax.random.PRNGKey(0), (n,), 0.9)))
    assert np.asarray(hash_keep_mask(jax.random.PRNGKey(0), (1000,), 1.0)).all()


@pytest.mark.parametrize("rng", ["hash", "jax"])
def test_dropout_is_inverted_and_identity_at_eval(rng):
    from kdef_jax.models.layers import Dropout

    x = jnp.ones((400, 500))
    d = Dropout(0.1, rng)
    y = np.asarray(d.apply({}, x, False, rngs={"dropout": jax.random.PRNGKey(0)}))
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.9], rtol=1e-6)
    assert abs((y == 0).mean() - 0.1) < 0.005
    np.testing.assert_array_equal(np.asarray(d.apply({}, x, True)), np.asarray(x))
    # the fused ReLU path every MLP tower takes: max(x, 0) kept with 1/(1−p), the same masks
    xr = x.at[:, ::2].set(-1.0)
    yr = np.asarray(d.apply({}, xr, False, True, rngs={"dropout": jax.random.PRNGKey(0)}))
    np.testing.assert_allclose(yr, np.where(np.asarray(xr) > 0, y, 0.0), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(d.apply({}, xr, True, True)), np.maximum(np.asarray(xr), 0))


def test_bfloat16_dropout_scales_by_the_float32_factor_then_rounds():
    """1/0.9 in bf16 is 1.109375 (0.16% low); a kept bf16 value x must be round_bf16(x · 1.1111…), forward
    and backward. Over the 128 bf16 values in [1, 2) the two differ on some, so this tells them apart."""
    from kdef_jax.models.layers import Dropout

    x = jnp.tile((1.0 + jnp.arange(128) / 128.0).astype(jnp.bfloat16), (64, 1))
    exact = np.asarray((x.astype(jnp.float32) * (1.0 / 0.9)).astype(jnp.bfloat16).astype(jnp.float32))
    rounded_factor = np.asarray((x * jnp.asarray(1.0 / 0.9, jnp.bfloat16)).astype(jnp.float32))
    assert (exact != rounded_factor).any()
    for relu in (False, True):
        f = lambda x: Dropout(0.1).apply({}, x, False, relu, rngs={"dropout": jax.random.PRNGKey(0)})  # noqa: E731
        y, vjp = jax.vjp(f, x)
        y = np.asarray(y.astype(jnp.float32))
        kept = y != 0
        assert 0.85 < kept.mean() < 0.95
        np.testing.assert_array_equal(y[kept], exact[kept])
        (dx,) = vjp(x)
        np.testing.assert_array_equal(np.asarray(dx.astype(jnp.float32)), y)  # dy = x: dx = y


def test_group_impls_share_variables_and_agree():
    """group_impl vmap (batched) and unrolled (per student) are one module with one set of variables."""
    ids = _ids()
    mv = _small_model(k=3, dropout=0.0).clone(group_impl="vmap")
    mu = mv.clone(group_impl="unrolled")
    v = mv.init(jax.random.PRNGKey(0), ids, False)
    vu = mu.init(jax.random.PRNGKey(0), ids, False)
    assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(vu)
    for a, b in zip(jax.tree_util.tree_leaves(v), jax.tree_util.tree_leaves(vu)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(mv.apply(v, ids, False, None), mu.apply(v, ids, False, None), rtol=1e-5, atol=1e-6)
    mask = jnp.asarray([1.0] * 12 + [0.0] * 4)
    (zv, sv), (zu, su) = (
        m.apply(v, ids, True, mask, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(1)}) for m in (mv, mu)
    )
    np.testing.assert_allclose(zv, zu, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(sv), jax.tree_util.tree_leaves(su)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("impl", ["vmap", "unrolled"])
def test_each_impl_draws_independent_dropout_per_student(impl):
    model = _small_model(k=3, dropout=0.5).clone(group_impl=impl)
    ids = _ids()
    v = model.init(jax.random.PRNGKey(0), ids, False)
    same = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), v["params"]["group0_mlp"])
    var = {"params": {**v["params"], "group0_mlp": same}, "batch_stats": v["batch_stats"]}
    z, _ = model.apply(var, ids, True, None, rngs={"dropout": jax.random.PRNGKey(3)}, mutable=["batch_stats"])
    assert not np.allclose(z[0], z[1]) and not np.allclose(z[1], z[2])


def test_students_spec_without_count_means_one_copy():
    """model.students is "kind:count, ..."; a bare kind is one student."""
    from kdef_jax.models.ensemble import groups_from_config

    c = base_config()
    c.model.students = "mlp, ecn:2,ipnn"
    assert [(g.kind, g.count) for g in groups_from_config(c.model)] == [("mlp", 1), ("ecn", 2), ("ipnn", 1)]


def _fmix32_py(h):
    m = 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)


def test_fmix32_is_murmurhash3s_finaliser_hand_values():
    """MurmurHash3 fmix32(1) = 0x514E28B7 (published value); 0 is its fixed point."""
    from kdef_jax.models.layers import _fmix32

    xs = [0, 1, 2, 0x80000000, 0xFFFFFFFF, 123456789]
    want = [0x0, 0x514E28B7, 0x30F4C306, 0x6D3C65A0, 0x81F16F39, 0xBA60D89A]
    assert [int(v) for v in np.asarray(_fmix32(jnp.asarray(xs, jnp.uint32)))] == want
    assert [_fmix32_py(x) for x in xs] == want


def test_hash_keep_mask_follows_the_documented_formula():
    """The mask bit by bit: keep[i] iff fmix32(fmix32(i + s0) ^ s1) < keep_prob·2³², with
    (s0, s1) = jax.random.bits(key, (2,), uint32)."""
    from kdef_jax.models.layers import hash_keep_mask

    key = jax.random.PRNGKey(7)
    s0, s1 = (int(s) for s in np.asarray(jax.random.bits(key, (2,), jnp.uint32)))
    got = np.asarray(hash_keep_mask(key, (4, 16), 0.5)).ravel()
    want = [_fmix32_py(_fmix32_py((i + s0) & 0xFFFFFFFF) ^ s1) < 2**31 for i in range(64)]
    assert got.tolist() == want


def test_embedding_init_is_an_untruncated_gaussian_not_only_the_right_std():
    """Rows ~ N(0, 1e-4²): beyond the std (test_models checks it), the tails of a normal. Kills a uniform
    init of the same std (no value beyond 1.73σ) and a truncated normal (none beyond 2σ)."""
    vocab = (2001,) * 8
    t = np.asarray(FeatureEmbedding(vocab, 16).init(jax.random.PRNGKey(0), jnp.ones((2, 8), jnp.int32))["params"]["table"])
    z = np.delete(t, field_offsets(vocab), axis=0).ravel() / 1e-4  # 256,000 values, N(0, 1) if right
    n = z.size
    p2 = 0.0455003  # P(|N(0,1)| > 2)
    assert abs((np.abs(z) > 2).mean() - p2) < 5 * np.sqrt(p2 * (1 - p2) / n)
    assert abs(np.mean(z**4) / np.mean(z**2) ** 2 - 3.0) < 0.1  # kurtosis 3 (se ≈ 0.01); uniform 1.8


def test_extra_table_rows_are_zero_and_the_used_rows_are_the_unpadded_init():
    """num_rows > Σ V_f (a table split by rows over devices) appends rows that are exactly 0 and leaves the
    real rows as the unpadded init draws them. Kills drawing the extra rows from the same normal."""
    vocab = (5, 7, 4)
    ids = jnp.asarray([[1, 2, 3]], jnp.int32)
    plain = np.asarray(FeatureEmbedding(vocab, 4).init(jax.random.PRNGKey(0), ids)["params"]["table"])
    padded = np.asarray(FeatureEmbedding(vocab, 4, num_rows=20).init(jax.random.PRNGKey(0), ids)["params"]["table"])
    assert plain.shape == (16, 4) and padded.shape == (20, 4)
    np.testing.assert_array_equal(padded[16:], 0.0)
    np.testing.assert_array_equal(padded[:16], plain)


def test_batchnorm_epsilon_is_torchs_1e5_on_a_small_variance_input():
    """x = ±1e-3: batch mean 0, biased variance 1e-6, so y = ±1e-3/√(1e-6 + 1e-5) = ±0.3015113 (eps 1e-6 would give
    ±0.7071068, 1e-4 ±0.0995037). Eval with running var 0.9 + 0.1·2e-6 and mean 0: ±1e-3/√(0.9000002 + 1e-5)."""
    x = jnp.asarray([[-1e-3, 1e-3], [1e-3, -1e-3]], jnp.float32)
    bn = BatchNorm()
    v = bn.init(jax.random.PRNGKey(0), x, False)
    y, st = bn.apply(v, x, True, None, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(y), [[-0.3015113, 0.3015113], [0.3015113, -0.3015113]], rtol=1e-4)
    ye = bn.apply({**v, **st}, x, False)
    np.testing.assert_allclose(np.asarray(ye), np.asarray(x) / np.sqrt(0.9 + 0.1 * 2e-6 + 1e-5), rtol=1e-5)
    # ECN's one-channel BN: the same numbers, statistics over every position
    sb = BatchNorm(scalar=True)
    ys, _ = sb.apply(sb.init(jax.random.PRNGKey(0), x, False), x, True, None, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(ys), np.asarray(y), rtol=1e-4)


def test_shared_model_keys_reach_every_kind_that_has_them():
    """model.hidden_units / batch_norm / dropout_rng reach every student class with such a field (the mlp kind
    through its own builder too): model.dropout_rng="jax" must not leave the other kinds on the hash masks,
    model.batch_norm=False must switch off the MLP's BN."""
    import dataclasses

    c = base_config()
    c.model.hidden_units, c.model.dropout_rng, c.model.batch_norm = (8, 6), "jax", False
    for kind, (cls, build) in STUDENTS.items():
        kw, fields = build(c.model), {f.name for f in dataclasses.fields(cls)}
        for key, want in (("hidden_units", (8, 6)), ("dropout_rng", "jax"), ("batch_norm", False)):
            if key in fields:
                assert kw.get(key) == want, (kind, key, kw.get(key))


@pytest.mark.parametrize("kind", sorted(STUDENTS))
def test_every_linear_and_conv_is_xavier_normal_with_zero_bias(kind):
    """Spec §2: every nn.Linear / Conv1d weight ~ untruncated N(0, 2/(fan_in + fan_out)), bias 0 (DCN's b_l 0 too),
    in every student — not only the MLP's first layer (test_models). Kernels of ≥ 500 values are checked one by
    one (5 σ of the std estimate), all kernels pooled for the std and the normal's tail P(|z| > 2)."""
    cls, build = get_student(kind)
    c = base_config()
    c.model.hidden_units = (1024,)
    c.model.cin.cin_layers = c.model.xdeepfm.cin_layers = (16, 16)
    params = cls(**build(c.model)).init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8)))["params"]
    zs, norm_words = [], ("batchnorm", "batch_norm", "bn_", "ln_", "layer_norm")
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [p.key for p in path]
        x = np.asarray(leaf, np.float64)
        if any(w in k.lower() for k in keys[:-1] for w in norm_words):
            continue  # BN/LN γ, β
        if keys[-1] == "kernel":
            fan_in, fan_out = x.shape
            z = x.ravel() / np.sqrt(2.0 / (fan_in + fan_out))
            if z.size >= 500:
                assert abs(z.std() - 1) < 5 / np.sqrt(2 * z.size), (keys, z.std())
            zs.append(z)
        elif keys[-1] in ("bias", "b"):
            assert np.all(x == 0), keys
    z = np.concatenate(zs)
    assert abs(z.std() - 1) < 5 / np.sqrt(2 * z.size)
    p2 = 0.0455003
    assert abs((np.abs(z) > 2).mean() - p2) < 5 * np.sqrt(p2 * (1 - p2) / z.size)


# Cases mutation testing of embedding.py found unpinned (2026-12-07).


def test_init_std_is_the_configured_std_not_only_the_default():
    """Rows ~ N(0, init_std²) for a non-default std too (0.3: the value the lazy-Adam tests use)."""
    vocab = (2001, 2001)
    t = np.asarray(FeatureEmbedding(vocab, 8, init_std=0.3).init(jax.random.PRNGKey(0), jnp.ones((1, 2), jnp.int32))
                   ["params"]["table"])
    z = np.delete(t, field_offsets(vocab), axis=0)
    assert abs(z.std() - 0.3) < 0.005  # 32,000 values: se ≈ 0.0012


def test_num_rows_equal_to_the_feature_maps_rows_is_accepted_fewer_rejected():
    """train.py sets embedding_rows = Σ V_f when that already splits over the mesh."""
    vocab, ids = (5, 7, 4), jnp.asarray([[1, 2, 3]], jnp.int32)
    t = FeatureEmbedding(vocab, 4, num_rows=16).init(jax.random.PRNGKey(0), ids)["params"]["table"]
    assert t.shape == (16, 4)
    with pytest.raises(ValueError, match="15 < the feature map's 16 rows"):
        FeatureEmbedding(vocab, 4, num_rows=15).init(jax.random.PRNGKey(0), ids)


def test_ids_with_the_wrong_number_of_columns_are_rejected():
    """One column for three fields would broadcast silently against the per-column offsets."""
    emb = FeatureEmbedding((5, 7, 4), 4)
    v = emb.init(jax.random.PRNGKey(0), jnp.asarray([[1, 2, 3]], jnp.int32))
    for bad in ([[1], [2]], [[1, 2, 3, 1]]):
        with pytest.raises(ValueError, match="the feature map needs 3"):
            emb.apply(v, jnp.asarray(bad, jnp.int32))


def test_pooling_divides_by_the_exact_count_and_fields_after_a_sequence_read_their_own_column():
    """e_f = Σ_t E[x_t] / (#non-PAD + 1e-12): with 1 or 2 non-PAD ids the float32 result is exactly
    sum/count; the categorical field after a sequence field reads column 4, not column 2."""
    vocab, lens = (5, 7, 4), (1, 3, 1)
    off = field_offsets(vocab)
    emb = FeatureEmbedding(vocab, 4, lens)
    ids = jnp.asarray([[1, 2, 3, 0, 3], [4, 0, 6, 0, 1], [2, 0, 0, 0, 2]], jnp.int32)
    v = emb.init(jax.random.PRNGKey(0), ids)
    t = np.asarray(v["params"]["table"])
    out = np.asarray(emb.apply(v, ids))
    assert out.shape == (3, 3, 4)
    np.testing.assert_array_equal(out[0, 1], (t[off[1] + 2] + t[off[1] + 3]) / np.float32(2))
    np.testing.assert_array_equal(out[1, 1], t[off[1] + 6])
    np.testing.assert_array_equal(out[2, 1], 0.0)
    np.testing.assert_array_equal(out[:, 2], t[off[2] + np.array([3, 1, 2])])
    np.testing.assert_array_equal(out[:, 0], t[off[0] + np.array([1, 4, 2])])
