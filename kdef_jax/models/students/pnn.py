"""IPNN student (the reference's ``ProductNetwork`` = FuxiCTR PNN, product_type inner; spec §2.2).

From E [B, F, d]: inner products p_ij = <e_i, e_j> for i < j, row-major over the strict upper
triangle (i ascending, then j ascending) — F(F−1)/2 values. Dense input = [flatten(E) (F·d values,
field-major), p]; then the MLP tower of ``MLPStudent`` (Linear → BN → ReLU → Dropout per width, then
Linear(·, 1)). The triangular selection is a constant index, not a parameter.
Parameters: MLP on F·d + F(F−1)/2 inputs — 870,001 for Criteo (F=39, d=16, [400]×3).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from kdef_jax.models.students.mlp import MLPStudent


def inner_products(emb):
    """[B, F, d] → [B, F(F−1)/2]: <e_i, e_j> for i < j, row-major (FuxiCTR InnerProductInteraction)."""
    f = emb.shape[1]
    rows, cols = np.triu_indices(f, k=1)
    gram = jnp.einsum("bfd,bgd->bfg", emb, emb)
    return gram.reshape(emb.shape[0], f * f)[:, rows * f + cols]


class IPNNStudent(nn.Module):
    hidden_units: Sequence[int] = (400, 400, 400)
    dropout: float = 0.1
    batch_norm: bool = True
    dropout_rng: str = "hash"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        e = emb.astype(self.dtype)
        x = jnp.concatenate([e.reshape(e.shape[0], -1), inner_products(e)], axis=-1)
        return MLPStudent(self.hidden_units, self.dropout, self.batch_norm, self.dropout_rng, self.dtype, name="dnn")(x, train, mask)
