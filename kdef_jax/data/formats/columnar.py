"""Fast engines (optional ``preprocess`` extra) for large delimited and libFM files.

The file is mapped into memory and cut into blocks of whole lines (:func:`iter_chunks`; no copy,
and each block's pages are given back once it is done, so resident memory stays flat); a compressed
file is decompressed by the driver thread into a buffer per block instead. Worker
threads turn a block into one :class:`~kdef_jax.data.hash_ids.Cells` per wanted column — the key
of every value (:mod:`~kdef_jax.data.hash_ids`). Two parsers do that:

* ``native`` (default): one compiled pass (numba, GIL released; :mod:`.split_kernels`) splits the lines and computes the
  keys as it goes, 8 bytes at a time (bit tricks find delimiters and newlines in a whole word; a
  value of ≤ 8 bytes is read as one word and is its own key); blocks with CR or quote characters
  take a byte-by-byte pass with the same results. About 5× cheaper than the CSV parser below;
* ``columnar``: polars' CSV reader (Rust) parses the block into String columns, which are then
  packed and hashed.

Then the workers take turns in file order (:func:`read_blocks`): the block gets its line numbers
and its keys are mapped to global ids in a hash table per raw column
(:class:`~kdef_jax.data.hash_ids.HashIds`, first seen first), and out of turn they assemble and
write the rows, so no Python code runs per row and the driver thread only cuts the file. Both
parsers take only *plain* blocks: every line has exactly the schema's number of fields, no empty
line, no quote character of a quoted CSV, no stray CR, valid UTF-8. Any other block — and every
block of a non-UTF-8 file — is re-parsed by the plain Python engine, which reports the exact file
and line (or skips and counts the row with ``on_bad_rows="skip"``). All engines give
byte-identical caches and the same errors.
"""

from __future__ import annotations

import codecs
import collections
import concurrent.futures
import io
import mmap
import os
import re
import threading
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

from kdef_jax.data import hash_ids
from kdef_jax.data.formats.split_kernels import NOT_WORDS, LineCells, count_lines, has_control_byte, split, split_words
from kdef_jax.data.hash_ids import Cells
from kdef_jax.data.schema import READ_BYTES, Block, DataFormatError, Undecodable, open_raw

try:  # optional extra
    import polars as pl
except ImportError:  # pragma: no cover - exercised when the extra is absent
    pl = None

BLOCK_BYTES = 8 << 20
# Whitespace other than the space, LF and CR, which str.split() (the Python libFM reader) also splits at:
# a libFM block holding any goes to the Python engine, so every engine reads it alike.
_ASCII_SPACES = (b"\t", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x1f")
_UNICODE_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")  # str.isspace() >= 0x80


def available(parser: str = "native") -> bool:
    """Whether ``parser`` can run here: numba for both, polars too for ``columnar``."""
    return hash_ids.available() and (parser == "native" or pl is not None)


class Chunk(NamedTuple):
    """Whole lines ``data[lo:hi]`` (the last byte a newline) of a uint8 array: the memory-mapped file
    (no copy), or a buffer of its own."""

    data: np.ndarray
    lo: int
    hi: int
    mapped: object = None  # the mmap.mmap that ``data`` views, if any

    @classmethod
    def of(cls, block) -> "Chunk":
        if isinstance(block, Chunk):
            return block
        data = np.frombuffer(block, np.uint8)
        return cls(data, 0, data.shape[0])

    def tobytes(self) -> bytes:
        return self.data[self.lo : self.hi].tobytes()

    def release_before(self, start: int = 0) -> int:
        """Unmap the file's pages from ``start`` (page-aligned) to ``hi`` from this process (they stay
        in the page cache), so its resident memory does not grow with the file: call once every byte
        before ``hi`` has been used. Returns where the next call should start."""
        end = self.hi - self.hi % mmap.PAGESIZE
        if self.mapped is None or end <= start:
            return start
        self.mapped.madvise(mmap.MADV_DONTNEED, start, end - start)
        return end


def iter_chunks(path: str, block_bytes: int = BLOCK_BYTES, header_lines: int = 0) -> Iterator[Chunk]:
    """Chunks of about ``block_bytes`` of whole lines after ``header_lines`` lines, views of the file
    mapped into memory (the page cache, not copied; a compressed file or a pipe: buffers read from it);
    a last line without a newline gets one in a buffer of its own. Lines are counted by the consumers (in worker threads), not here."""
    with open_raw(path) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
        except io.UnsupportedOperation:  # a compressed file, read decompressed
            size = 0
        mm = None
        if size and hasattr(mmap, "MADV_DONTNEED"):  # else no way to give mapped pages back
            try:
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):  # a pipe, a file system without mmap
                pass
        if mm is None:
            yield from _read_chunks(fh, block_bytes, header_lines)
            return
    data = np.frombuffer(mm, np.uint8)  # keeps the mapping alive as long as a chunk of it lives
    pos = 0
    for _ in range(header_lines):
        nl = mm.find(b"\n", pos)
        pos = size if nl < 0 else nl + 1
    page = mmap.PAGESIZE
    while pos < size:
        end = min(size, pos + block_bytes)
        # a file not yet in the page cache: read this block and the next ahead, in the background
        # (page faults alone would read it in small synchronous pieces, several times slower)
        ahead = pos - pos % page
        mm.madvise(mmap.MADV_WILLNEED, ahead, min(size, pos + 4 * block_bytes) - ahead)
        cut = mm.rfind(b"\n", pos, end) if end < size else size - 1
        if cut < 0:  # a line longer than a block
            cut = mm.find(b"\n", end)
            cut = size - 1 if cut < 0 else cut
        if data[cut] != 10:  # the file's last line has no newline
            yield Chunk.of(bytearray(mm[pos:size]) + b"\n")
            return
        yield Chunk(data, pos, cut + 1, mm)
        pos = cut + 1


