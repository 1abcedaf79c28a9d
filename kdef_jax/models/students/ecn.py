"""ECN student (the reference's ``ExponentialCrossNetwork`` with one head; spec §2.4).

Let L = F·d.
1. Re-layout: x0 = [e_1[:d/2], …, e_F[:d/2], e_1[d/2:], …, e_F[d/2:]] ∈ R^L (first halves of every
   field, then second halves), so coordinate j of the first half pairs with coordinate j of the
   second half: e_f[k] ↔ e_f[d/2+k] within one field. (Odd d splits as torch.tensor_split does,
   ⌈d/2⌉ then ⌊d/2⌋; L must be even.)
2. For each layer i, from x = x0:
     H = x W_iᵀ (L → L/2, no bias);  if batch_norm: H = BN₁(H), ONE channel — scalar γ, β and running
     statistics over batch × L/2 (torch BatchNorm1d(1));  m = ReLU(LayerNorm_{L/2}(H)) (the masker,
     always on; eps 1e-5, learned scale and bias initialised 1 and 0);  H' = [H, H ⊙ m] ∈ R^L;  x ← x ⊙ (H' + b_i) + x with
     b_i ~ U[0, 1);  if dropout > 0: x ← Dropout(x).
3. z = Linear(L, 1)(x) (one head, so the head mean is the identity).
KDEF turns BN on (the original ECN's default is off). Parameters per layer: L·L/2 + L (b) + L (LN)
+ 2 (BN) — 784,377 for Criteo with 4 layers.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdef_jax.models.layers import BatchNorm, Dropout, dense


def ecn_relayout(emb):
    """[B, F, d] → [B, F·d]: every field's first half (field-major), then every field's second half."""
    b, _, d = emb.shape
    h = (d + 1) // 2
    return jnp.concatenate([emb[..., :h].reshape(b, -1), emb[..., h:].reshape(b, -1)], axis=-1)


class ECNStudent(nn.Module):
    num_cross_layers: int = 3
    dropout: float = 0.1
    batch_norm: bool = True
    dropout_rng: str = "hash"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        x = ecn_relayout(emb.astype(self.dtype))
        width = x.shape[-1]
        if width % 2:
            raise ValueError(f"ECN needs an even F·d, got {width}")
        for i in range(self.num_cross_layers):
            h = dense(width // 2, use_bias=False, name=f"w_{i}", dtype=self.dtype)(x)
            if self.batch_norm:
                h = BatchNorm(scalar=True, name=f"bn_{i}")(h, train, mask)
            m = nn.relu(nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=f"ln_{i}")(h))
            b = self.param(f"b_{i}", nn.initializers.uniform(scale=1.0), (width,))
            x = x * (jnp.concatenate([h, h * m], axis=-1) + b.astype(self.dtype)) + x
            if self.dropout > 0:
                x = Dropout(self.dropout, self.dropout_rng, name=f"dropout_{i}")(x, deterministic=not train)
        return dense(1, name="fc", dtype=self.dtype)(x)[:, 0].astype(jnp.float32)
