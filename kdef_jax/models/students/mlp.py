"""MLP student (FuxiCTR ``MLP_Block`` + output layer; spec §2.1).

For each hidden width u: x ← Dropout_p(ReLU(BN(x Wᵀ + b))); then z = x w_o + b_o (one raw logit).
Input: the shared embedding output [B, F, d], flattened field-major to [B, F·d].
Parameters: in·u₁+u₁ + Σ (u_{i−1}·u_i+u_i) + 2·Σu_i (BN γ, β) + u_last+1 — 573,601 for Criteo.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdef_jax.models.layers import BatchNorm, Dropout, dense


class MLPStudent(nn.Module):
    hidden_units: Sequence[int] = (400, 400, 400)
    dropout: float = 0.1
    batch_norm: bool = True
    dropout_rng: str = "hash"
    dtype: Any = jnp.float32  # computation dtype; params stay float32

    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        x = emb.reshape(emb.shape[0], -1).astype(self.dtype)
        for u in self.hidden_units:
            x = dense(u, dtype=self.dtype)(x)
            if self.batch_norm:
                x = BatchNorm()(x, train, mask)
            x = nn.relu(x)
            if self.dropout > 0:
                x = Dropout(self.dropout, self.dropout_rng)(x, deterministic=not train)
        return dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)