def _read_chunks(fh, block_bytes: int, header_lines: int) -> Iterator[Chunk]:
    """:func:`iter_chunks` with reads into a buffer per chunk (where pages cannot be unmapped). Reads go
    one raw read at a time (``readinto1``), so the text before damaged compressed data is all in the
    buffer when its error comes: its whole lines are yielded first, as the Python engine reads them."""
    for _ in range(header_lines):
        fh.readline()
    rest = b""
    while True:
        buf = bytearray(len(rest) + block_bytes)
        buf[: len(rest)] = rest
        end, view = len(rest), memoryview(buf)
        try:
            while end < len(buf):
                got = fh.readinto1(view[end : end + READ_BYTES])  # buffered text alone, then one raw read each
                if not got:
                    break
                end += got
        except DataFormatError:
            cut = buf.rfind(b"\n", 0, end)
            view.release()
            if cut >= 0:
                del buf[cut + 1 :]
                yield Chunk.of(buf)
            raise
        view.release()
        if end == len(rest):
            if rest:
                yield Chunk.of(bytearray(rest + b"\n"))
            return
        cut = buf.rfind(b"\n", 0, end)
        rest = bytes(buf[cut + 1 : end])
        if cut >= 0:
            del buf[cut + 1 :]
            yield Chunk.of(buf)


def decode_lines(block: bytes, encoding: str) -> list:
    """The block's lines, decoded; an :class:`Undecodable` for a line whose bytes are not ``encoding``."""
    out = []
    for raw in block.split(b"\n")[:-1]:
        try:
            out.append(raw.decode(encoding))
        except UnicodeDecodeError as e:
            out.append(Undecodable(e.reason, encoding))
    return out


