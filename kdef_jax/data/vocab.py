"""Vocabulary building: raw values → global raw ids → tokens → final ids (spec §1.2).

Pass 1 of the preprocessing gives every distinct value of every raw column a *raw id* (dense, first
seen first) in a :class:`RawColumn` — a Python dict in the plain engine, a compiled hash table
over value keys (:mod:`kdef_jax.data.hash_ids`, no Python per row) in the fast engines — and
counts the raw ids of the **train** rows. A field that uses its raw value as the token (plain categorical) needs nothing
more until the end; a field with a transform, log² buckets or a sequence (:class:`FieldEncoder`)
turns each *new* raw value into tokens once (so Python work is O(distinct values), never O(rows)).
Memory is O(distinct values).

At the end, :meth:`FieldEncoder.finalize` sums the counts per token, keeps tokens with count ≥
min_count that are not the NA value, sorts them ascending (numbers numerically), numbers them
1..n (PAD 0, OOV n+1) and returns the lookup table that pass 2 applies to the ids written in pass 1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kdef_jax.data import hash_ids
from kdef_jax.data.hash_ids import Cells, HashIds, unpack
from kdef_jax.data.packed import PackedStrings
from kdef_jax.data.schema import TRANSFORMS, ColumnSpec, LabelRule, bucket_value, parse_number


def ingest_all(raws: dict, columns: dict) -> dict:
    """Raw ids ([n]; int64 in the plain engine, int32 in the fast ones) of every column of a block."""
    return {name: raws[name].ingest(col) for name, col in columns.items()}


def _grow(a: np.ndarray, n: int, fill=0) -> np.ndarray:
    if n <= a.shape[0]:
        return a
    new = np.full((max(n, 2 * a.shape[0]),) + a.shape[1:], fill, a.dtype)
    new[: a.shape[0]] = a
    return new


class Probed(NamedTuple):
    """A block column after the hash-table lookup: ids per cell, the cells, local indices (or None)."""

    ids: np.ndarray
    cells: Cells
    idx: np.ndarray | None


class RawColumn:
    """Global dictionary of one raw column over every file of a build, with train counts.

    ``hashed=False``: a Python dict value → id (the plain engine). ``hashed=True``: a
    :class:`~kdef_jax.data.hash_ids.HashIds` table over the values' keys (the fast engines),
    with the values themselves kept packed (bytes + lengths) unless ``need_values``."""

    def __init__(self, name: str, *, need_values: bool, hashed: bool):
        self.name, self.need_values = name, need_values
        self.index: dict = {}  # plain engine: value -> raw id
        self.values: list = []  # raw id -> value (plain engine, or columns that need Python values)
        self.packed: list = []  # hashed engine, identity-only columns: (bytes, lengths) of new values in id order
        self.ids = HashIds() if hashed else None
        self.n = 0
        self.counts = np.zeros(1024, np.int64)

    # -------------------------------------------------------------- values → raw ids

    def probe(self, col) -> "Probed":
        """Hash-table ids of one block column (``Cells`` or ``(local indices, local values)``). Blocks
        must be probed in file order — parser threads may call this, one block after another."""
        idx = None
        if isinstance(col, tuple):
            idx, values = col
            col = Cells.from_strings(values)
        return Probed(self.ids(col.h1, col.tag), col, idx)

    def ingest(self, col) -> np.ndarray:
        """Raw ids of one block column: ``(local indices, local values)``, :class:`Cells` or
        :class:`Probed`; records the values of ids seen for the first time."""
        if self.ids is None:
            idx, values = col
            return self._lookup(values)[idx]
        p = col if isinstance(col, Probed) else self.probe(col)
        phys = p.ids
        top = int(phys.max()) + 1 if phys.size else 0
        if top > self.n:
            blob, lens = p.cells.pack(hash_ids.first_rows(phys, self.n))
            if self.need_values:
                self.values.extend(unpack(blob, lens))
            else:
                self.packed.append((blob, lens))
            self.n = top
        return phys if p.idx is None else phys[p.idx]

    def _lookup(self, values: list) -> np.ndarray:
        ids = self.index
        got = list(map(ids.get, values))
        if None in got:  # register the new values (C-level loops, no Python per value)
            new = list(dict.fromkeys(v for v, g in zip(values, got) if g is None))
            ids.update(zip(new, range(self.n, self.n + len(new))))
            self.values.extend(new)
            self.n += len(new)
            got = list(map(ids.get, values))
        return np.fromiter(got, np.int64, len(got))

    def strings(self, ids: np.ndarray) -> "list | PackedStrings":
        """The values of raw ids ``ids``: a list, or :class:`PackedStrings` when they are kept packed."""
        if self.values or self.n == 0:
            return [self.values[i] for i in ids.tolist()]
        lens = np.concatenate([lens for _, lens in self.packed])
        return PackedStrings(b"".join(blob for blob, _ in self.packed), lens).take(ids)


class LabelColumn:
    """Label per raw label id through the label rule; bad ids with their messages."""

    def __init__(self, raw: RawColumn, rule: LabelRule):
        self.raw, self.rule = raw, rule
        self.lut = np.zeros(0, np.float32)
        self.bad: dict = {}
        self.done = 0

    def sync(self) -> None:
        if self.raw.n > self.done:
            lab, bad = self.rule.apply(self.raw.values[self.done : self.raw.n])
            self.lut = np.concatenate([self.lut, lab])
            self.bad.update({self.done + j: m for j, m in bad.items()})
            self.done = self.raw.n

    @property
    def bad_mask(self) -> np.ndarray:
        m = np.zeros(self.done, bool)
        m[list(self.bad)] = True
        return m


class FieldEncoder:
    """One model field over one raw column. Plain categorical fields are *identity* fields: their
    pass-1 ids are the raw ids. Others map each raw value to token pids (0 = missing / PAD)."""

    def __init__(self, spec: ColumnSpec, raw: RawColumn, featindex: dict | None = None):
        self.spec, self.raw = spec, raw
        self.fn = TRANSFORMS.get(spec.transform) if spec.transform else None
        self.featindex = featindex  # libFM: index string -> (field name, value)
        self.identity = spec.kind == "categorical" and self.fn is None and featindex is None
        self.width = spec.max_len if spec.kind == "sequence" else 1
        self.missing = spec.missing_strings
        self.fill = spec.fill
        self.done = 0
        self.bad: dict = {}  # raw id -> message
        self.bad_mask = np.zeros(1024, bool)
        self.tok_ids: dict = {None: 0}  # token -> pid
        if spec.kind == "numeric_bucket":
            if spec.zero_is_missing:
                self.tok_ids[0] = 0
        else:
            self.tok_ids[spec.na_value] = 0
        self.tokens: list = [None]  # pid -> token
        self.raw2pid = np.zeros((1024, self.width) if spec.kind == "sequence" else 1024, np.int32)
        self.raw2full: list = []  # sequences: untruncated pid lists per raw id (what the counts use)

    # ------------------------------------------------------------------ new raw values → tokens

    def _pre(self, v: str) -> str:
        if v in self.missing:  # FuxiCTR: NaN → the fill value, before any transform
            v = self.fill
        if self.fn is not None:
            v = self.fn(v)
        if self.featindex is not None:
            hit = self.featindex.get(v)
            if hit is None:
                raise ValueError(f"index {v!r} is not in the feature index")
            field, v = hit
            if field != self.spec.raw:
                raise ValueError(f"index belongs to field {field!r}, not {self.spec.raw!r}")
        return v

    def tokenize(self, values: list) -> tuple[list, dict]:
        """Tokens of raw values, and {position: message} for values the schema rejects."""
        s, bad, out = self.spec, {}, []
        for j, v in enumerate(values):
            try:
                v = self._pre(v)
                if s.kind == "categorical":
                    out.append(v)
                elif s.kind == "numeric_bucket":
                    if v == "":
                        out.append(0)  # fill_na 0
                        continue
                    try:
                        f = parse_number(v)
                    except ValueError:
                        raise ValueError(f"column {s.raw!r} is numeric but holds {v!r}") from None
                    out.append(bucket_value(f))
                else:
                    out.append([] if v == "" or v == s.na_value else v.split(s.splitter))
            except ValueError as e:
                msg = str(e)
                if values[j] in self.missing and values[j] != self.fill:  # say what the file holds, not its fill
                    msg += f" (the raw value {values[j]!r}, a missing value: data.pandas_na)"
                bad[j] = msg if f"column {s.raw!r}" in msg else f"column {s.raw!r}: {msg}"
                out.append([] if s.kind == "sequence" else None)
        return out, bad

    def _pids(self, toks: list) -> list:
        ids = self.tok_ids
        got = list(map(ids.get, toks))
        if None in got:
            new = list(dict.fromkeys(t for t, g in zip(toks, got) if g is None))
            ids.update(zip(new, range(len(self.tokens), len(self.tokens) + len(new))))
            self.tokens.extend(new)
            got = list(map(ids.get, toks))
        return got

    def sync(self) -> None:
        """Tokenize the raw values that appeared since the last call."""
        if self.identity or self.raw.n == self.done:
            return
        lo, hi = self.done, self.raw.n
        toks, bad = self.tokenize(self.raw.values[lo:hi])
        self.raw2pid = _grow(self.raw2pid, hi)
        self.bad_mask = _grow(self.bad_mask, hi, False)
        for j, m in bad.items():
            self.bad[lo + j] = m
            self.bad_mask[lo + j] = True
        if self.spec.kind != "sequence":
            self.raw2pid[lo:hi] = self._pids(toks)
        else:
            flat = self._pids([t for seq in toks for t in seq])
            pos = 0
            for j, seq in enumerate(toks):
                p = flat[pos : pos + len(seq)]
                pos += len(seq)
                self.raw2full.append(p)
                k = min(len(p), self.width)
                self.raw2pid[lo + j, :k] = p[:k]
        self.done = hi

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """Pass-1 ids of the rows whose raw ids are ``ids``: [n] (or [n, max_len])."""
        return ids if self.identity else self.raw2pid[ids]

    # ------------------------------------------------------------------ final vocabulary

    def finalize(self) -> tuple["list | PackedStrings", np.ndarray]:
        """(kept tokens in ascending order, pass-1 id → final id table, int32)."""
        raw_counts = _grow(self.raw.counts, self.raw.n)[: self.raw.n]
        mc = self.spec.min_count
        if self.identity:
            cand = np.flatnonzero(raw_counts >= mc)
            strs = self.raw.strings(cand)
            if isinstance(strs, PackedStrings):  # sorted without a Python string per value
                order = strs.sort_order()
                order = order[~np.isin(order, np.concatenate([strs.find(m) for m in self.missing]))]
                kept = strs.take(order)
            else:
                order = [i for i in sorted(range(len(strs)), key=strs.__getitem__) if strs[i] not in self.missing]
                kept = [strs[i] for i in order]
            table = np.full(self.raw.n, len(order) + 1, np.int32)
            table[cand[order]] = np.arange(1, len(order) + 1, dtype=np.int32)
            return kept, table
        n_tok = len(self.tokens)
        if self.spec.kind != "sequence":
            counts = np.bincount(self.raw2pid[: self.raw.n], weights=raw_counts, minlength=n_tok)
        else:
            counts = np.zeros(n_tok, np.float64)
            for r in np.flatnonzero(raw_counts).tolist():
                for q in self.raw2full[r]:
                    counts[q] += raw_counts[r]
        counts[0] = 0  # missing / PAD is never a token
        kept = [p for p in np.flatnonzero(counts >= mc).tolist() if p != 0]
        kept.sort(key=self.tokens.__getitem__)  # ints numerically (numeric buckets), strings lexicographically
        oov = len(kept) + 1
        table = np.full(n_tok, oov, np.int32)
        table[kept] = np.arange(1, oov, dtype=np.int32)
        table[0] = 0 if self.spec.kind == "sequence" else oov  # PAD in sequences; missing → OOV otherwise
        return [self.tokens[p] for p in kept], table

    def finalize_pinned(self, vocab: list) -> tuple[list, np.ndarray]:
        """(``vocab``, pass-1 id → final id table) for a vocabulary fixed in advance (a trained run's
        ``vocab.json``): token ``vocab[i]`` is id i + 1, any other token OOV = len(vocab) + 1, and
        missing values map as in :meth:`finalize` (PAD 0 in sequences, OOV otherwise). Tokens are
        compared as the strings ``vocab.json`` holds."""
        final = {tok: i for i, tok in enumerate(vocab, start=1)}
        oov = len(vocab) + 1
        if self.identity:
            strs = self.raw.strings(np.arange(self.raw.n))
            strs = strs.tolist() if isinstance(strs, PackedStrings) else strs
            table = np.fromiter((oov if s in self.missing else final.get(s, oov) for s in strs), np.int32, len(strs))
            return list(vocab), table
        table = np.fromiter((final.get(t if isinstance(t, str) else str(t), oov) for t in self.tokens),
                            np.int32, len(self.tokens))
        table[0] = 0 if self.spec.kind == "sequence" else oov
        return list(vocab), table

