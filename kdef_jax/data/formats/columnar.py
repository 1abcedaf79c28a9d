"""Fast engines (optional ``preprocess`` extra) for large delimited and libFM files.

The file is cut into byte blocks at line ends, so the first line number of every block is known.
Worker threads turn a block into one :class:`~kdef_jax.data.hash_ids.Cells` per wanted column:
the byte range of every value and its 96-bit key. Two parsers do that:

* ``native`` (default): one compiled pass over the bytes (numba, GIL released) splits the lines at
  the delimiter and hashes every field as it goes — about 3× cheaper than the CSV parser below;
* ``columnar``: polars' CSV reader (Rust) parses the block into String columns, which are then
  packed and hashed.

The driver maps the keys to global ids in a hash table per raw column
(:class:`~kdef_jax.data.hash_ids.HashIds`), so no Python code runs per row. Blocks come back in
file order. Both parsers take only *plain* blocks: every line has exactly the schema's number of
fields, no empty line, no quote character of a quoted CSV, no stray CR, valid UTF-8. Any other
block — and every block of a non-UTF-8 file — is re-parsed by the plain Python engine, which
reports the exact file and line (or skips and counts the row with ``on_bad_rows="skip"``). All
engines give byte-identical caches and the same errors.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from typing import Callable, Iterator, Sequence

import numpy as np

from kdef_jax.data import hash_ids
from kdef_jax.data.hash_ids import Cells
from kdef_jax.data.schema import Block, DataFormatError, open_raw

try:  # optional extra
    import polars as pl
except ImportError:  # pragma: no cover - exercised when the extra is absent
    pl = None

BLOCK_BYTES = 16 << 20


def available(parser: str = "native") -> bool:
    """Whether ``parser`` can run here: numba for both, polars too for ``columnar``."""
    return hash_ids.available() and (parser == "native" or pl is not None)


def _split_py(buf, ncol, delim, quote, no_empty, wanted, starts, ends, h1, h2):
    """One pass over ``buf`` (lines ending in \\n): split at ``delim``; for field c of line i with
    ``wanted[c] = w >= 0`` store its byte range in ``starts/ends[w, i]`` and its key (hash_ids) in
    ``h1/h2[w, i]``. Returns (lines, non-ASCII seen), or (-1 - i, ...) when line i is not plain: not
    exactly ``ncol`` fields, empty, holding ``quote`` (>= 0), an empty field when ``no_empty``
    (space-separated files), or a CR not followed by LF (lines may end in CRLF; the CR is not data)."""
    line, c, fs, high = 0, 0, 0, 0
    a, b = hash_ids._FNV_OFFSET, hash_ids._OFFSET_2
    w, sh = np.uint64(0), np.uint64(0)
    nbytes = buf.shape[0]
    for p in range(nbytes):
        ch = buf[p]
        if ch == delim or ch == 10:
            fe = p
            if ch == 10 and p > 0 and buf[p - 1] == 13:
                fe = p - 1
            if c >= ncol or (no_empty and fe == fs):
                return -1 - line, high
            k = wanted[c]
            if k >= 0:  # the same arithmetic as hash_ids._hash_bytes_py, fused into the scan
                if sh:
                    a = (a ^ w) * hash_ids._FNV_PRIME
                    b = (b ^ w) * hash_ids._PRIME_2
                starts[k, line] = fs
                ends[k, line] = fe
                n = np.uint64(fe - fs)
                h1[k, line] = hash_ids._fmix(a ^ n)
                h2[k, line] = hash_ids._fmix(b + n * hash_ids._GOLDEN)
            a, b = hash_ids._FNV_OFFSET, hash_ids._OFFSET_2
            w, sh = np.uint64(0), np.uint64(0)
            if ch == 10:
                if c != ncol - 1 or (c == 0 and fe == fs):
                    return -1 - line, high
                line += 1
                c = 0
            else:
                c += 1
            fs = p + 1
        elif ch == 13:
            if p + 1 >= nbytes or buf[p + 1] != 10:
                return -1 - line, high
        else:
            if ch == quote:
                return -1 - line, high
            high |= ch
            w |= np.uint64(ch) << sh
            sh += np.uint64(8)
            if sh == np.uint64(64):
                a = (a ^ w) * hash_ids._FNV_PRIME
                b = (b ^ w) * hash_ids._PRIME_2
                w, sh = np.uint64(0), np.uint64(0)
    return line, high >= 128


_split = hash_ids._jit(_split_py)


def iter_byte_blocks(path: str, block_bytes: int = BLOCK_BYTES, header_lines: int = 0) -> Iterator[tuple]:
    """Yield (bytearray ending in a newline, first line number, number of lines); each block is read
    straight into its own buffer (no copies but the partial last line carried to the next)."""
    with open_raw(path) as fh:
        line = 1
        for _ in range(header_lines):
            fh.readline()
            line += 1
        rest = b""
        while True:
            buf = bytearray(len(rest) + block_bytes)
            buf[: len(rest)] = rest
            got = fh.readinto(memoryview(buf)[len(rest) :])
            if not got:
                if rest:
                    yield bytearray(rest + b"\n"), line, 1 + rest.count(b"\n")
                return
            end = len(rest) + got
            cut = buf.rfind(b"\n", 0, end)
            if cut < 0:
                rest = bytes(buf[:end])
                continue
            rest = bytes(buf[cut + 1 : end])
            del buf[cut + 1 :]
            n = buf.count(b"\n")
            yield buf, line, n
            line += n


def decode_lines(block: bytes, encoding: str, path: str, first_line: int, on_bad_rows: str) -> list:
    out = []
    for k, raw in enumerate(block.split(b"\n")[:-1]):
        try:
            out.append(raw.decode(encoding))
        except UnicodeDecodeError as e:
            if on_bad_rows != "skip":
                raise DataFormatError(f"{path}:{first_line + k}: undecodable bytes ({e.reason}); the file is not {encoding}") from None
            out.append(None)
    return out


class _Fast:
    """Parse one plain block into {key: Cells}, or return None for the plain-Python engine."""

    def __init__(self, path, names, wanted, keys, delimiter, quotechar, header_lines, encoding, parser):
        self.path, self.keys, self.header_lines, self.parser = path, list(keys), header_lines, parser
        self.cols = [list(names).index(c) for c in wanted]
        self.ncol, self.delimiter, self.quotechar = len(names), delimiter, quotechar
        self.dbytes = delimiter.encode()
        self.ok = encoding.lower().replace("_", "-") in ("utf-8", "utf8") and len(self.dbytes) == 1
        self.by_space = delimiter == " "
        self.quote = ord(quotechar) if quotechar else -1
        self.wanted = np.full(self.ncol, -1, np.int64)
        self.wanted[self.cols] = np.arange(len(self.cols))

    def plain(self, block: bytes, n_lines: int) -> bool:
        """The native parser's checks, for the polars parser."""
        if block.startswith(b"\n") or b"\n\n" in block:
            return False
        if b"\r" in block and (block.startswith(b"\r\n") or b"\n\r\n" in block or block.count(b"\r") != block.count(b"\r\n")):
            return False
        if self.quotechar and self.quotechar.encode() in block:
            return False
        if block.count(self.dbytes) != (self.ncol - 1) * n_lines:  # every line has exactly ncol fields
            return False
        if self.by_space and (b"  " in block or b" \n" in block or b" \r" in block or b"\n " in block or block.startswith(b" ")):
            return False
        if not block.isascii():
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                return False
        return True

    def __call__(self, block: bytes, first_line: int, n_lines: int) -> Block | None:
        if not self.ok:
            return None
        if self.parser == "native":
            cells = self._native(block, n_lines)
        else:
            cells = self._polars(block, n_lines) if self.plain(block, n_lines) else None
        if cells is None:
            return None
        lines = np.arange(first_line, first_line + n_lines, dtype=np.int64)
        return Block(self.path, lines, lines - 1 - self.header_lines, dict(zip(self.keys, cells)), 0)

    def _native(self, block: bytes, n_lines: int) -> list | None:
        buf = np.frombuffer(block, np.uint8)
        w = len(self.cols)
        starts, ends = np.empty((w, n_lines), np.int32), np.empty((w, n_lines), np.int32)
        h1, h2 = np.empty((w, n_lines), np.uint64), np.empty((w, n_lines), np.uint64)
        got, high = _split(buf, self.ncol, self.dbytes[0], self.quote, self.by_space, self.wanted, starts, ends, h1, h2)
        if got != n_lines:
            return None
        if high:
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                return None
        return [Cells(buf, starts[k], ends[k], h1[k], h2[k]) for k in range(w)]

    def _polars(self, block: bytes, n_lines: int) -> list | None:
        try:
            df = pl.read_csv(bytes(block), has_header=False, separator=self.delimiter, quote_char=None, columns=self.cols,
                             infer_schema=False, empty_string_is_null=False, eol_char="\n", raise_if_empty=False)
        except Exception:  # noqa: BLE001 - polars raises several kinds; the slow path reports precisely
            return None
        if df.height != n_lines or df.width != len(self.cols):
            return None
        if set(df.columns) == {f"column_{c}" for c in self.cols}:  # polars names a selected column by its index
            series = [df.get_column(f"column_{c}") for c in self.cols]
        else:
            series = [df.to_series(k) for k in range(len(self.cols))]
        if b"\r" in block:
            series = [s.str.strip_suffix("\r") for s in series]
        return [Cells.from_bytes(s.str.join("").item().encode("utf-8"), s.str.len_bytes().to_numpy().astype(np.int64))
                for s in series]


