"""Columnar engine (optional ``preprocess`` extra: polars) for large delimited and libFM files.

The file is cut into byte blocks at line ends, so the first line number of every block is known.
Worker threads parse blocks with polars' CSV reader (Rust, GIL released) into String columns; the
preprocessing driver then maps each column to global ids through a polars ``Categories`` per raw
column (a Rust hash table), so no Python code runs per row. Blocks come back in file order.

A block the fast path cannot take exactly — wrong column count, an empty line, a stray CR, a quote
character in a quoted CSV, undecodable bytes, a non-UTF-8 encoding — is re-parsed by the plain
Python engine, which reports the exact file and line (or skips and counts the row with
``on_bad_rows="skip"``). Both engines give byte-identical caches and the same errors.
"""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Callable, Iterator, Sequence

import numpy as np

from kdef_jax.data.schema import Block, DataFormatError, open_raw

try:  # optional extra
    import polars as pl
except ImportError:  # pragma: no cover - exercised when the extra is absent
    pl = None

BLOCK_BYTES = 16 << 20


def available() -> bool:
    return pl is not None


def iter_byte_blocks(path: str, block_bytes: int = BLOCK_BYTES, header_lines: int = 0) -> Iterator[tuple]:
    """Yield (bytes ending in a newline, first line number, number of lines)."""
    with open_raw(path) as fh:
        line = 1
        for _ in range(header_lines):
            fh.readline()
            line += 1
        rest = b""
        while True:
            chunk = fh.read(block_bytes)
            if not chunk:
                if rest:
                    yield rest + b"\n", line, 1 + rest.count(b"\n")
                return
            buf = rest + chunk if rest else chunk
            cut = buf.rfind(b"\n")
            if cut < 0:
                rest = buf
                continue
            block, rest = buf[: cut + 1], buf[cut + 1 :]
            n = block.count(b"\n")
            yield block, line, n
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
    def __init__(self, path, names, wanted, keys, delimiter, quotechar, header_lines, encoding):
        self.path, self.keys, self.header_lines = path, list(keys), header_lines
        self.cols = [list(names).index(c) for c in wanted]
        self.ncol, self.delimiter, self.quotechar = len(names), delimiter, quotechar
        self.dbytes = delimiter.encode()
        self.ok = encoding.lower().replace("_", "-") in ("utf-8", "utf8") and len(self.dbytes) == 1
        self.by_space = delimiter == " "

    def __call__(self, block: bytes, first_line: int, n_lines: int) -> Block | None:
        if not self.ok or block.startswith(b"\n") or b"\n\n" in block:
            return None
        if b"\r" in block and (block.startswith(b"\r\n") or b"\n\r\n" in block or block.count(b"\r") != block.count(b"\r\n")):
            return None
        if self.quotechar and self.quotechar.encode() in block:
            return None
        if block.count(self.dbytes) != (self.ncol - 1) * n_lines:  # every line has exactly ncol fields
            return None
        if self.by_space and (b"  " in block or b" \n" in block or b" \r" in block or b"\n " in block or block.startswith(b" ")):
            return None
        try:
            df = pl.read_csv(block, has_header=False, separator=self.delimiter, quote_char=None, columns=self.cols,
                             infer_schema=False, empty_string_is_null=False, eol_char="\n", raise_if_empty=False)
        except Exception:  # noqa: BLE001 - polars raises several kinds; the slow path reports precisely
            return None
        if df.height != n_lines or df.width != len(self.cols):
            return None
        if set(df.columns) == {f"column_{c}" for c in self.cols}:  # polars names a selected column by its index
            series = {key: df.get_column(f"column_{c}") for key, c in zip(self.keys, self.cols)}
        else:
            series = {key: df.to_series(k) for k, key in enumerate(self.keys)}
        if b"\r" in block:
            series = {k: s.str.strip_suffix("\r") for k, s in series.items()}
        lines = np.arange(first_line, first_line + n_lines, dtype=np.int64)
        return Block(self.path, lines, lines - 1 - self.header_lines, series, 0)


def read_blocks(path: str, *, names: Sequence[str], wanted: Sequence[str], keys: Sequence[str], delimiter: str,
                slow: Callable[[list, int], Block], quotechar: str = "", header_lines: int = 0,
                encoding: str = "utf-8", on_bad_rows: str = "error", block_bytes: int = BLOCK_BYTES,
                threads: int = 2) -> Iterator[Block]:
    """Blocks of ``path`` with the raw columns ``wanted`` stored under ``keys``.

    ``slow(lines, first_line)`` is the plain-Python parser of a list of decoded lines (None =
    undecodable), used for any block the fast path declines.
    """
    if pl is None:
        raise ImportError("the columnar engine needs polars: pip install 'kdef-jax[preprocess]'")
    fast = _Fast(path, names, wanted, keys, delimiter, quotechar, header_lines, encoding)

    def work(item):
        block, first, n = item
        out = fast(block, first, n)
        if out is None:
            out = slow(decode_lines(block, encoding, path, first, on_bad_rows), first)
        return out

    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        pending: collections.deque = collections.deque()
        try:
            for item in iter_byte_blocks(path, block_bytes, header_lines):
                pending.append(pool.submit(work, item))
                if len(pending) > threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
