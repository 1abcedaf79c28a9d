"""Layers with the reference's (PyTorch/FuxiCTR) semantics.

* ``xavier_normal``: untruncated N(0, 2/(fan_in+fan_out)) — torch ``xavier_normal_``; JAX's
  ``glorot_normal`` is truncated, so it is not used.
* ``BatchNorm``: torch ``BatchNorm1d`` (momentum 0.1: running ← 0.9·running + 0.1·batch, eps 1e-5,
  running variance from the *unbiased* batch variance n/(n−1)·σ²_b), with an optional row mask so
  the padded rows of a last partial batch never enter the statistics. ``scalar=True`` is a one-channel
  BN whose statistics run jointly over every axis (ECN's ``BatchNorm1d(1)``).
* ``Dropout``: inverted dropout (torch semantics: zero with probability p, scale kept values by
  1/(1−p), identity at eval). Masks come from ``jax.random.bernoulli`` (``rng="jax"``) or, by
  default, from a counter-based hash (``rng="hash"``): h = fmix32(fmix32(i + s₀) ⊕ s₁) for element
  index i with two 32-bit seeds drawn from the module's ``dropout`` key, keep iff h < (1−p)·2³².
  Same distribution (Bernoulli(1−p), exact to 2⁻³²), a fresh mask per step, layer and student, but
  ~50× cheaper than threefry on CPU (a [10000, 400] mask: 0.9 vs 50 ms, Zen 4;
  benchmarks/dropout_mask.py), where threefry dominated the step.
* BatchNorm's batch statistics and its scale/shift gradients are one-pass ``column_sums``
  (kdef_jax/reductions.py), and ReLU+dropout is one op whose backward reads its mask from the output
  (``relu_dropout``): a [10000, 400] BatchNorm+ReLU+dropout fwd+bwd is 1.5-2.1× faster on CPU than plain
  autodiff of the same math (benchmarks/batchnorm_block.py; results/batchnorm_block_cpu*.json).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdef_jax.reductions import column_sums

xavier_normal = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")


def dense(features: int, use_bias: bool = True, name: str | None = None, dtype=None) -> nn.Dense:
    """``nn.Linear`` as the reference initialises it: xavier-normal weight, zero bias.

    ``dtype`` is the computation dtype (e.g. bfloat16); parameters stay float32.
    """
    return nn.Dense(
        features, use_bias=use_bias, kernel_init=xavier_normal, bias_init=nn.initializers.zeros, name=name, dtype=dtype
    )


@jax.custom_vjp
def scale_shift(x, a, c):
    """y = x·a + c, with a and c broadcast against x's trailing axes (shape (F,) or ()).

    Its VJP returns dx = dy·a and (da, dc) = (Σ dy·x, Σ dy) over the broadcast axes, both sums from
    ONE ``column_sums`` pass (autodiff would reduce each from its own materialised product).
    """
    return x * a.astype(x.dtype) + c.astype(x.dtype)


def _scale_shift_fwd(x, a, c):
    return scale_shift(x, a, c), (x, a, c)


def _scale_shift_bwd(res, dy):
    x, a, c = res
    dyf = dy.astype(jnp.float32)
    sums = column_sums(dyf * x.astype(jnp.float32), dyf, keep=a.ndim)  # [2, *a.shape], float32 even for bf16 x
    return (dy * a.astype(dy.dtype)).astype(x.dtype), sums[0].astype(a.dtype), sums[1].astype(c.dtype)


scale_shift.defvjp(_scale_shift_fwd, _scale_shift_bwd)


class BatchNorm(nn.Module):
    momentum: float = 0.1
    epsilon: float = 1e-5
    scalar: bool = False

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        shape = () if self.scalar else (x.shape[-1],)
        # float32 like every other parameter (flax's param_dtype), also under jax_enable_x64: a run's
        # checkpoint restores with x64 on or off
        scale = self.param("scale", nn.initializers.ones, shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, shape, jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), shape)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), shape)
        axes = tuple(range(x.ndim)) if self.scalar else tuple(range(x.ndim - 1))
        if not train:
            mean, var = ra_mean.value, ra_var.value
        else:
            # One pass over x for Σx and Σx² (``column_sums``; the two-pass form is ~3× slower), made
            # robust to a large mean by shifting with a data point first (the "shifted data"
            # algorithm): var = E[(x−c)²] − (E[x−c])², c = x[0] (not differentiated).
            xf = x.astype(jnp.float32)
            per_row = 1
            for a in axes[1:]:
                per_row *= x.shape[a]
            shift = jax.lax.stop_gradient(xf.reshape((-1,) + shape)[0])  # one data point per channel
            xs = xf - shift
            m = self.momentum
            if mask is None:
                n = jnp.float32(x.shape[0] * per_row)
                sums = column_sums(xs, jnp.square(xs), keep=len(shape))  # [2, *shape]
            else:
                w = mask.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
                real = mask.astype(jnp.float32).sum()
                n = jnp.maximum(real * per_row, 1.0)
                m = jnp.where(real > 0, m, 0.0)  # a batch of padding alone leaves the running statistics
                xw = xs * w  # padded rows must be finite (AFN zeroes its exp argument there)
                sums = column_sums(xw, xw * xs, keep=len(shape))
            m1, m2 = sums[0] / n, sums[1] / n
            var = jnp.maximum(m2 - jnp.square(m1), 0.0)
            mean = m1 + shift
            if not self.is_initializing():
                unbiased = var * n / jnp.maximum(n - 1.0, 1.0)
                ra_mean.value = (1.0 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
                ra_var.value = (1.0 - m) * ra_var.value + m * jax.lax.stop_gradient(unbiased)
        # y = x·a + (β − μ·a) with a = γ/√(σ²+ε): PyTorch's CPU kernel form; autodiff then keeps no
        # [B, F] residual of its own (x is already kept by the Dense before it). ~4% faster steps.
        a = jax.lax.rsqrt(var + self.epsilon) * scale
        return scale_shift(x, a, bias - mean * a)


def _fmix32(h):
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 with full avalanche."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def hash_keep_mask(key, shape, keep_prob: float):
    """Boolean mask, each element True with probability ``keep_prob``, from a counter hash."""
    size = 1
    for n in shape:
        size *= n
    if size >= 2**32:
        raise ValueError(f"hash dropout supports < 2^32 elements per call, got shape {shape}")
    seeds = jax.random.bits(key, (2,), jnp.uint32)
    i = jax.lax.iota(jnp.uint32, size).reshape(shape)
    h = _fmix32(_fmix32(i + seeds[0]) ^ seeds[1])
    threshold = min(int(round(keep_prob * 2.0**32)), 2**32 - 1)
    return h < jnp.uint32(threshold)


def _times(x, scale: float):
    """x · scale in x's dtype, the product formed in float32: in bfloat16 the factor 1/0.9 alone would
    round to 1.109375, 0.16% low, on every kept value."""
    if x.dtype == jnp.float32:
        return x * jnp.asarray(scale, x.dtype)
    return (x.astype(jnp.float32) * scale).astype(x.dtype)


@jax.custom_vjp
def relu_dropout(x, keep, scale):
    """y = keep · max(x, 0) · scale (ReLU then inverted dropout), ``keep`` boolean like x.

    Its VJP reads the mask back from the output (dx = dy·scale where y > 0, else 0; y > 0 iff kept and
    x > 0) instead of recomputing ``keep`` — the output is kept for the next layer's weight gradient
    anyway, so the backward pass costs no mask and no hash.
    """
    return jnp.where(keep & (x > 0), _times(x, scale), jnp.zeros((), x.dtype))


def _relu_dropout_fwd(x, keep, scale):
    y = relu_dropout(x, keep, scale)
    return y, (y, scale)


def _relu_dropout_bwd(res, dy):
    y, scale = res
    return jnp.where(y > 0, _times(dy, scale), jnp.zeros((), dy.dtype)), None, None


relu_dropout.defvjp(_relu_dropout_fwd, _relu_dropout_bwd)


class Dropout(nn.Module):
    rate: float
    rng: str = "hash"  # "hash" | "jax"

    @nn.compact
    def __call__(self, x, deterministic: bool, relu: bool = False):
        """Inverted dropout of x; ``relu=True``: of max(x, 0), as one op (see ``relu_dropout``)."""
        if deterministic or self.rate == 0.0:
            return nn.relu(x) if relu else x
        key = self.make_rng("dropout")
        keep_prob = 1.0 - self.rate
        if self.rng == "jax":
            keep = jax.random.bernoulli(key, keep_prob, x.shape)
        elif self.rng == "hash":
            keep = hash_keep_mask(key, x.shape, keep_prob)
        else:
            raise ValueError(f"Dropout rng must be 'hash' or 'jax', got {self.rng!r}")
        if relu:
            return relu_dropout(x, keep, 1.0 / keep_prob)
        return jnp.where(keep, _times(x, 1.0 / keep_prob), jnp.zeros((), x.dtype))
