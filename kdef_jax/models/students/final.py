"""FINAL student (the reference's ``FinalNet``: a FINAL 1B block with field gate; spec §2.3).

1. Field gate (``field_gate=True``): g[b,f,j] = Σ_f' W_g[f,f']·E[b,f',j] + b_g[f] (a Linear F→F along
   the field axis for every embedding coordinate); x = flatten([E ; E ⊙ g]) (B × 2F·d, field-major:
   the raw embeddings first, then the gated ones). ``gate_init``: "xavier" (xavier-normal W_g, b_g = 0:
   stock FuxiCTR 2.0.1, whose custom-init hook is a no-op — the default, spec open question 1) or
   "ones" (W_g = 0, b_g = 1: gates start at 1, as the FINAL paper and later FuxiCTR).
2. Per width u (even): FinalLinear h = x Aᵀ + a; h_a = h[:, :u/2], h_b = h[:, u/2:];
   x = [h_a, h_b ⊙ h_a]; then BN(u) → ReLU → Dropout (the MLP tower's code, ``mlp_hidden``).
3. z = Linear(u_last, 1)(x).

``blocks=2`` is FINAL 2B (FuxiCTR ``FinalNet``, block_type "2B"): a second block on the ungated E
(same widths and dropout, no gate) and z = (z₁ + z₂)/2. FuxiCTR's 2B also adds a self-distillation
BCE from each block to the detached mean; a student here returns one logit, so that term is not
added (inside KDEF the KD term to the teacher plays the same role). KDEF itself uses 1B.
Parameters (1B, gate on): F²+F + MLP on 2F·d inputs — 824,761 for Criteo.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdef_jax.models.layers import dense
from kdef_jax.models.students.mlp import mlp_hidden

GATE_INITS = ("xavier", "ones")


class FieldGate(nn.Module):
    """[B, F, d] → [B, 2F, d] = [E ; E ⊙ (Linear_{F→F} along fields)(E)] (FuxiCTR FinalGate / FeatureGating)."""

    init: str = "xavier"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, e):
        f = e.shape[1]
        if self.init == "xavier":
            lin = dense(f, dtype=self.dtype, name="linear")
        elif self.init == "ones":
            lin = nn.Dense(f, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.ones, dtype=self.dtype, name="linear")
        else:
            raise ValueError(f"FINAL gate_init must be one of {GATE_INITS}, got {self.init!r}")
        g = jnp.swapaxes(lin(jnp.swapaxes(e, 1, 2)), 1, 2)
        return jnp.concatenate([e, e * g], axis=1)


class FinalLinear(nn.Module):
    """Linear(in → u), then [h_a, h_b ⊙ h_a] with h_a, h_b the first and second halves (u even)."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.features % 2:
            raise ValueError(f"FINAL hidden widths must be even, got {self.features}")
        h = dense(self.features, dtype=self.dtype, name="linear")(x)
        ha, hb = jnp.split(h, 2, axis=-1)
        return jnp.concatenate([ha, hb * ha], axis=-1)


class FinalBlock(nn.Module):
    """Optional field gate → flatten → FinalLinear/BN/ReLU/Dropout tower → Linear(·, 1) → logit [B]."""

    hidden_units: Sequence[int]
    dropout: float
    batch_norm: bool
    dropout_rng: str
    field_gate: bool
    gate_init: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, e, train: bool, mask):
        if self.field_gate:
            e = FieldGate(self.gate_init, self.dtype, name="field_gate")(e)
        x = mlp_hidden(e.reshape(e.shape[0], -1), self.hidden_units, dropout=self.dropout, batch_norm=self.batch_norm,
                       dropout_rng=self.dropout_rng, dtype=self.dtype, train=train, mask=mask, linear=FinalLinear)
        return dense(1, dtype=self.dtype, name="fc")(x)[:, 0]


class FINALStudent(nn.Module):
    hidden_units: Sequence[int] = (400, 400, 400)
    dropout: float = 0.1
    batch_norm: bool = True
    dropout_rng: str = "hash"
    field_gate: bool = True
    gate_init: str = "xavier"  # "xavier" (W ~ xavier, b = 0) | "ones" (W = 0, b = 1)
    blocks: int = 1  # 1 = FINAL 1B (KDEF); 2 = FINAL 2B (second block on ungated E, mean of the logits)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        if self.blocks not in (1, 2):
            raise ValueError(f"FINAL blocks must be 1 or 2, got {self.blocks}")
        e = emb.astype(self.dtype)
        common = (self.hidden_units, self.dropout, self.batch_norm, self.dropout_rng)
        z = FinalBlock(*common, self.field_gate, self.gate_init, self.dtype, name="block1")(e, train, mask)
        if self.blocks == 2:
            z = 0.5 * (z + FinalBlock(*common, False, self.gate_init, self.dtype, name="block2")(e, train, mask))
        return z.astype(jnp.float32)