_WARM: set = set()


def warm_up(parser: str) -> None:
    """Compile every kernel a build uses, here in the calling thread, once per process: numba must not
    compile inside the worker threads (that holds the GIL for seconds and has deadlocked)."""
    if parser in _WARM:
        return
    fast = _Fast("<warm-up>", ("a", "b"), ("a", "b"), ("a", "b"), "\t", "", 0, "utf-8", parser)
    block = fast(b"x\ty\nz\tw\n", 1, 2)
    ids = hash_ids.HashIds(16)
    for col in block.columns.values():
        got = ids(col.h1, col.h2)
        col.pack(hash_ids.first_rows(got, 0))
    many = Cells.from_strings([str(i) for i in range(40)])  # int64 ranges; grows the table (rehash)
    many.pack(np.flatnonzero(ids(many.h1, many.h2) >= 0))
    _WARM.add(parser)


def read_blocks(path: str, *, names: Sequence[str], wanted: Sequence[str], keys: Sequence[str], delimiter: str,
                slow: Callable[[list, int], Block], quotechar: str = "", header_lines: int = 0,
                encoding: str = "utf-8", on_bad_rows: str = "error", block_bytes: int | None = None,
                threads: int = 2, parser: str = "native", probe: Callable[[Block], Block] | None = None) -> Iterator[Block]:
    """Blocks of ``path`` with the raw columns ``wanted`` stored under ``keys``.

    ``slow(lines, first_line)`` is the plain-Python parser of a list of decoded lines (None =
    undecodable), used for any block the fast path declines. ``probe(block)``, if given, runs in the
    worker threads on every block, one block at a time in file order (the hash-table lookups).
    """
    if not available(parser):
        raise ImportError(f"the {parser} engine needs the 'preprocess' extra (numba, polars): pip install 'kdef-jax[preprocess]'")
    fast = _Fast(path, names, wanted, keys, delimiter, quotechar, header_lines, encoding, parser)
    block_bytes = block_bytes or BLOCK_BYTES
    warm_up(parser)

    turn = threading.Condition()
    done, closed = [0], [False]  # blocks probed so far; the consumer has stopped

    def work(k, item):
        block, first, n = item
        try:
            out = fast(block, first, n)
            if out is None:
                out = slow(decode_lines(block, encoding, path, first, on_bad_rows), first)
            if probe is not None:
                with turn:
                    turn.wait_for(lambda: done[0] == k or closed[0])
                out = None if closed[0] else probe(out)
            return out
        finally:
            with turn:
                turn.wait_for(lambda: done[0] >= k or closed[0])
                done[0] = max(done[0], k + 1)
                turn.notify_all()

    pool = concurrent.futures.ThreadPoolExecutor(max(1, threads))
    pending: collections.deque = collections.deque()
    try:
        for k, item in enumerate(iter_byte_blocks(path, block_bytes, header_lines)):
            pending.append(pool.submit(work, k, item))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # may run in any thread (a generator dropped mid-way is closed by the GC): never join here
        with turn:
            closed[0] = True
            turn.notify_all()
        pool.shutdown(wait=False, cancel_futures=True)
