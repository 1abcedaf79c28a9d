"""One-pass sums (kdef_jax/reductions.py) and the custom VJPs built on them (layers.scale_shift,
layers.relu_dropout, BatchNorm, steps.clip_by_global_norm): hand-computed values, and gradients equal to
plain autodiff of the textbook formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdef_jax.models.layers import BatchNorm, relu_dropout, scale_shift
from kdef_jax.reductions import column_sums, sum_of_squares, tree_norm
from kdef_jax.steps import clip_by_global_norm, clip_tree


def test_column_sums_hand_values_and_fold_sizes():
    x = jnp.asarray([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    np.testing.assert_array_equal(column_sums(x), [[16.0, 20.0]])
    np.testing.assert_array_equal(column_sums(x, x * x), [[16.0, 20.0], [84.0, 120.0]])
    np.testing.assert_array_equal(column_sums(x[:3]), [[9.0, 12.0]])  # 3 rows: no fold divides, plain sum
    np.testing.assert_array_equal(column_sums(x[:1]), [[1.0, 2.0]])


@pytest.mark.parametrize("rows", [16, 48, 1000, 10000, 97])
def test_column_sums_match_float64_sums(rows):
    rng = np.random.default_rng(rows)
    a, b = rng.normal(size=(rows, 3, 5)), rng.normal(size=(rows, 3, 5))
    got = np.asarray(column_sums(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
    np.testing.assert_allclose(got, np.stack([a.sum(0), b.sum(0)]), rtol=1e-5, atol=1e-4)


def test_column_sums_keep_trailing_axes():
    x = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(column_sums(x, keep=1), [np.arange(24.0).reshape(2, 3, 4).sum((0, 1))])
    np.testing.assert_array_equal(column_sums(x, x, keep=0), [276.0, 276.0])
    np.testing.assert_array_equal(column_sums(x, keep=2), column_sums(x))


def test_column_sums_off_cpu_are_plain_per_input_sums(monkeypatch):
    """On accelerators: one plain sum per input (no fold, no barrier, no stacked [B, n, ...] copy)."""
    import kdef_jax.reductions as reductions

    monkeypatch.setattr(reductions.jax, "default_backend", lambda: "gpu")
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(64, 4)), rng.normal(size=(64, 4))
    fa, fb = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    np.testing.assert_allclose(column_sums(fa, fb), np.stack([a.sum(0), b.sum(0)]), rtol=1e-5, atol=1e-5)
    jaxpr = jax.make_jaxpr(lambda x, y: column_sums(x, y * x))(fa, fb)
    prims = [e.primitive.name for e in jaxpr.jaxpr.eqns]
    assert prims.count("reduce_sum") == 2 and "optimization_barrier" not in prims
    for e in jaxpr.jaxpr.eqns:  # the only stacked arrays are the [n, ...] sums, never the [64, ...] inputs
        if e.primitive.name == "concatenate":
            assert e.outvars[0].aval.shape == (2, 4)
    monkeypatch.setattr(reductions.jax, "default_backend", lambda: "cpu")
    assert "optimization_barrier" in [e.primitive.name for e in jax.make_jaxpr(lambda x: column_sums(x))(fa).jaxpr.eqns]


def test_column_sums_gradient_is_a_broadcast():
    x = jnp.arange(32.0).reshape(16, 2)
    g = jax.grad(lambda x: column_sums(x * x, x)[0, 1] + 3.0 * column_sums(x * x, x)[1, 0])(x)
    want = np.zeros((16, 2))
    want[:, 1] = 2 * np.arange(32.0).reshape(16, 2)[:, 1]
    want[:, 0] = 3.0
    np.testing.assert_allclose(g, want)


def test_sum_of_squares_and_tree_norm():
    assert float(sum_of_squares(jnp.asarray([1.0, 2.0, 3.0, 4.0]))) == 30.0
    assert float(tree_norm({"a": jnp.asarray([3.0]), "b": [jnp.asarray([[4.0]])]})) == 5.0
    rng = np.random.default_rng(0)
    tree = {"t": jnp.asarray(rng.normal(size=(910, 16)), jnp.float32), "w": jnp.asarray(rng.normal(size=(7,)), jnp.float32)}
    np.testing.assert_allclose(float(tree_norm(tree)), float(optax.tree.norm(tree)), rtol=1e-6)


def test_scale_shift_hand_values_and_vjp():
    x = jnp.asarray([[1.0, 2.0], [3.0, 4.0]])
    a, c = jnp.asarray([2.0, 3.0]), jnp.asarray([1.0, 1.0])
    y, vjp = jax.vjp(scale_shift, x, a, c)
    np.testing.assert_array_equal(y, [[3.0, 7.0], [7.0, 13.0]])
    dx, da, dc = vjp(jnp.ones_like(x))
    np.testing.assert_array_equal(dx, [[2.0, 3.0], [2.0, 3.0]])
    np.testing.assert_array_equal(da, [4.0, 6.0])  # Σ_b x
    np.testing.assert_array_equal(dc, [2.0, 2.0])


@pytest.mark.parametrize("shape,param_shape", [((16, 5), (5,)), ((32, 3, 4), (4,)), ((16, 3, 4), ())])
def test_scale_shift_vjp_equals_autodiff(shape, param_shape):
    rng = np.random.default_rng(1)
    x, dy = (jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(2))
    a, c = (jnp.asarray(rng.normal(size=param_shape), jnp.float32) for _ in range(2))
    got = jax.vjp(scale_shift, x, a, c)[1](dy)
    want = jax.vjp(lambda x, a, c: x * a + c, x, a, c)[1](dy)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_relu_dropout_hand_values_and_vjp():
    x = jnp.asarray([-1.0, 2.0, 3.0, 0.5, 0.0])
    keep = jnp.asarray([True, True, False, True, True])
    y, vjp = jax.vjp(lambda x: relu_dropout(x, keep, 2.0), x)
    np.testing.assert_array_equal(y, [0.0, 4.0, 0.0, 1.0, 0.0])
    (dx,) = vjp(jnp.asarray([10.0, 1.0, 1.0, 3.0, 5.0]))
    np.testing.assert_array_equal(dx, [0.0, 2.0, 0.0, 6.0, 0.0])  # scale where kept and x > 0
    want = jax.grad(lambda x: jnp.sum(jnp.where(keep, jax.nn.relu(x) * 2.0, 0.0) * jnp.asarray([10.0, 1, 1, 3, 5])))(x)
    np.testing.assert_array_equal(dx, want)


def _textbook_bn(x, scale, bias, mask, eps=1e-5, scalar=False):
    """Two-pass batch statistics over the real rows, differentiated by plain autodiff."""
    axes = tuple(range(x.ndim)) if scalar else tuple(range(x.ndim - 1))
    w = (jnp.ones(x.shape[0]) if mask is None else mask).reshape((-1,) + (1,) * (x.ndim - 1))
    n = jnp.sum(w * jnp.ones_like(x), axes)
    mean = jnp.sum(x * w, axes) / n
    var = jnp.sum(jnp.square(x - mean) * w, axes) / n
    return (x - mean) / jnp.sqrt(var + eps) * scale + bias


@pytest.mark.parametrize("shape", [(32, 6), (16, 3, 6)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("scalar", [False, True])
def test_batchnorm_gradients_equal_textbook_autodiff(masked, scalar, shape):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=shape) * 3 + 5, jnp.float32)  # a large mean: the shifted one-pass stats
    dy = jnp.asarray(rng.normal(size=shape), jnp.float32)
    mask = jnp.asarray([1.0] * (shape[0] - 5) + [0.0] * 5) if masked else None
    bn = BatchNorm(scalar=scalar)
    v = bn.init(jax.random.PRNGKey(0), x, True, mask)
    p = {"scale": jnp.asarray(rng.uniform(0.5, 1.5, size=v["params"]["scale"].shape), jnp.float32),
         "bias": jnp.asarray(rng.normal(size=v["params"]["bias"].shape), jnp.float32)}

    def ours(x, p):
        return bn.apply({"params": p, "batch_stats": v["batch_stats"]}, x, True, mask, mutable=["batch_stats"])[0]

    def textbook(x, p):
        return _textbook_bn(x, p["scale"], p["bias"], mask, scalar=scalar)

    y, vjp = jax.vjp(ours, x, p)
    y_ref, vjp_ref = jax.vjp(textbook, x, p)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    (dx, dp), (dx_ref, dp_ref) = vjp(dy), vjp_ref(dy)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4)
    for k in ("scale", "bias"):
        np.testing.assert_allclose(dp[k], dp_ref[k], rtol=1e-4, atol=1e-4)


def test_clip_by_global_norm_is_torchs_rule_by_hand():
    """torch clip_grad_norm_: g · min(1, c/(‖g‖ + 1e-6)), the factor applied to every leaf."""
    g = {"a": jnp.asarray([3.0, 4.0]), "b": jnp.asarray([[0.0]])}  # ‖g‖ = 5
    clip = clip_by_global_norm(1.0)
    got = clip.update(g, clip.init(g))[0]
    np.testing.assert_allclose(got["a"], [3.0 / (5 + 1e-6), 4.0 / (5 + 1e-6)], rtol=1e-6)  # 0.59999988, 0.79999984
    assert float(got["b"][0, 0]) == 0.0
    # below the threshold the factor is exactly 1: the gradient passes bit for bit
    same = clip_by_global_norm(10.0).update(g, clip.init(g))[0]
    assert np.array_equal(same["a"], g["a"]) and np.array_equal(same["b"], g["b"])
    # at ‖g‖ = c torch still scales, by c/(c + 1e-6) (float32: 1 - 1 ulp); optax's (g/‖g‖)·c leaves g
    at = jnp.asarray([6.0, 8.0])
    scaled = clip_by_global_norm(10.0).update(at, ())[0]
    assert not np.array_equal(clip_tree(at, jnp.float32(10.0), 10.0), at)  # factor < 1 at ‖g‖ = c ...
    assert np.array_equal(clip_tree(at, jnp.float32(9.99), 10.0), at)  # ... and ≥ 1 just below it
    np.testing.assert_allclose(scaled, [6.0, 8.0], rtol=2e-7)
    assert not np.array_equal(scaled, at)


@pytest.mark.parametrize("max_norm", [100.0, 0.5])
def test_clip_by_global_norm_equals_optax(max_norm):
    rng = np.random.default_rng(3)
    g = {"t": jnp.asarray(rng.normal(size=(64, 16)), jnp.float32), "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
    ours, ref = clip_by_global_norm(max_norm), optax.clip_by_global_norm(max_norm)
    s, s_ref = ours.init(g), ref.init(g)
    assert jax.tree_util.tree_structure(s) == jax.tree_util.tree_structure(s_ref)
    got, want = ours.update(g, s)[0], ref.update(g, s_ref)[0]
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    if max_norm < 1:
        np.testing.assert_allclose(float(tree_norm(got)), max_norm, rtol=1e-5)


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
@pytest.mark.parametrize("rows", [4112, 4095])  # 16·257 (CPU fold path) and 4095 (no fold divides)
def test_column_sums_of_bfloat16_inputs_are_exact_float32_sums(monkeypatch, backend, rows):
    """column_sums / sum_of_squares accumulate and return float32 whatever the input dtype (bf16 compute)."""
    import kdef_jax.reductions as reductions

    monkeypatch.setattr(reductions.jax, "default_backend", lambda: backend)
    x = jnp.ones((rows, 2), jnp.bfloat16)  # neither 4112 nor 4095 is a bfloat16 number
    got = reductions.column_sums(x, 2 * x)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), [[rows, rows], [2 * rows, 2 * rows]])
    assert reductions.sum_of_squares(x).dtype == jnp.float32
    assert float(reductions.sum_of_squares(x)) == 2 * rows


# Cases mutation testing found unpinned.


def test_sum_of_squares_squares_in_float32():
    """(1 + 2⁻⁷)² is not a bfloat16 number: the square must be taken after the float32 cast."""
    from kdef_jax.reductions import sum_of_squares

    x = jnp.asarray([1 + 2**-7], jnp.bfloat16)
    assert float(sum_of_squares(x)) == (1 + 2**-7) ** 2


def test_the_cpu_fold_is_r_to_1_before_the_barrier(monkeypatch):
    """The one-pass fold sums R = 16 row blocks elementwise: what the barrier holds is [N/16, n, ...]."""
    import kdef_jax.reductions as reductions

    monkeypatch.setattr(reductions.jax, "default_backend", lambda: "cpu")
    jaxpr = jax.make_jaxpr(lambda x: reductions.column_sums(x, x))(jnp.ones((64, 3), jnp.float32))
    (barrier,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "optimization_barrier"]
    assert barrier.invars[0].aval.shape == (4, 2, 3)


@pytest.mark.parametrize("rows, r", [(10000, 16), (64, 16), (24, 8), (16, 8), (12, 4), (6, 2), (3, None), (1, None)])
def test_the_cpu_fold_is_the_largest_of_16_8_4_2_dividing_and_below_n(monkeypatch, rows, r):
    """R = 16, or the largest of 8, 4, 2 that divides N and is < N; none: a plain sum (no barrier)."""
    import kdef_jax.reductions as reductions

    monkeypatch.setattr(reductions.jax, "default_backend", lambda: "cpu")
    jaxpr = jax.make_jaxpr(lambda x: reductions.column_sums(x))(jnp.ones((rows, 3), jnp.float32))
    held = [e.invars[0].aval.shape for e in jaxpr.jaxpr.eqns if e.primitive.name == "optimization_barrier"]
    assert held == ([] if r is None else [(rows // r, 1, 3)])
