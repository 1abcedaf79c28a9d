"""Shared feature embedding (FuxiCTR ``FeatureEmbedding``; spec §1.5).

All fields live in ONE table [Σ_f V_f, d] with per-field row offsets, so a batch is one gather.
Rows 1..V_f−1 of each field ~ N(0, std²) (untruncated, std 1e-4); each field's PAD row (local id 0)
is exactly 0 and — because looked-up rows are multiplied by (id ≠ 0) — receives no gradient, so
it stays 0 under Adam. Sequence fields are masked-mean pooled:
e_f = Σ_t E[x_t] / (#{t : x_t ≠ PAD} + 1e-12). Output: [B, F, d]. ``num_rows`` > Σ V_f appends
zero rows that no id reaches (so they stay 0 and add nothing to ‖E‖²): a table split by rows over
N devices needs a multiple of N rows.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def field_offsets(vocab_sizes: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]]).astype(np.int64)


def column_offsets(vocab_sizes: Sequence[int], max_lens: Sequence[int] | None = None) -> np.ndarray:
    """Row offset of every id column (a sequence field repeats its field's offset max_len times)."""
    lens = tuple(max_lens) if max_lens is not None else (1,) * len(vocab_sizes)
    return np.repeat(field_offsets(vocab_sizes), lens).astype(np.int32)


def int32_ids(ids, xp=jnp):
    """Integer ids as int32 (``xp``: numpy for host ids, jax.numpy for device ones): wider ones, and uint32,
    clipped into int32's range first (an id outside its field's range reads the field's OOV row either
    way, where a plain cast would wrap 2**32 + 1 to id 1, and JAX narrows int64 host ids so without x64),
    narrower ones as they are."""
    dt = ids.dtype
    if dt.itemsize > 4 or dt == np.uint32:
        top = np.iinfo(np.int32).max
        ids = xp.minimum(ids, dt.type(top)) if dt.kind == "u" else xp.clip(ids, np.iinfo(np.int32).min, top)
    return ids.astype(np.int32)


def table_rows(ids, vocab_sizes: Sequence[int], max_lens: Sequence[int] | None = None):
    """Local ids [..., C] → rows of the one table: ``offset_f + id``, where an id outside its field's
    [0, V_f) (a caller's id that no vocabulary gave) reads that field's OOV row V_f − 1 instead of a
    neighbouring field's row. In-range ids, all that training sees, are unchanged."""
    lens = tuple(max_lens) if max_lens is not None else (1,) * len(vocab_sizes)
    sizes = jnp.asarray(np.repeat(np.asarray(vocab_sizes, np.int32), lens))
    local = jnp.where((ids >= 0) & (ids < sizes), ids, sizes - 1)
    return local + jnp.asarray(column_offsets(vocab_sizes, lens))


def embedding_init(vocab_sizes: Sequence[int], std: float):
    pad_rows = field_offsets(vocab_sizes)
    used = int(sum(vocab_sizes))

    def init(key, shape, dtype=jnp.float32):
        table = std * jax.random.normal(key, (used, *shape[1:]), dtype)
        table = jnp.pad(table, ((0, shape[0] - used), (0, 0)))  # padding rows (num_rows > Σ V_f): 0
        return table.at[pad_rows].set(0.0)

    return init


class FeatureEmbedding(nn.Module):
    vocab_sizes: Sequence[int]
    embedding_dim: int = 16
    max_lens: Sequence[int] | None = None  # None: every field categorical (one column each)
    init_std: float = 1e-4
    num_rows: int = 0  # 0: Σ V_f

    @nn.compact
    def __call__(self, ids, rows=None):
        """ids int32 [B, C] → [B, F, d]. ``rows`` [B, C, d]: the looked-up rows, gathered by the caller
        (the lazy-Adam step differentiates them directly); PAD masking and pooling still apply."""
        vocab = tuple(self.vocab_sizes)
        lens = tuple(self.max_lens) if self.max_lens is not None else (1,) * len(vocab)
        if ids.shape[-1] != sum(lens):
            raise ValueError(f"ids have {ids.shape[-1]} columns; the feature map needs {sum(lens)}")
        rows_needed = sum(vocab)
        if 0 < self.num_rows < rows_needed:
            raise ValueError(f"config model.embedding_rows: {self.num_rows} < the feature map's {rows_needed} rows")
        table = self.param("table", embedding_init(vocab, self.init_std),
                           (max(self.num_rows, rows_needed), self.embedding_dim))
        e = jnp.take(table, table_rows(ids, vocab, lens), axis=0, mode="clip") if rows is None else rows  # [B, C, d]
        e = e * (ids != 0)[..., None].astype(e.dtype)  # PAD rows: exactly 0, no gradient
        if all(n == 1 for n in lens):
            return e
        out, col = [], 0
        for n in lens:
            if n == 1:
                out.append(e[:, col])
            else:
                cnt = (ids[:, col : col + n] != 0).sum(-1, keepdims=True).astype(e.dtype)
                out.append(e[:, col : col + n].sum(1) / (cnt + 1e-12))
            col += n
        return jnp.stack(out, axis=1)
