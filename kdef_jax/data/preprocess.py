"""Raw files → cache of int32 ids: ``feature_map.json``, ``vocab.json``, ``{split}_x.npy``, ``{split}_y.npy``.

Two streaming passes, bounded memory (peak RSS does not grow with the number of rows):

1. **Count** — read every raw file block by block (a reader yields :class:`~kdef_jax.data.schema.Block`s);
   give every distinct value of every raw column a global *raw id* (:mod:`kdef_jax.data.vocab`),
   validate labels and values once per distinct value, count the raw ids of the **train** rows,
   and append each row's ids (raw ids, or token ids for transformed / bucketed / sequence fields)
   and label to its split's ``.npy`` file with plain writes (:mod:`kdef_jax.data.id_files`; no
   memmap, so written pages are page cache, not process memory).
2. **Encode** — build the vocabulary (spec §1.2: keep count ≥ min_count, not the NA value, sorted
   ascending, ids 1..n, PAD 0, OOV n+1; numeric buckets sorted numerically) and rewrite the id
   files in place, block by block, through one lookup table.

So the text is parsed once; the second pass reads back int32 ids instead of re-parsing it. State
kept across blocks is O(distinct values) (the counts every vocabulary rule needs), never O(rows).
The cache directory is keyed by a hash of the input files' identity (path, size, mtime) and the
schema, and is written to a temporary folder then renamed, so a crash never leaves a half cache and
a changed schema builds a new one.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import gc
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

from kdef_jax.data import checksums
from kdef_jax.data.atomic_dir import building
from kdef_jax.data.feature_map import FeatureMap, FieldSpec
from kdef_jax.data.schema import DROP, LABEL, Block, DataFormatError, EmptySplitError, LabelRule
from kdef_jax.data.hash_ids import count_where, scatter_columns
from kdef_jax.data.id_files import SPLITS, IdFiles, remap_in_place
from kdef_jax.data.packed import vocab_json, vocab_sha256
from kdef_jax.data.vocab import FieldEncoder, LabelColumn, RawColumn, _grow, ingest_all

# bump on every change to what a raw file becomes (parsing, bad-row rules, encoding); 6: libFM indices read as
# integers ("03" is "3")
CACHE_VERSION = 6
_CODE = {name: i for i, name in enumerate(SPLITS)}

SAMPLE_WHOLE = 8 << 20  # content_sample: a file up to 8 MiB whole, a larger one
SAMPLE_HEAD = SAMPLE_TAIL = 1 << 20  # by its first and last MiB
SAMPLE_BLOCKS, SAMPLE_BLOCK = 62, 1 << 16  # and 62 blocks of 64 KiB spread between them


def content_sample(path: str, size: int) -> str:
    """sha256 of the file's content: all of it up to 8 MiB, else its first and last MiB and 62 blocks of
    64 KiB evenly spaced between (a few milliseconds for any size). A file replaced by another of the
    same size and modification time (``cp -p``, ``rsync -t``, an archive's timestamps) then gets another
    cache instead of the stale one, unless the two differ only between the sampled blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= max(SAMPLE_WHOLE, SAMPLE_HEAD + SAMPLE_TAIL + SAMPLE_BLOCKS * SAMPLE_BLOCK):
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
            return h.hexdigest()
        h.update(fh.read(SAMPLE_HEAD))
        gap = (size - SAMPLE_HEAD - SAMPLE_TAIL - SAMPLE_BLOCK) // (SAMPLE_BLOCKS - 1)
        for i in range(SAMPLE_BLOCKS):
            fh.seek(SAMPLE_HEAD + i * gap)
            h.update(fh.read(SAMPLE_BLOCK))
        fh.seek(size - SAMPLE_TAIL)
        h.update(fh.read(SAMPLE_TAIL))
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def _sample_of(path: str, size: int, inode: int, ctime_ns: int) -> str:
    """content_sample once per version of a file in a process (a key is asked for often); the status
    change time moves on every write and utime, and no one can set it back."""
    return content_sample(path, size)


def file_identity(path: str) -> list:
    """What a cache records of a raw file: its real path, size, modification time and content sample."""
    st = os.stat(path)
    real = os.path.realpath(path)
    return [real, st.st_size, st.st_mtime_ns, _sample_of(real, st.st_size, st.st_ino, st.st_ctime_ns)]


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """Everything that determines a cache: raw files, how rows become splits, and the schema.

    split: "files" — each split has its own file; "mod" — valid = rows i of the train file with
    i % valid_mod == 0 (i counts data rows, 0-based, before any row is dropped or skipped), test
    from its own file; "random" — one file, each row drawn into train/valid/test with
    probabilities ``split_fractions`` by a hash of (split_seed, row index), so the split does not
    depend on block sizes or the engine.
    """

    dataset_id: str
    columns: tuple  # tuple[ColumnSpec, ...] in model field order
    files: tuple  # ((split, path), ...) — "" path = none
    reader: Callable[[str], Iterator[Block]]  # path -> blocks (not part of the cache key)
    reader_key: dict  # reader options that change the data (part of the cache key)
    label_rule: LabelRule = LabelRule()
    on_bad_rows: str = "error"
    split: str = "files"
    valid_mod: int = 0
    split_fractions: tuple = (0.8, 0.1, 0.1)
    split_seed: int = 2018
    featindex: dict | None = dataclasses.field(default=None, compare=False, hash=False)
    identity: Callable[[str], list] = dataclasses.field(default=file_identity, compare=False, hash=False)
    # a vocabulary fixed in advance ({field: tokens}, a run's vocab.json): ids from it, not from train counts
    vocab: dict | None = dataclasses.field(default=None, compare=False, hash=False)
    keep_lines: bool = False  # also write {split}_line.npy: each kept row's 1-based line in its raw file

    def split_key(self) -> list:
        """The split rule and only the parameters it reads (a "files" split ignores the fractions)."""
        return {"files": ["files"], "mod": ["mod", self.valid_mod],
                "random": ["random", list(self.split_fractions), self.split_seed]}.get(self.split, [self.split])

    def key(self) -> str:
        ident = [(split, self.identity(path)) for split, path in self.files if path]
        blob = json.dumps(
            {
                "v": CACHE_VERSION,
                "id": self.dataset_id,
                "columns": [dataclasses.asdict(c) for c in self.columns],
                "files": ident,
                "reader": self.reader_key,
                "label": dataclasses.asdict(self.label_rule),
                "bad": self.on_bad_rows,
                "split": self.split_key(),
                **({"vocab": hashlib.sha256(json.dumps(self.vocab, sort_keys=True).encode()).hexdigest()}
                   if self.vocab is not None else {}),
                **({"lines": True} if self.keep_lines else {}),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _uniform(seed: int, rows: np.ndarray) -> np.ndarray:
    """Deterministic U[0,1) per (seed, row) — splitmix64."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _split_codes(spec: SourceSpec, role: str, row_index: np.ndarray) -> np.ndarray:
    if role != "train" or spec.split == "files":
        return np.full(row_index.shape[0], _CODE[role], dtype=np.int8)
    if spec.split == "mod":
        return np.where(row_index % spec.valid_mod == 0, _CODE["valid"], _CODE["train"]).astype(np.int8)
    if spec.split == "random":
        f = np.cumsum(spec.split_fractions) / np.sum(spec.split_fractions)
        return np.searchsorted(f, _uniform(spec.split_seed, row_index), side="right").clip(0, 2).astype(np.int8)
    raise ValueError(f"unknown split rule {spec.split!r}; use files, mod or random")


# ------------------------------------------------------------------------------------ pass 1


class _Stats:
    def __init__(self):
        self.rows = dict.fromkeys(SPLITS, 0)
        self.positives = dict.fromkeys(SPLITS, 0.0)
        self.skipped: dict = {}
        self.dropped: dict = {}
        self.raw_rows = 0

    def add(self, d: dict, path: str, k) -> None:
        if k:
            d[path] = d.get(path, 0) + int(k)


class _State:
    """Everything pass 1 accumulates: global raw dictionaries, field encoders, the label rule, and the
    train counts (one set of arrays per thread that writes rows; summed by :meth:`total_counts`)."""

    def __init__(self, spec: SourceSpec, hashed: bool):
        need = {c.raw for c in spec.columns if not (c.kind == "categorical" and not c.transform)}
        self.raws = {LABEL: RawColumn(LABEL, need_values=True, hashed=hashed)}
        for c in spec.columns:
            if c.raw not in self.raws:
                self.raws[c.raw] = RawColumn(c.raw, need_values=c.raw in need, hashed=hashed)
        self.label = LabelColumn(self.raws[LABEL], spec.label_rule)
        self.encs = [FieldEncoder(c, self.raws[c.raw], spec.featindex if c.transform == "libfm_index" else None)
                     for c in spec.columns]
        self.offsets = np.cumsum([0] + [e.width for e in self.encs])[:-1].tolist()
        self.ncol = sum(e.width for e in self.encs)
        self.counted = [name for name in self.raws if name != LABEL]
        self.counts_by_thread: dict = {}  # thread id -> {raw column: int64 counts}

    def add_counts(self, ids: dict, sizes: dict, codes: np.ndarray) -> None:
        """Count the train rows' raw ids in this thread's arrays (no lock: each thread has its own)."""
        mine = self.counts_by_thread.setdefault(threading.get_ident(), {})
        for name in self.counted:
            c = mine[name] = _grow(mine.get(name, np.zeros(1024, np.int64)), sizes[name])
            count_where(c, ids[name], codes, _CODE["train"])

    def total_counts(self) -> None:
        """Sum the threads' counts into each RawColumn's ``counts`` (what the vocabulary rules read)."""
        for name in self.counted:
            raw = self.raws[name]
            raw.counts = np.zeros(raw.n, np.int64)
            for mine in self.counts_by_thread.values():
                c = mine.get(name)
                if c is not None:
                    m = min(c.shape[0], raw.n)
                    raw.counts[:m] += c[:m]


class _Admitted(NamedTuple):
    ids: dict  # raw column -> raw ids of the kept rows
    sizes: dict  # raw column -> dictionary size after this block (bounds the ids)
    y: np.ndarray
    codes: np.ndarray  # split code per kept row
    lines: np.ndarray | None  # 1-based raw-file line per kept row (spec.keep_lines only)
    starts: dict  # split -> first output row reserved for this block


def _raise_malformed(block: Block) -> None:
    """The malformed row that ended ``block`` (on_bad_rows="error"), raised once the block's own rows
    are validated: every row before it is, so no earlier bad row of another kind is left unreported."""
    if block.error:
        raise DataFormatError(block.error)


def _admit(spec: SourceSpec, role: str, block: Block, state: _State, st: _Stats, out: IdFiles) -> _Admitted | None:
    """The in-order part of a block: register its values (hash-table lookups, new values), validate
    labels and values (the first bad row in file order raises), split the kept rows and reserve their
    output rows. O(new values) Python work; the per-row work is vectorized."""
    n = len(block)
    st.raw_rows += n + block.skipped
    st.add(st.skipped, block.path, block.skipped)
    if n == 0:
        _raise_malformed(block)
        return None
    ids = ingest_all(state.raws, block.columns)
    state.label.sync()
    for enc in state.encs:
        enc.sync()
    bad = None
    sources = [(ids[LABEL], state.label.bad, state.label.bad_mask)] if state.label.bad else []
    sources += [(ids[e.spec.raw], e.bad, e.bad_mask) for e in state.encs if e.bad]
    problems = []
    for col_ids, messages, mask in sources:
        rows = mask[col_ids]
        if rows.any():
            first = int(np.argmax(rows))
            problems.append((first, messages[int(col_ids[first])]))
            bad = rows if bad is None else (bad | rows)
    if problems:
        if spec.on_bad_rows != "skip":
            row, msg = min(problems, key=lambda p: p[0])
            raise DataFormatError(f"{block.path}:{int(block.line_numbers[row])}: {msg}")
        st.add(st.skipped, block.path, bad.sum())
    _raise_malformed(block)
    y = state.label.lut[ids[LABEL]]
    drop = y == DROP
    if bad is not None:
        drop &= ~bad
    st.add(st.dropped, block.path, drop.sum())
    if bad is not None:
        drop |= bad
    keep = np.flatnonzero(~drop) if drop.any() else None
    if keep is not None:
        ids = {k: v[keep] for k, v in ids.items()}
        y = y[keep]
        row_index = block.row_index[keep]
    else:
        row_index = block.row_index
    lines = None
    if spec.keep_lines:
        lines = block.line_numbers if keep is None else block.line_numbers[keep]
    codes = _split_codes(spec, role, row_index)
    sizes = {}
    for s, code in _CODE.items():
        sel = codes == code
        sizes[s] = int(sel.sum())
        st.positives[s] += float(y[sel].sum())
    return _Admitted(ids, {name: state.raws[name].n for name in state.counted}, y, codes, lines, out.reserve(sizes))


def _emit(state: _State, out: IdFiles, a: _Admitted | None) -> None:
    """The part of a block that may run beside other blocks: assemble the rows' pass-1 ids (rows
    grouped by split, file order kept within a split), count the train rows, write each split's rows
    at the offsets reserved by :func:`_admit`."""
    if a is None:
        return
    ids, y, codes, lines = a.ids, a.y, a.codes, a.lines
    m = y.shape[0]
    if (codes == _CODE["train"]).any():
        state.add_counts(ids, a.sizes, codes)
    one_split = m == 0 or bool((codes == codes[0]).all())
    order = None if one_split else np.argsort(codes, kind="stable")
    x = np.empty((m, state.ncol), np.int32)
    narrow = [(enc, off) for enc, off in zip(state.encs, state.offsets) if enc.width == 1]
    src = np.empty((len(narrow), m), np.int32)  # row j: field j's pass-1 ids, to become a column of x
    for j, (enc, _) in enumerate(narrow):
        col = ids[enc.spec.raw]
        if enc.identity:
            src[j] = col
        else:
            np.take(enc.raw2pid, col, out=src[j])
    scatter_columns(src, np.array([off for _, off in narrow], np.int64), order, x)
    for enc, off in zip(state.encs, state.offsets):
        if enc.width > 1:
            seq = enc.encode(ids[enc.spec.raw])
            x[:, off : off + enc.width] = seq if order is None else seq[order]
    if one_split:
        if m:
            out.write(SPLITS[codes[0]], a.starts[SPLITS[codes[0]]], x, y, lines)
        return
    y = y[order]
    if lines is not None:
        lines = lines[order]
    bounds = np.searchsorted(codes[order], np.arange(len(SPLITS) + 1))
    for s, code in _CODE.items():
        lo, hi = bounds[code], bounds[code + 1]
        if hi > lo:
            out.write(s, a.starts[s], x[lo:hi], y[lo:hi], None if lines is None else lines[lo:hi])


def _release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so peak RSS is not the sum of the
    count pass's block buffers and the vocabulary's temporaries; a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def build_cache(spec: SourceSpec, cache_root: str | os.PathLike, *, log=print, hashed: bool = False) -> Path:
    """Build (or reuse) the cache for ``spec`` under ``cache_root``; returns its directory.

    ``hashed``: global dictionaries as compiled hash tables over value keys (the fast engines) instead
    of Python dicts; the cache is the same either way."""
    final = Path(cache_root) / f"{spec.dataset_id}-{spec.key()}"
    if (final / "feature_map.json").exists():
        return final
    # The build makes no reference cycles worth collecting, but allocates enough for the cyclic GC
    # to walk every object of the process (JAX, numba) again and again: ≈ 4% of its CPU time.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _build(spec, final, log, hashed)
    finally:
        if gc_was_enabled:
            gc.enable()


def _rows_bar(desc: str):
    """The rows read so far and their rate, on a terminal only (the file's row count is not known before
    it is read): a build of a large raw file shows it is alive."""
    from tqdm.auto import tqdm

    return tqdm(desc=desc, unit=" rows", unit_scale=True, leave=False, disable=None)


def _build(spec: SourceSpec, final: Path, log, hashed: bool) -> Path:
    t0 = time.perf_counter()
    log(f"[data] preprocessing {spec.dataset_id} into {final}")
    state = _State(spec, hashed)
    encs, ncol = state.encs, state.ncol
    st = _Stats()
    with building(final, log=log) as tmp:
        out = IdFiles(tmp, ncol, lines=spec.keep_lines)
        try:
            for role, path in spec.files:
                if not path:
                    continue
                admit = functools.partial(_admit, spec, role, state=state, st=st, out=out)
                emit = functools.partial(_emit, state, out)
                hooked = getattr(spec.reader, "takes_hooks", False)  # fast engines: admit in order, emit in parallel
                before = st.raw_rows
                blocks = spec.reader(path, admit=admit, emit=emit) if hooked else spec.reader(path)
                # on an error, stop the reader (and its threads) now, in this thread, not later in the GC
                with contextlib.closing(blocks) if hasattr(blocks, "close") else contextlib.nullcontext(), \
                        _rows_bar(f"reading {role} {Path(path).name}") as bar:
                    for block in blocks:
                        if not hooked:
                            emit(admit(block))
                        bar.update(st.raw_rows - before - bar.n)
        finally:
            out.close()
        st.rows = dict(out.rows)
        state.total_counts()
        _release_free_memory()  # the blocks are gone: give their heap pages back before the vocabulary is built
        t1 = time.perf_counter()
        why = "".join(f"; {what}: {d}" for what, d in (("skipped as malformed (on_bad_rows='skip')", st.skipped),
                                                      ("dropped by the label rule", st.dropped)) if d)
        if st.rows["train"] == 0 and spec.vocab is None:
            read = ", ".join(f"{role} {path}" for role, path in spec.files if path)
            raise ValueError(f"{spec.dataset_id}: the train split is empty (files read: {read}{why})")
        for role, path in spec.files:  # a configured file that yields nothing must not silently drop its split
            if path and role != "train" and st.rows[role] == 0:
                raise EmptySplitError(f"{spec.dataset_id}: the {role} file {path} gave no rows{why}; fix it or leave "
                                      f"data.files.{role} out", role=role, why=why)
        vocabs, tables = [], []
        for c, e in zip(spec.columns, encs):
            v, tab = e.finalize() if spec.vocab is None else e.finalize_pinned(spec.vocab[c.name])
            vocabs.append(v)
            tables.append(tab)
        fields = tuple(
            FieldSpec(name=c.name, type="sequence" if c.kind == "sequence" else "categorical",
                      vocab_size=len(v) + 2, max_len=e.width, source=c.kind)
            for c, e, v in zip(spec.columns, encs, vocabs)
        )
        starts = np.cumsum([0] + [t.shape[0] for t in tables])[:-1]
        col_offsets = np.repeat(starts, [e.width for e in encs]).astype(np.int32)
        lut = np.concatenate(tables).astype(np.int32)
        step = max(1, (16 << 20) // (4 * ncol))
        for s in SPLITS:
            if st.rows[s]:
                remap_in_place(tmp / f"{s}_x.npy", ncol, col_offsets, lut, step)
            else:
                for k in ("x", "y", "line"):
                    (tmp / f"{s}_{k}.npy").unlink(missing_ok=True)
        t2 = time.perf_counter()
        vocab_text = vocab_json({c.name: v for c, v in zip(spec.columns, vocabs)}).encode()
        fmap = FeatureMap(
            dataset_id=spec.dataset_id,
            fields=fields,
            num_rows={s: st.rows[s] for s in SPLITS if st.rows[s]},
            positive_rate={s: st.positives[s] / st.rows[s] for s in SPLITS if st.rows[s]},
            skipped_rows=dict(st.skipped),
            info={"files": {r: p for r, p in spec.files if p}, "split": spec.split, "cache_key": spec.key(),
                  "label_rule": spec.label_rule.describe(), "dropped_by_label_rule": dict(st.dropped),
                  "raw_rows": st.raw_rows, "vocab_sha256": vocab_sha256(vocab_text)},
        )
        (tmp / "vocab.json").write_bytes(vocab_text)
        (tmp / "build.json").write_text(json.dumps({"count_pass_s": t1 - t0, "encode_pass_s": t2 - t1,
                                                    "raw_rows": st.raw_rows, "distinct_values": {k: r.n for k, r in state.raws.items() if k != LABEL}}))
        checksums.write(tmp)
        fmap.save(tmp / "feature_map.json")
    extra = ""
    if st.skipped:
        extra += f", skipped bad rows {dict(st.skipped)}"
    if st.dropped:
        extra += f", dropped by the label rule {dict(st.dropped)}"
    log(f"[data] {spec.dataset_id}: rows {fmap.num_rows}, {fmap.total_vocab:,} embedding rows, "
        f"{time.perf_counter() - t0:.1f}s (count {t1 - t0:.1f}s, encode {t2 - t1:.1f}s){extra}")
    return final
