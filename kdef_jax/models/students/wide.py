"""Wide & Deep and DeepFM students (spec §2.5; FuxiCTR WideDeep / DeepFM).

The first-order "wide"/LR part is done as the reference's Backbone does it: ``linear_logit`` = a
Linear on the flattened shared embeddings, Linear(F·d, 1) (its ``LogisticRegression``), not a
separate per-id weight table — a student only sees the shared embedding output [B, F, d].
* ``widedeep``: z = Linear(flat E) + MLP(flat E)  (the reference's ``WideDeep``).
* ``deepfm``: z = Linear(flat E) + FM + MLP(flat E), FM = ½ Σ_k [(Σ_f e_fk)² − Σ_f e_fk²]
  (FuxiCTR InnerProductInteraction "product_sum"); FuxiCTR's DeepFM has the same three terms, with
  a per-id LR table in place of the Linear on flat E.
The MLP is ``MLPStudent`` (Linear → BN → ReLU → Dropout per width, then Linear(·, 1)).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdef_jax.models.layers import dense
from kdef_jax.models.students.mlp import MLPStudent


def linear_logit(e, dtype, name: str = "lr"):
    """The Backbone's LR part: Linear(F·d, 1) on flatten(E) → [B] (call inside a compact method)."""
    return dense(1, name=name, dtype=dtype)(e.reshape(e.shape[0], -1))[:, 0]


def fm_product_sum(e):
    """Σ_{i<j} <e_i, e_j> = ½ Σ_k [(Σ_f e_fk)² − Σ_f e_fk²] → [B]."""
    return 0.5 * (jnp.square(e.sum(1)) - jnp.square(e).sum(1)).sum(-1)


class _DeepBase(nn.Module):
    hidden_units: Sequence[int] = (400, 400, 400)
    dropout: float = 0.1
    batch_norm: bool = True
    dropout_rng: str = "hash"
    dtype: Any = jnp.float32

    def deep_logit(self, e, train, mask):
        return MLPStudent(self.hidden_units, self.dropout, self.batch_norm, self.dropout_rng, self.dtype, name="dnn")(e, train, mask)


class WideDeepStudent(_DeepBase):
    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        e = emb.astype(self.dtype)
        return (linear_logit(e, self.dtype) + self.deep_logit(e, train, mask)).astype(jnp.float32)


class DeepFMStudent(_DeepBase):
    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        e = emb.astype(self.dtype)
        return (linear_logit(e, self.dtype) + fm_product_sum(e) + self.deep_logit(e, train, mask)).astype(jnp.float32)
