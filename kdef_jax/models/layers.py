"""Layers with the reference's (PyTorch/FuxiCTR) semantics.

* ``xavier_normal``: untruncated N(0, 2/(fan_in+fan_out)) — torch ``xavier_normal_``; JAX's
  ``glorot_normal`` is truncated, so it is not used.
* ``BatchNorm``: torch ``BatchNorm1d`` (momentum 0.1: running ← 0.9·running + 0.1·batch, eps 1e-5,
  running variance from the *unbiased* batch variance n/(n−1)·σ²_b), with an optional row mask so
  the padded rows of a last partial batch never enter the statistics. ``scalar=True`` is a one-channel
  BN whose statistics run jointly over every axis (ECN's ``BatchNorm1d(1)``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

xavier_normal = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")


def dense(features: int, use_bias: bool = True, name: str | None = None) -> nn.Dense:
    """``nn.Linear`` as the reference initialises it: xavier-normal weight, zero bias."""
    return nn.Dense(features, use_bias=use_bias, kernel_init=xavier_normal, bias_init=nn.initializers.zeros, name=name)


class BatchNorm(nn.Module):
    momentum: float = 0.1
    epsilon: float = 1e-5
    scalar: bool = False

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        shape = () if self.scalar else (x.shape[-1],)
        scale = self.param("scale", nn.initializers.ones, shape)
        bias = self.param("bias", nn.initializers.zeros, shape)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, shape)
        ra_var = self.variable("batch_stats", "var", jnp.ones, shape)
        axes = tuple(range(x.ndim)) if self.scalar else tuple(range(x.ndim - 1))
        if not train:
            mean, var = ra_mean.value, ra_var.value
        else:
            xf = x.astype(jnp.float32)
            per_row = 1
            for a in axes[1:]:
                per_row *= x.shape[a]
            if mask is None:
                n = jnp.float32(x.shape[0] * per_row)
                mean = xf.mean(axes)
                var = jnp.square(xf - mean).mean(axes)
            else:
                w = mask.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
                n = jnp.maximum(mask.astype(jnp.float32).sum() * per_row, 1.0)
                mean = (w * xf).sum(axes) / n
                var = (w * jnp.square(xf - mean)).sum(axes) / n
            if not self.is_initializing():
                m = self.momentum
                unbiased = var * n / jnp.maximum(n - 1.0, 1.0)
                ra_mean.value = (1.0 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
                ra_var.value = (1.0 - m) * ra_var.value + m * jax.lax.stop_gradient(unbiased)
        y = (x - mean.astype(x.dtype)) * (jax.lax.rsqrt(var + self.epsilon) * scale).astype(x.dtype)
        return y + bias.astype(x.dtype)
