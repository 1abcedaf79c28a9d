"""CIN and xDeepFM students (the reference's ``CompressedInteractionNet`` and ``xDeepFM``; spec §2.5).

CIN on X⁰ = E [B, F, d]: for each layer k with H_k maps,
    Z^k[b, h·H_{k−1}+m, :] = X⁰[b, h, :] ⊙ X^{k−1}[b, m, :]      (einsum "bhd,bmd->bhmd", flattened)
    X^k[b, o, :] = Σ_c W^k[o, c] Z^k[b, c, :] + β^k[o]           (Conv1d, kernel 1 = a Linear over channels)
    p^k = Σ_d X^k[b, :, d]                                      (sum pooling)
z_CIN = Linear(Σ_k H_k, 1)([p¹ ; … ; p^K]).
* ``cin``: z = z_CIN (CIN alone).
* ``xdeepfm``: z = Linear(flat E) (the Backbone's "LR" part, a Linear on the flattened embeddings)
  + z_CIN + MLP(flat E).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdef_jax.models.layers import dense
from kdef_jax.models.students.mlp import MLPStudent
from kdef_jax.models.students.wide import linear_logit


class CIN(nn.Module):
    layers: Sequence[int] = (16, 16, 16)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, e):
        b, _, d = e.shape
        x, pooled = e, []
        for i, h in enumerate(self.layers):
            z = jnp.einsum("bhd,bmd->bhmd", e, x).reshape(b, -1, d)
            x = jnp.swapaxes(dense(h, name=f"conv_{i}", dtype=self.dtype)(jnp.swapaxes(z, 1, 2)), 1, 2)  # [B, H_k, d]
            pooled.append(x.sum(-1))
        return dense(1, name="fc", dtype=self.dtype)(jnp.concatenate(pooled, axis=-1))[:, 0]


class CINStudent(nn.Module):
    cin_layers: Sequence[int] = (16, 16, 16)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        return CIN(self.cin_layers, self.dtype, name="cin")(emb.astype(self.dtype)).astype(jnp.float32)


class XDeepFMStudent(nn.Module):
    hidden_units: Sequence[int] = (400, 400, 400)
    dropout: float = 0.1
    batch_norm: bool = True
    dropout_rng: str = "hash"
    cin_layers: Sequence[int] = (16, 16, 16)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        e = emb.astype(self.dtype)
        dnn = MLPStudent(self.hidden_units, self.dropout, self.batch_norm, self.dropout_rng, self.dtype, name="dnn")
        z = linear_logit(e, self.dtype) + CIN(self.cin_layers, self.dtype, name="cin")(e) + dnn(e, train, mask)
        return z.astype(jnp.float32)
