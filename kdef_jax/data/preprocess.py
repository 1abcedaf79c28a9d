"""Raw files → cache of int32 ids: ``feature_map.json``, ``vocab.json``, ``{split}_x.npy``, ``{split}_y.npy``.

Two streaming passes over the raw files (chunks, never a whole file in memory):
1. count tokens per column on the **train** rows only; count the rows of every split;
2. encode every row into preallocated ``.npy`` memmaps.
Vocabulary (spec §1.2): keep tokens with count ≥ min_count that are not the NA value, sort them
ascending (numeric order for bucketed numbers), ids 1..n; PAD = 0; OOV = n + 1 (missing values,
rare and unseen tokens). The cache directory is keyed by a hash of the input files' identity
(path, size, mtime) and the schema, and is written to a temporary folder then renamed, so a crash
never leaves a half cache and a changed schema builds a new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from kdef_jax.data.feature_map import FeatureMap, FieldSpec
from kdef_jax.data.schema import ColumnSpec, RawChunk, column_tokens, is_missing

CACHE_VERSION = 1
SPLITS = ("train", "valid", "test")
_CODE = {name: i for i, name in enumerate(SPLITS)}


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """Everything that determines a cache: raw files, how rows become splits, and the schema.

    split: "files" — each split has its own file; "mod" — valid = rows i of the train file with
    i % valid_mod == 0 (i counts data rows, 0-based), test from its own file; "random" — one file,
    each row drawn into train/valid/test with probabilities ``split_fractions`` (seeded).
    """

    dataset_id: str
    columns: tuple  # tuple[ColumnSpec, ...] in model field order
    files: tuple  # ((split, path), ...) — "" path = none
    reader: Callable[[str], Iterator[RawChunk]]  # path -> chunks (not part of the cache key)
    reader_key: dict  # reader options that change the data (part of the cache key)
    split: str = "files"
    valid_mod: int = 0
    split_fractions: tuple = (0.8, 0.1, 0.1)
    split_seed: int = 2018

    def key(self) -> str:
        ident = []
        for split, path in self.files:
            if path:
                st = os.stat(path)
                ident.append((split, os.path.realpath(path), st.st_size, st.st_mtime_ns))
        blob = json.dumps(
            {
                "v": CACHE_VERSION,
                "id": self.dataset_id,
                "columns": [dataclasses.asdict(c) for c in self.columns],
                "files": ident,
                "reader": self.reader_key,
                "split": [self.split, self.valid_mod, list(self.split_fractions), self.split_seed],
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _split_codes(spec: SourceSpec, role: str, chunk: RawChunk, rng) -> np.ndarray:
    n = len(chunk)
    if role != "train" or spec.split == "files":
        return np.full(n, _CODE[role], dtype=np.int8)
    if spec.split == "mod":
        # The row index counts every data row of the file, skipped rows included.
        rows = chunk.row_index
        return np.where(rows % spec.valid_mod == 0, _CODE["valid"], _CODE["train"]).astype(np.int8)
    if spec.split == "random":
        u = rng.random(n)
        f = np.cumsum(spec.split_fractions) / np.sum(spec.split_fractions)
        return np.searchsorted(f, u, side="right").clip(0, 2).astype(np.int8)
    raise ValueError(f"unknown split rule {spec.split!r}; use files, mod or random")


def _iter_sources(spec: SourceSpec):
    """Yield (chunk, split_codes) over every file, with a fresh deterministic RNG per pass."""
    rng = np.random.default_rng(spec.split_seed)
    for role, path in spec.files:
        if not path:
            continue
        for chunk in spec.reader(path):
            yield chunk, _split_codes(spec, role, chunk, rng)


def _count_pass(spec: SourceSpec):
    counts = {c.name: {} for c in spec.columns}
    rows = dict.fromkeys(SPLITS, 0)
    positives = dict.fromkeys(SPLITS, 0.0)
    skipped = {}
    for chunk, codes in _iter_sources(spec):
        skipped[chunk.path] = skipped.get(chunk.path, 0) + chunk.skipped
        for name, code in _CODE.items():
            sel = codes == code
            rows[name] += int(sel.sum())
            positives[name] += float(chunk.labels[sel].sum())
        train = codes == _CODE["train"]
        if not train.any():
            continue
        for col in spec.columns:
            toks = column_tokens(col, chunk)
            if col.kind == "sequence":
                flat = [t for s, keep in zip(toks, train) if keep for t in s]
                toks = np.asarray(flat, dtype=object)
            else:
                toks = toks[train]
            toks = toks[~is_missing(col, toks)] if toks.size else toks
            if toks.size == 0:
                continue
            uniq, cnt = np.unique(toks, return_counts=True)
            c = counts[col.name]
            for t, k in zip(uniq.tolist(), cnt.tolist()):
                c[t] = c.get(t, 0) + k
    return counts, rows, positives, skipped


def _vocab(col: ColumnSpec, counts: dict) -> list:
    kept = [t for t, k in counts.items() if k >= col.min_count]
    return sorted(kept)  # ints sort numerically (numeric_bucket), strings lexicographically


def _encode(col: ColumnSpec, chunk: RawChunk, lookup: dict, oov: int) -> np.ndarray:
    toks = column_tokens(col, chunk)
    if col.kind == "sequence":
        out = np.zeros((len(toks), col.max_len), dtype=np.int32)
        for i, s in enumerate(toks):
            ids = [lookup.get(t, oov) for t in s[: col.max_len]]
            out[i, : len(ids)] = ids
        return out
    if toks.size == 0:
        return np.zeros((0, 1), dtype=np.int32)
    uniq, inv = np.unique(toks, return_inverse=True)
    ids = np.fromiter((lookup.get(t, oov) for t in uniq.tolist()), dtype=np.int32, count=uniq.size)
    return ids[inv].reshape(-1, 1)


def build_cache(spec: SourceSpec, cache_root: str | os.PathLike, *, log=print) -> Path:
    """Build (or reuse) the cache for ``spec`` under ``cache_root``; returns its directory."""
    final = Path(cache_root) / f"{spec.dataset_id}-{spec.key()}"
    if (final / "feature_map.json").exists():
        return final
    t0 = time.time()
    log(f"[data] preprocessing {spec.dataset_id} into {final}")
    counts, rows, positives, skipped = _count_pass(spec)
    if rows["train"] == 0:
        raise ValueError(f"{spec.dataset_id}: the train split is empty ({spec.files})")
    vocabs = {c.name: _vocab(c, counts[c.name]) for c in spec.columns}
    fields = tuple(
        FieldSpec(
            name=c.name,
            type="sequence" if c.kind == "sequence" else "categorical",
            vocab_size=len(vocabs[c.name]) + 2,
            max_len=c.max_len if c.kind == "sequence" else 1,
            source=c.kind,
        )
        for c in spec.columns
    )
    lookups = {n: {t: i + 1 for i, t in enumerate(v)} for n, v in vocabs.items()}
    fmap = FeatureMap(
        dataset_id=spec.dataset_id,
        fields=fields,
        num_rows={s: rows[s] for s in SPLITS if rows[s]},
        positive_rate={s: positives[s] / rows[s] for s in SPLITS if rows[s]},
        skipped_rows={k: v for k, v in skipped.items() if v},
        info={"files": {r: p for r, p in spec.files if p}, "split": spec.split, "cache_key": spec.key()},
    )
    tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        ncol = fmap.num_columns
        xs, ys, fill = {}, {}, {}
        for s in fmap.num_rows:
            xs[s] = np.lib.format.open_memmap(tmp / f"{s}_x.npy", "w+", np.int32, (rows[s], ncol))
            ys[s] = np.lib.format.open_memmap(tmp / f"{s}_y.npy", "w+", np.float32, (rows[s],))
            fill[s] = 0
        for chunk, codes in _iter_sources(spec):
            enc = np.concatenate(
                [_encode(c, chunk, lookups[c.name], f.oov_index) for c, f in zip(spec.columns, fields)],
                axis=1,
            )
            for s in fmap.num_rows:
                sel = codes == _CODE[s]
                k = int(sel.sum())
                xs[s][fill[s] : fill[s] + k] = enc[sel]
                ys[s][fill[s] : fill[s] + k] = chunk.labels[sel]
                fill[s] += k
        for s in fmap.num_rows:
            xs[s].flush()
            ys[s].flush()
            if fill[s] != rows[s]:
                raise RuntimeError(f"{s}: encoded {fill[s]} rows but counted {rows[s]} (files changed?)")
        del xs, ys
        (tmp / "vocab.json").write_text(json.dumps({n: [str(t) for t in v] for n, v in vocabs.items()}))
        fmap.save(tmp / "feature_map.json")
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same cache first
            if not (final / "feature_map.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(
        f"[data] {spec.dataset_id}: rows {fmap.num_rows}, {fmap.total_vocab:,} embedding rows, "
        f"{time.time() - t0:.1f}s"
    )
    return final