class _Fast:
    """Parse one plain block into {key: Cells}, or return None for the plain-Python engine."""

    def __init__(self, path, names, wanted, keys, delimiter, quotechar, header_lines, encoding, parser, any_space=False):
        self.path, self.keys, self.header_lines, self.parser = path, list(keys), header_lines, parser
        self.cols = [list(names).index(c) for c in wanted]
        self.ncol, self.delimiter, self.quotechar = len(names), delimiter, quotechar
        self.dbytes = delimiter.encode()
        self.ok = encoding.lower().replace("_", "-") in ("utf-8", "utf8") and len(self.dbytes) == 1
        self.by_space = delimiter == " "
        self.any_space = self.by_space and any_space  # libFM: the Python reader splits at any whitespace
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
        if block.startswith(b"\xef\xbb\xbf"):  # polars would drop a BOM the other engines report
            return False
        if block.count(self.dbytes) != (self.ncol - 1) * n_lines:  # cheap first: the total
            return False
        raw = np.frombuffer(block, np.uint8)  # then every line has exactly ncol fields (polars would fill a
        ends = np.flatnonzero(raw == 10)      # short line with nulls when a long one balances the total)
        per_line = np.diff(np.searchsorted(np.flatnonzero(raw == self.dbytes[0]), ends), prepend=0)
        if ends.size != n_lines or (per_line != self.ncol - 1).any():
            return False
        if self.by_space and (b"  " in block or b" \n" in block or b" \r" in block or b"\n " in block or block.startswith(b" ")):
            return False
        if not block.isascii() and self._not_plain_text(block):
            return False
        return not (self.any_space and any(block.find(c) >= 0 for c in _ASCII_SPACES))

    def _not_plain_text(self, data) -> bool:
        """Non-ASCII ``data`` is not UTF-8, or (libFM) holds a whitespace character >= 0x80
        that str.split() splits at (a no-break space, ...): the Python engine reads such a block."""
        try:
            text = codecs.utf_8_decode(data, "strict", True)[0]
        except UnicodeDecodeError:
            return True
        return self.any_space and _UNICODE_SPACE.search(text) is not None

    def parse(self, block, scratch: threading.local | None = None) -> tuple[list | None, int]:
        """(one Cells per wanted column, or None when the block is not plain; number of lines) of a
        :class:`Chunk` or bytes.

        ``scratch`` (a thread-local namespace): the native parser writes into arrays kept there and
        reused by the next block of the same thread (no fresh pages to fault in per block); the
        Cells are then valid until that thread parses again."""
        chunk = Chunk.of(block)
        if self.ok and self.parser == "native":
            return self._native(chunk, scratch)
        text = chunk.tobytes()
        n = text.count(b"\n")
        if not self.ok:
            return None, n
        return (self._polars(text, n) if self.plain(text, n) else None), n

    def block(self, cells: list, first_line: int, n_lines: int) -> Block:
        lines = np.arange(first_line, first_line + n_lines, dtype=np.int64)
        return Block(self.path, lines, lines - 1 - self.header_lines, dict(zip(self.keys, cells)), 0)

    def __call__(self, block: bytes, first_line: int, n_lines: int) -> Block | None:
        """The block starting at line ``first_line``, or None for the plain-Python engine."""
        cells, n = self.parse(block)
        return None if cells is None or n != n_lines else self.block(cells, first_line, n_lines)

    def _native(self, chunk: Chunk, scratch) -> tuple[list | None, int]:
        buf, lo, hi = chunk.data, chunk.lo, chunk.hi
        n_lines = int(count_lines(buf, lo, hi))
        w = len(self.cols)
        out = getattr(scratch, "split", None)
        if out is None or out[1].shape[0] != w or out[1].shape[1] < n_lines:
            cap = n_lines if scratch is None else n_lines + n_lines // 8
            out = (np.empty(cap + 1, np.int64), np.empty((w, cap), np.uint64), np.empty((w, cap), np.uint32))
            if scratch is not None:
                scratch.split = out
        line_starts, h1, tag = out
        args = (self.ncol, self.dbytes[0], self.quote, self.by_space, self.wanted, line_starts, h1, tag)
        got = NOT_WORDS
        if buf.ctypes.data % 8 == 0:
            got, high = split_words(buf, buf[: buf.shape[0] & ~7].view(np.uint64), lo, hi, *args)
        if got == NOT_WORDS:  # CR or quote characters (or an unaligned buffer): byte by byte
            got, high = split(buf, lo, hi, *args)
        if got != n_lines:
            return None, n_lines
        if high and self._not_plain_text(memoryview(buf[lo:hi])):  # high: a byte >= 0x80 seen
            return None, n_lines
        if self.any_space and has_control_byte(buf, lo, hi):  # a tab, ...: the Python libFM reader splits there too
            return None, n_lines
        return [LineCells(buf, line_starts, self.cols[k], self.dbytes[0], h1[k, :n_lines], tag[k, :n_lines])
                for k in range(w)], n_lines

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
    ids = hash_ids.HashIds(16)
    for delimiter in ("\t", " "):  # " " with any_space: libFM's whitespace check too
        fast = _Fast("<warm-up>", ("a", "b"), ("a", "b"), ("a", "b"), delimiter, "", 0, "utf-8", parser, any_space=True)
        for text in (b"x\ty\nz\tw\n", b"x\ty\r\nz\tw\r\n"):  # the word kernel, then the byte kernel (CR)
            for writeable in (True, False):  # a buffer of its own, and a read-only memory map's view
                data = np.zeros(len(text), np.uint8)  # aligned: the word kernel takes it
                data[:] = np.frombuffer(text.replace(b"\t", delimiter.encode()), np.uint8)
                data.flags.writeable = writeable
                block = fast(Chunk(data, 0, len(text)), 1, 2)
                for col in block.columns.values():
                    got = ids(col.h1, col.tag)
                    col.pack(hash_ids.first_rows(got, 0))
    many = Cells.from_strings([str(i) for i in range(40)])  # int64 ranges; grows the table (rehash)
    got = ids(many.h1, many.tag)
    many.pack(np.flatnonzero(got >= 0))
    hash_ids.count_where(np.zeros(ids.n, np.int64), got, np.zeros(got.shape[0], np.int8), 0)
    hash_ids.scatter_columns(np.zeros((2, 3), np.int32), np.arange(2), np.arange(3), np.zeros((3, 2), np.int32))
    _WARM.add(parser)


