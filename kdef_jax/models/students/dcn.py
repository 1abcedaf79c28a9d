"""Cross-network students on x0 = flatten(E) ∈ R^D, D = F·d (spec §2.5; FuxiCTR DCN / DCNv2).

* ``crossnet`` — CrossNetV2 alone: x_{l+1} = x_l + x0 ⊙ (W_l x_l + b_l), W_l ∈ R^{D×D} (a Linear,
  xavier-normal, zero bias); z = Linear(D, 1)(x_L). (The reference's ``CrossNetV2`` class returns x_L;
  the output Linear is FuxiCTR DCNv2's "crossnet_only" head.)
* ``dcnv2`` — the reference's ``DCNv2``: CrossNetV2 and, in parallel, the MLP tower without output
  layer (Linear → BN → ReLU → Dropout per width); z = Linear([dnn_out ; cross_out]).
* ``dcn`` — DCN (v1, FuxiCTR ``DCN``): cross layer x_{l+1} = x_l + x0·(x_lᵀ w_l) + b_l with
  w_l ∈ R^D (a bias-free Linear D→1) and b_l ∈ R^D (zeros); z = Linear([cross_out ; dnn_out]).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdef_jax.models.layers import dense
from kdef_jax.models.students.mlp import mlp_hidden


def cross_v2(x0, num_layers: int, dtype):
    """CrossNetV2 in the calling module's scope: x ← x + x0 ⊙ Linear_{D→D}(x), ``num_layers`` times."""
    x = x0
    for i in range(num_layers):
        x = x + x0 * dense(x0.shape[-1], name=f"cross_{i}", dtype=dtype)(x)
    return x


class CrossLayerV1(nn.Module):
    """DCN (v1) cross layer: x + x0·(x w) + b, with w ∈ R^D (bias-free Linear D→1) and b ∈ R^D (zeros)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x0, x):
        s = dense(1, use_bias=False, name="w", dtype=self.dtype)(x)  # [B, 1]
        b = self.param("b", nn.initializers.zeros, (x0.shape[-1],))
        return x + x0 * s + b.astype(self.dtype)


def cross_v1(x0, num_layers: int, dtype):
    """CrossNet (v1) in the calling module's scope, ``num_layers`` layers."""
    x = x0
    for i in range(num_layers):
        x = CrossLayerV1(dtype, name=f"cross_{i}")(x0, x)
    return x


class _CrossBase(nn.Module):
    hidden_units: Sequence[int] = (400, 400, 400)
    dropout: float = 0.1
    batch_norm: bool = True
    dropout_rng: str = "hash"
    num_cross_layers: int = 3
    dtype: Any = jnp.float32

    def tower(self, x0, train, mask):
        return mlp_hidden(x0, self.hidden_units, dropout=self.dropout, batch_norm=self.batch_norm,
                          dropout_rng=self.dropout_rng, dtype=self.dtype, train=train, mask=mask)

    def head(self, x):
        return dense(1, name="fc", dtype=self.dtype)(x)[:, 0].astype(jnp.float32)


class CrossNetV2Student(nn.Module):
    num_cross_layers: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        x0 = emb.reshape(emb.shape[0], -1).astype(self.dtype)
        return dense(1, name="fc", dtype=self.dtype)(cross_v2(x0, self.num_cross_layers, self.dtype))[:, 0].astype(jnp.float32)


class DCNv2Student(_CrossBase):
    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        x0 = emb.reshape(emb.shape[0], -1).astype(self.dtype)
        cross = cross_v2(x0, self.num_cross_layers, self.dtype)
        return self.head(jnp.concatenate([self.tower(x0, train, mask), cross], axis=-1))


class DCNStudent(_CrossBase):
    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        x0 = emb.reshape(emb.shape[0], -1).astype(self.dtype)
        cross = cross_v1(x0, self.num_cross_layers, self.dtype)
        return self.head(jnp.concatenate([cross, self.tower(x0, train, mask)], axis=-1))
