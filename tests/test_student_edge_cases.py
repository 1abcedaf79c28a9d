"""Students' edge cases: BatchNorm/Dropout limits, every kind's parameter count by hand, each kind reading
its own config section (cases mutation testing of layers.py, the students and registry.py found
unpinned, 2026-12-07: 127 mutants, 104 killed by the older tests, 4 equivalent, 19 by these).

Hand-computed / NumPy-reference values on tiny shapes. Each test names the mutants it kills.
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kdef_jax.config import base_config
from kdef_jax.models.layers import BatchNorm, Dropout
from kdef_jax.models.registry import STUDENTS, get_student
from kdef_jax.steps import count_params

KEY = jax.random.PRNGKey(0)


# ----------------------------------------------------------------------------- BatchNorm / Dropout edge cases
@pytest.mark.parametrize("scalar", [False, True])
def test_batchnorm_statistics_are_exact_for_a_large_mean(scalar):
    """x ≈ 1000 + 0.01·N(0, 1): batch variance ~1e-4 against E[x²] ~ 1e6. The shifted one-pass form (shift by a data
    point) keeps it exact; the raw E[x²] − E[x]² in float32 loses it to a float32 ulp of 1e6 (0.06). The output
    y = x·a + (β − μ·a), a = γ/√(σ²+ε) ≈ 100, is torch's CPU form and rounds at |x·a| ≈ 1e5 (ulp 0.008), hence
    atol 1e-2 on y; the running statistics are checked tightly. Kills: no shift (shift = 0)."""
    rng = np.random.default_rng(0)
    x = (1000.0 + 0.01 * rng.normal(size=(64, 3))).astype(np.float32)
    bn = BatchNorm(scalar=scalar)
    v = bn.init(KEY, jnp.asarray(x), False)
    y, st = bn.apply(v, jnp.asarray(x), True, None, mutable=["batch_stats"])
    xd = x.astype(np.float64)
    axis = None if scalar else 0
    want = (xd - xd.mean(axis)) / np.sqrt(xd.var(axis) + 1e-5)
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-2)
    new_var = np.asarray(st["batch_stats"]["var"], np.float64)
    np.testing.assert_allclose((new_var - 0.9) / 0.1, xd.var(axis, ddof=1), rtol=3e-2)
    np.testing.assert_allclose(np.asarray(st["batch_stats"]["mean"]), 0.1 * xd.mean(axis), rtol=1e-5)


def test_batchnorm_init_in_train_mode_leaves_the_running_statistics_at_0_and_1():
    """Initialisation is not a training step: init(train=True) gives running mean 0 and var 1 (torch's fresh
    BatchNorm1d; flax's own BatchNorm does the same). Kills: updating the statistics during init."""
    x = jnp.asarray(np.random.default_rng(1).normal(3.0, 2.0, size=(8, 3)), jnp.float32)
    for scalar in (False, True):
        v = BatchNorm(scalar=scalar).init(KEY, x, True)
        np.testing.assert_array_equal(np.asarray(v["batch_stats"]["mean"]), 0.0)
        np.testing.assert_array_equal(np.asarray(v["batch_stats"]["var"]), 1.0)


def test_batchnorm_with_one_real_row_or_none_stays_finite():
    """Masked BN with one real row: batch var 0, unbiased n/(n−1) clamped (n−1 ≥ 1) → running var 0.9·1 + 0.1·0,
    running mean 0.1·x₀, y₀ = β = 0. With no real row at all (n clamped to 1) every output is finite and the
    running statistics stay as they were (a batch of padding alone is no data).
    Kills: dropping max(n−1, 1) (0·1/0 = NaN) and dropping max(count, 1) (0/0)."""
    x = jnp.asarray([[1.0, -2.0], [5.0, 7.0], [9.0, 9.0]], jnp.float32)
    bn = BatchNorm()
    v = bn.init(KEY, x, False)
    y, st = bn.apply(v, x, True, jnp.asarray([1.0, 0.0, 0.0]), mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(st["batch_stats"]["var"]), [0.9, 0.9], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(st["batch_stats"]["mean"]), [0.1, -0.2], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(y)[0], [0.0, 0.0], atol=1e-6)
    y0, st0 = bn.apply(v, x, True, jnp.zeros(3), mutable=["batch_stats"])
    assert np.all(np.isfinite(np.asarray(y0)))
    np.testing.assert_array_equal(np.asarray(st0["batch_stats"]["mean"]), 0.0)
    np.testing.assert_array_equal(np.asarray(st0["batch_stats"]["var"]), 1.0)


def test_dropout_rate_0_is_the_identity_in_train_mode_without_a_dropout_key():
    """Dropout(0.0) in train mode: x unchanged (ReLU path: max(x, 0)); it draws no key, so none is needed.
    Kills: removing the ``rate == 0`` short cut (make_rng fails; the mask would drop with probability 2⁻³²)."""
    x = jnp.asarray([[-1.5, 2.0, 0.25]], jnp.float32)
    np.testing.assert_array_equal(np.asarray(Dropout(0.0).apply({}, x, False)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(Dropout(0.0).apply({}, x, False, True)), [[0.0, 2.0, 0.25]])


# ----------------------------------------------------------------------------- FINAL
def test_final_linear_odd_width_error_names_the_rule():
    """Kills: dropping FinalLinear's own check (jnp.split's "equal division" error names no width)."""
    from kdef_jax.models.students.final import FinalLinear

    with pytest.raises(ValueError, match="FINAL hidden widths must be even, got 7"):
        FinalLinear(7).init(KEY, jnp.ones((2, 4)))


def test_final_field_gate_xavier_init_is_untruncated():
    """gate_init="xavier": W_g ~ untruncated N(0, 2/(F+F)) = N(0, 1/F), b_g = 0 (torch xavier_normal_ on the gate's
    nn.Linear). F = 128: 16,384 weights, ~200 beyond 2.5σ. Kills: flax's default lecun_normal (a truncated normal,
    nothing beyond 2.27σ, with the same std since fan_in = fan_out) for the gate."""
    cls, _ = get_student("final")
    f = 128
    p = cls(hidden_units=(4,), dropout=0.0).init(KEY, jnp.zeros((2, f, 2)))["params"]["block1"]["field_gate"]["linear"]
    z = np.asarray(p["kernel"], np.float64).ravel() * np.sqrt(f)
    assert abs(z.std() - 1) < 0.03
    assert np.abs(z).max() > 2.5
    np.testing.assert_array_equal(np.asarray(p["bias"]), 0.0)


# ----------------------------------------------------------------------------- parameter counts of every kind
# F = 4 fields, d = 4 (D = 16), hidden (8, 6); per-kind settings below. By hand from the reference (spec §2):
#   MLP on n inputs: n·8+8 + 8·6+6 + BN 2·(8+6) + 6+1 = 8n + 97.
#   crossnet (2 layers): 2·(16·16+16) + fc 17 = 561             (CrossNetV2 layers are nn.Linear(D, D): with bias)
#   cin (3, 2): conv 16·3+3 + 12·2+2 + fc (3+2)+1 = 83
#   xdeepfm: lr 17 + cin 83 + MLP(16) 225 = 325;  widedeep = deepfm = 17 + 225 = 242
#   autoint (2 layers, A=6, 2 heads, LN): 3·4·6 + W_res 4·6 + LN 12 = 108; 3·6·6 + LN 12 = 120; fc 4·6+1 = 25;
#     MLP 225 → 478
#   afn (N=3): W 4·3 + BN_log 2·4 + BN_exp 2·3 + MLP(3·4) 193 + MLP(16) 225 + fc 2+1 = 447
#   dcn (2): 2·(16 + 16) + tower 218 + fc 16+6+1 = 305;  dcnv2 (2): 2·272 + 218 + 23 = 785
#   ipnn: MLP(16 + 6) = 273;  final (gate): 4·4+4 + 32·8+8 + 16 + 8·6+6 + 12 + 7 = 373
#   ecn (2): 2·(16·8 + 16 + LN 2·8 + BN 2) + fc 17 = 341;  mlp: 225
COUNTS = {"mlp": 225, "crossnet": 561, "cin": 83, "xdeepfm": 325, "widedeep": 242, "deepfm": 242, "autoint": 478,
          "afn": 447, "dcn": 305, "dcnv2": 785, "ipnn": 273, "final": 373, "ecn": 341}


def _tiny_model_config():
    c = base_config()
    m = c.model
    m.hidden_units = (8, 6)
    for k in ("ecn", "crossnet", "dcnv2", "dcn"):
        m[k].num_cross_layers = 2
    m.cin.cin_layers = m.xdeepfm.cin_layers = (3, 2)
    m.autoint.attention_layers, m.autoint.num_heads, m.autoint.attention_dim, m.autoint.layer_norm = 2, 2, 6, True
    m.afn.logarithmic_neurons = 3
    return m


@pytest.mark.parametrize("kind", sorted(COUNTS))
def test_every_kinds_parameter_count_by_hand(kind):
    """Kills: a bias dropped from an output Linear (AutoInt's fc, AFN's Linear(2, 1), CIN's fc, the LR part) or from
    CrossNetV2's W_l — the NumPy references use a bias only where the params have one, so they cannot."""
    assert set(COUNTS) == set(STUDENTS)
    cls, build = get_student(kind)
    shapes = jax.eval_shape(lambda: cls(**build(_tiny_model_config())).init(KEY, jnp.zeros((2, 4, 4))))
    assert count_params({"s": shapes["params"]})["s"] == COUNTS[kind]


def test_crossnet_v2_layer_adds_its_bias_hand_values():
    """W_l = 0, b_l = 1 in both layers: x₁ = x₀ + x₀⊙1 = 2x₀, x₂ = 2x₀ + x₀ = 3x₀; fc = ones, 0 → z = 3·Σx₀.
    Kills: CrossNetV2 without b_l (z = Σx₀)."""
    cls, _ = get_student("crossnet")
    e = jnp.asarray(np.arange(8, dtype=np.float32).reshape(1, 2, 4) / 10)
    m = cls(num_cross_layers=2)
    p = jax.tree.map(jnp.zeros_like, m.init(KEY, e)["params"])
    for i in range(2):
        p[f"cross_{i}"]["bias"] = jnp.ones(8)
    p["fc"]["kernel"] = jnp.ones((8, 1))
    np.testing.assert_allclose(np.asarray(m.apply({"params": p}, e)), [3 * 2.8], rtol=1e-6)


# ----------------------------------------------------------------------------- AutoInt flags reach the layers
def test_autoint_student_passes_use_scale_residual_and_layer_norm_to_its_attention():
    """AutoIntStudent(use_scale=False, use_residual=False, layer_norm=False), one layer, one head, no hidden layer:
    z = fc(flatten(ReLU(softmax(Q Kᵀ) V))) + Linear(flatten E), against NumPy. Kills: the student forcing
    use_scale / use_residual / layer_norm on (each changes z)."""
    from kdef_jax.models.students.autoint import AutoIntStudent

    rng = np.random.default_rng(3)
    e = rng.normal(size=(3, 3, 4)).astype(np.float32)
    m = AutoIntStudent(hidden_units=(), dropout=0.0, batch_norm=False, attention_layers=1, num_heads=1,
                       attention_dim=4, use_residual=False, use_scale=False, layer_norm=False)
    v = m.init(KEY, jnp.asarray(e))
    v = jax.tree.map(lambda x: x + 0.3 * rng.normal(size=x.shape).astype(np.float32), v)
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), v["params"])
    a = p["attention_0"]
    x = e.astype(np.float64)
    q, k, val = (x @ a[n]["kernel"] for n in ("W_q", "W_k", "W_v"))
    s = np.einsum("bqc,bkc->bqk", q, k)  # unscaled
    att = np.exp(s - s.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    o = np.maximum(att @ val, 0.0)  # no residual, no LayerNorm
    z = o.reshape(3, -1) @ p["fc"]["kernel"][:, 0] + p["fc"]["bias"][0]
    z += x.reshape(3, -1) @ p["dnn"]["Dense_0"]["kernel"][:, 0] + p["dnn"]["Dense_0"]["bias"][0]
    np.testing.assert_allclose(np.asarray(m.apply(v, jnp.asarray(e))), z, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- registry
def test_every_kind_reads_its_own_config_section():
    """A value set in model.<kind> reaches that kind and no other (dcn and dcnv2, widedeep and deepfm have equal
    defaults, so only a changed value tells a kind reading its neighbour's section). Kills: a kind built from
    another kind's section."""
    sentinel = {"dropout": 0.37, "num_cross_layers": 7, "cin_layers": (5, 3), "attention_layers": 4, "num_heads": 3,
                "attention_dim": 9, "logarithmic_neurons": 11, "blocks": 2, "gate_init": "ones"}
    for kind, (_, build) in STUDENTS.items():
        if kind == "mlp":
            continue
        base = {k: build(base_config().model) for k, (_, build) in STUDENTS.items()}
        c = base_config()
        changed = [k for k in c.model[kind] if k in sentinel]
        assert changed, kind
        for k in changed:
            c.model[kind][k] = sentinel[k]
        for other, (_, b) in STUDENTS.items():
            got = b(c.model)
            if other == kind:
                assert {k: got[k] for k in changed} == {k: sentinel[k] for k in changed}, kind
            else:
                assert got == base[other], (kind, other)


def test_the_mlp_kind_reads_model_dropout():
    c = base_config()
    c.model.dropout = 0.37
    assert get_student("mlp")[1](c.model)["dropout"] == 0.37


def test_a_run_config_read_back_from_json_builds_hashable_groups_of_tuples():
    """A run's config.json comes back with lists (hidden_units, cin_layers); the builders give tuples, so a
    StudentGroup hashes (a static module attribute). Kills: the builders without ``_freeze``."""
    from kdef_jax.models.ensemble import groups_from_config

    c = base_config()
    c.model.students = ",".join(f"{k}:1" for k in sorted(STUDENTS))
    m = ml_collections.ConfigDict(json.loads(c.to_json())).model
    assert isinstance(m.hidden_units, list) and isinstance(m.cin.cin_layers, list)
    groups = groups_from_config(m)
    hash(groups)
    for g in groups:
        for k, val in g.kwargs:
            assert not isinstance(val, list), (g.kind, k)
    assert dict(groups[sorted(STUDENTS).index("cin")].kwargs)["cin_layers"] == (16, 16, 16)


def test_a_key_a_kind_does_not_have_is_an_error_naming_it():
    """Kills: dropping the builder's check (an unknown per-kind key would be silently ignored / a TypeError)."""
    c = base_config()
    with c.model.cin.unlocked():
        c.model.cin.dropout = 0.2
    with pytest.raises(ValueError, match=r"model\.cin\.dropout: CINStudent has no such setting"):
        get_student("cin")[1](c.model)


def test_afn_logarithmic_layer_in_bfloat16_keeps_the_precision_of_its_logs():
    """log|e| of embeddings near their N(0, 1e-4²) init is about -9; in bf16 that is quantised to 2^-5
    (3% of its spread) before the BatchNorm that centres it. The layer's output must stay within ~1% of
    float32's (bf16 rounding of the GEMM and exp), not 3%."""
    import flax.linen as nn

    from kdef_jax.models.layers import BatchNorm, dense
    from kdef_jax.models.students.afn import log_transform

    class Log(nn.Module):
        dtype: object

        @nn.compact
        def __call__(self, e):
            w = dense(5, use_bias=False, dtype=self.dtype, name="w")
            return log_transform(e.astype(self.dtype), w, BatchNorm(name="l"), BatchNorm(name="x"), True, None)

    e = jnp.asarray(np.random.default_rng(0).normal(size=(1024, 10, 16)) * 1e-4, jnp.float32)
    v = Log(jnp.float32).init(jax.random.PRNGKey(0), e[:2])
    ref, _ = Log(jnp.float32).apply(v, e, mutable=["batch_stats"])
    got, _ = Log(jnp.bfloat16).apply(v, e, mutable=["batch_stats"])
    ref, got = np.asarray(ref, np.float64), np.asarray(got.astype(jnp.float32), np.float64)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1.5e-2