def read_blocks(path: str, *, names: Sequence[str], wanted: Sequence[str], keys: Sequence[str], delimiter: str,
                slow: Callable[[list, int], Block], quotechar: str = "", header_lines: int = 0,
                encoding: str = "utf-8", block_bytes: int | None = None,
                threads: int = 2, parser: str = "native", admit: Callable[[Block], object] | None = None,
                emit: Callable[[object], object] | None = None, any_whitespace: bool = False) -> Iterator:
    """Blocks of ``path`` with the raw columns ``wanted`` stored under ``keys``, in file order.

    ``slow(lines, first_line)`` is the plain-Python parser of a list of decoded lines (None =
    undecodable), used for any block the fast path declines. The worker threads parse blocks in
    parallel, then take turns in file order: a block gets its line numbers, and ``admit(block)`` runs
    (what must see blocks in order: the hash-table lookups, new values, reserving output rows). Out of
    turn again, ``emit(admitted)`` runs beside the other workers (assembling and writing rows). Yields
    what ``emit`` returns (by default the admitted block); an exception of a block is raised when the
    consumer reaches that block, so the first error in file order is the one reported.
    ``any_whitespace`` (libFM): a block holding whitespace other than " " (a tab, a no-break space) goes
    to ``slow``, which splits at any whitespace as str.split() does.
    """
    if not available(parser):
        raise ImportError(f"the {parser} engine needs the 'preprocess' extra (numba, polars): pip install 'kdef-jax[preprocess]'")
    fast = _Fast(path, names, wanted, keys, delimiter, quotechar, header_lines, encoding, parser, any_whitespace)
    block_bytes = block_bytes or BLOCK_BYTES
    warm_up(parser)

    turn = threading.Condition()
    done, closed = [0], [False]  # blocks admitted so far; the consumer has stopped
    next_line = [1 + header_lines]
    released = [0]  # the mapped file's pages before this offset are given back
    scratch = threading.local() if admit is not None else None  # admit consumes the cells before the next parse

    def work(k, buf):
        try:
            cells, n = fast.parse(buf, scratch)
            with turn:
                turn.wait_for(lambda: done[0] == k or closed[0])
            if closed[0]:
                return None
            first = next_line[0]
            next_line[0] += n
            if cells is None:
                block = slow(decode_lines(buf.tobytes(), encoding), first)
            else:
                block = fast.block(cells, first, n)
            out = block if admit is None else admit(block)
            if admit is not None:  # blocks are admitted in file order: the text before this one is done
                released[0] = buf.release_before(released[0])
        finally:
            with turn:
                turn.wait_for(lambda: done[0] >= k or closed[0])
                done[0] = max(done[0], k + 1)
                turn.notify_all()
        return out if emit is None else emit(out)

    pool = concurrent.futures.ThreadPoolExecutor(max(1, threads))
    pending: collections.deque = collections.deque()
    try:
        chunks, damaged = enumerate(iter_chunks(path, block_bytes, header_lines)), None
        while True:
            try:
                k, buf = next(chunks)
            except StopIteration:
                break
            except DataFormatError as e:  # damaged compressed data: the blocks before it (and their errors) first
                damaged = e
                break
            pending.append(pool.submit(work, k, buf))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        if damaged is not None:
            raise damaged
    finally:  # may run in any thread (a generator dropped mid-way is closed by the GC): never join here
        with turn:
            closed[0] = True
            turn.notify_all()
        pool.shutdown(wait=False, cancel_futures=True)
