"""AutoInt* student (the reference's ``AutoInt``: self-attention layers plus an MLP; spec §2.5).

Per attention layer on X [B, F, d_in] (d_in = d for the first layer, ``attention_dim`` after):
    Q, K, V = X W_q, X W_k, X W_v (bias-free Linears d_in → A), split into ``num_heads`` heads of
    size A/heads;  S = Q Kᵀ / √(A/heads) (scale iff ``use_scale``);  P = Dropout(softmax(S));
    O = concat_heads(P V);  if use_residual: O += X W_res (bias-free, only when d_in ≠ A) or X;
    if layer_norm: O = LayerNorm(O);  X ← ReLU(O).
z = Linear(F·A, 1)(flatten(X)) + MLP(flatten(E)). As in the reference, one ``dropout`` rate serves
the attention probabilities and the MLP.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdef_jax.models.layers import Dropout, dense
from kdef_jax.models.students.mlp import MLPStudent


class MultiHeadSelfAttention(nn.Module):
    attention_dim: int = 8
    num_heads: int = 1
    dropout: float = 0.0
    dropout_rng: str = "hash"
    use_residual: bool = True
    use_scale: bool = True
    layer_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        b, f, d_in = x.shape
        a, nh = self.attention_dim, self.num_heads
        if a % nh:
            raise ValueError(f"AutoInt attention_dim={a} is not divisible by num_heads={nh}")

        def heads(name):
            return dense(a, use_bias=False, name=name, dtype=self.dtype)(x).reshape(b, f, nh, a // nh).transpose(0, 2, 1, 3)

        q, k, v = heads("W_q"), heads("W_k"), heads("W_v")
        s = jnp.einsum("bhqc,bhkc->bhqk", q, k)
        if self.use_scale:
            s = s / jnp.sqrt(jnp.asarray(a // nh, s.dtype))
        p = nn.softmax(s, axis=-1)
        if self.dropout > 0:
            p = Dropout(self.dropout, self.dropout_rng, name="attn_dropout")(p, deterministic=not train)
        out = jnp.einsum("bhqk,bhkc->bhqc", p, v).transpose(0, 2, 1, 3).reshape(b, f, a)
        if self.use_residual:
            out = out + (dense(a, use_bias=False, name="W_res", dtype=self.dtype)(x) if d_in != a else x)
        if self.layer_norm:
            out = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="layer_norm")(out)
        return nn.relu(out)


class AutoIntStudent(nn.Module):
    hidden_units: Sequence[int] = (400, 400, 400)
    dropout: float = 0.1
    batch_norm: bool = True
    dropout_rng: str = "hash"
    attention_layers: int = 2
    num_heads: int = 1
    attention_dim: int = 8
    use_residual: bool = True
    use_scale: bool = True
    layer_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb, train: bool = False, mask=None):
        e = emb.astype(self.dtype)
        x = e
        for i in range(self.attention_layers):
            x = MultiHeadSelfAttention(self.attention_dim, self.num_heads, self.dropout, self.dropout_rng, self.use_residual,
                                       self.use_scale, self.layer_norm, self.dtype, name=f"attention_{i}")(x, train)
        z = dense(1, name="fc", dtype=self.dtype)(x.reshape(x.shape[0], -1))[:, 0]
        dnn = MLPStudent(self.hidden_units, self.dropout, self.batch_norm, self.dropout_rng, self.dtype, name="dnn")
        return (z + dnn(e, train, mask)).astype(jnp.float32)
