"""MLP student (FuxiCTR ``MLP_Block`` + output layer; spec §2.1).

For each hidden width u: x ← Dropout_p(ReLU(BN(x Wᵀ + b))); then z = x w_o + b_o (one raw logit).
Input: the shared embedding output [B, F, d], flattened field-major to [B, F·d] (any [B, ...] input is
flattened, so other students use MLPStudent as their MLP tower on their own dense input).
Parameters: in·u₁+u₁ + Σ (u_{i−1}·u_i+u_i) + 2·Σu_i (BN γ, β) + u_last+1 — 573,601 for Criteo.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdef_jax.models.layers import BatchNorm, Dropout, dense


def mlp_hidden(x, hidden_units, *, dropout, batch_norm, dropout_rng, dtype, train, mask, linear=None):
    """The hidden layers of ``MLP_Block``: per width u, x ← Dropout(ReLU(BN(linear_u(x)))).

    Builds its layers in the CALLING module's scope (call it from an ``@nn.compact`` method), so every
    student with an MLP-style tower (MLP, FINAL with ``linear=FinalLinear``, DCN, DCNv2) shares it.
    ``linear(u, dtype=...)`` defaults to ``dense`` (xavier-normal weight, zero bias).
    """
    make = linear or dense
    for u in hidden_units:
        x = make(u, dtype=dtype)(x)
        if batch_norm:
            x = BatchNorm()(x, train, mask)
        if dropout > 0:
            x = Dropout(dropout, dropout_rng)(x, deterministic=not train, relu=True)
        else:
            x = nn.relu(x)
    return x


class MLPStudent(nn.Module):
    hidden_units: Sequence[int] = (400, 400, 400)
    dropout: float = 0.1
    batch_norm: bool = True
    dropout_rng: str = "hash"
    dtype: Any = jnp.float32  # computation dtype; params stay float32
    with_hidden: bool = False  # also return the last hidden layer [B, u_last] (the MLPs_concat head reads it)

    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        x = emb.reshape(emb.shape[0], -1).astype(self.dtype)
        x = mlp_hidden(x, self.hidden_units, dropout=self.dropout, batch_norm=self.batch_norm, dropout_rng=self.dropout_rng,
                       dtype=self.dtype, train=train, mask=mask)
        logit = dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)
        return (logit, x) if self.with_hidden else logit
