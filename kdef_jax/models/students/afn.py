"""AFN* student (the reference's ``AFN``: a logarithmic transformation network plus an MLP; spec §2.5).

Logarithmic network on E [B, F, d]:
    A = log(max(|E|, 1e-5));  A = BN_F(A) (BatchNorm1d(F): per-field statistics over batch × d);
    C = exp(W A) with W ∈ R^{N×F} a bias-free Linear across fields (N = ``logarithmic_neurons``),
    C [B, N, d];  C = BN_N(C) (per-neuron statistics over batch × d);  flatten neuron-major → N·d.
z_afn = MLP(flatten(C)); z_dnn = MLP(flatten(E)) (both ``MLPStudent``, widths ``hidden_units``);
z = Linear(2, 1)([z_afn ; z_dnn]).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdef_jax.models.layers import BatchNorm, dense
from kdef_jax.models.students.mlp import MLPStudent


def log_transform(e, w, bn_log, bn_exp, train, mask):
    """The logarithmic net with the Linear ``w`` (F → N, applied on the field axis) and two BNs.

    Works in [B, d, ·] layout so that ``BatchNorm`` (statistics over every axis but the last) gives
    torch BatchNorm1d's per-channel statistics; returns [B, N·d] in torch's [B, N, d] flatten order.
    """
    # the log and its BN in float32 also under bf16 compute: log|e| ≈ −9 near the N(0, 1e-4²) init, where
    # bf16 steps of 2⁻⁵ would be ~3% of the spread the BN scales up
    a = jnp.log(jnp.maximum(jnp.abs(e.astype(jnp.float32)), 1e-5))
    a = bn_log(jnp.swapaxes(a, 1, 2), train, mask).astype(e.dtype)  # [B, d, F]
    wa = w(a)
    if mask is not None:  # a padded all-PAD row (every |E| at 1e-5) is the most extreme input there is: its
        wa = jnp.where(mask.astype(bool)[:, None, None], wa, 0)  # exp may overflow, and 0·inf poisons gradients
    c = bn_exp(jnp.exp(wa), train, mask)  # [B, d, N]
    return jnp.swapaxes(c, 1, 2).reshape(e.shape[0], -1)


class AFNStudent(nn.Module):
    hidden_units: Sequence[int] = (400, 400, 400)
    dropout: float = 0.1
    batch_norm: bool = True
    dropout_rng: str = "hash"
    logarithmic_neurons: int = 5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        e = emb.astype(self.dtype)
        w = dense(self.logarithmic_neurons, use_bias=False, name="coefficient_W", dtype=self.dtype)
        c = log_transform(e, w, BatchNorm(name="log_batch_norm"), BatchNorm(name="exp_batch_norm"), train, mask)
        mlp = (self.hidden_units, self.dropout, self.batch_norm, self.dropout_rng, self.dtype)
        z_afn = MLPStudent(*mlp, name="afn_dnn")(c, train, mask)
        z_dnn = MLPStudent(*mlp, name="dnn")(e, train, mask)
        return dense(1, name="fc", dtype=self.dtype)(jnp.stack([z_afn, z_dnn], axis=-1).astype(self.dtype))[:, 0].astype(jnp.float32)
