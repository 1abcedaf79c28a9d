"""The native parser's compiled kernels (numba via :func:`kdef_jax.data.hash_ids._jit`): split a
plain block of delimited lines into per-column keys in one pass, and find a field's bytes later.

:func:`split_words` reads the block 8 bytes at a time (bit tricks find delimiters and newlines in
a whole word; a value of ≤ 8 bytes is read as one word and is its own key); :func:`split` is the
byte-by-byte pass for blocks with CR or quote characters, with the same results. Both write each
line's keys into a small row-major tile that stays in cache and copy it to the column-major
outputs every ``_TILE`` lines. Each kernel is the numba-compiled ``*_py`` function of its name.
"""

from __future__ import annotations

import numpy as np

from kdef_jax.data import hash_ids
from kdef_jax.data.hash_ids import Cells, take

NOT_WORDS = -(1 << 40)  # split_words' answer for a block it leaves to split (CR or quote characters)
_TILE = 256  # lines of keys gathered row-major before they go to the column-major outputs


def _flush_tile_py(t1, tt, cnt, base, h1, tag):
    """Copy the keys of tile rows 0 … cnt (row-major, [line, column]) to lines base … of the
    column-major outputs: the split writes keys line by line into a tile that stays in cache."""
    for j in range(t1.shape[1]):
        for i in range(cnt):
            h1[j, base + i] = t1[i, j]
            tag[j, base + i] = tt[i, j]


_flush_tile = hash_ids._jit(_flush_tile_py)


def _next_line_py(line, base, start, line_starts, t1, tt, h1, tag):
    """A line ended and the next starts at byte ``start``: record it, flush the tile when full.
    Returns (line number of the next line, first line of the tile)."""
    line += 1
    line_starts[line] = start
    if line - base == t1.shape[0]:
        _flush_tile(t1, tt, line - base, base, h1, tag)
        base = line
    return line, base


_next_line = hash_ids._jit(_next_line_py)


def _has_control_byte_py(buf, lo, hi):
    """``buf[lo:hi]`` holds a byte below 0x20 other than LF and CR (a tab, a vertical tab, ...)."""
    for p in range(lo, hi):
        c = buf[p]
        if c < 32 and c != 10 and c != 13:
            return True
    return False


has_control_byte = hash_ids._jit(_has_control_byte_py)


def _split_py(buf, lo, hi, ncol, delim, quote, no_empty, wanted, line_starts, h1, tag):
    """One pass over ``buf[lo:hi]`` (lines ending in \\n): split at ``delim``; for field c of line i with
    ``wanted[c] = k >= 0`` store its key (hash_ids) in ``h1[k, i], tag[k, i]``, and where line i
    starts in ``line_starts[i]`` (the byte ranges of the few values that get packed are found again
    from there, :func:`_field_ranges_py`). Keys go through a small row-major tile first, so the
    writes stay in cache. Returns (lines, non-ASCII seen), or (-1 - i, ...) when line i is not plain:
    not exactly ``ncol`` fields, empty, holding ``quote`` (>= 0), an empty field when ``no_empty``
    (space-separated files), or a CR not followed by LF (lines may end in CRLF; the CR is not data)."""
    nk = h1.shape[0]
    t1 = np.empty((_TILE, nk), np.uint64)
    tt = np.empty((_TILE, nk), np.uint32)
    line, c, fs, high, base = 0, 0, lo, 0, 0
    a, b = hash_ids._FNV_OFFSET, hash_ids._OFFSET_2
    w, sh = np.uint64(0), np.uint64(0)
    line_starts[0] = lo
    for p in range(lo, hi):
        ch = buf[p]
        if ch == delim or ch == 10:
            fe = p
            if ch == 10 and p > lo and buf[p - 1] == 13:
                fe = p - 1
            if c >= ncol or (no_empty and fe == fs):
                return -1 - line, high
            k = wanted[c]
            if k >= 0:  # hash_ids._hash_bytes_py, fused into the scan
                if fe - fs <= 8:  # hash_ids._finish_py, written out: a call here costs 20% of the pass
                    t1[line - base, k] = w
                    tt[line - base, k] = np.uint32(fe - fs)
                else:
                    a = (a ^ w) * hash_ids._FNV_PRIME
                    b = (b ^ w) * hash_ids._PRIME_2
                    m = np.uint64(fe - fs)
                    t1[line - base, k] = hash_ids._fmix(a ^ m)
                    tt[line - base, k] = np.uint32((hash_ids._fmix(b + m * hash_ids._GOLDEN) >> hash_ids._S32) | hash_ids._LONG)
            a, b = hash_ids._FNV_OFFSET, hash_ids._OFFSET_2
            w, sh = np.uint64(0), np.uint64(0)
            if ch == 10:
                if c != ncol - 1 or (c == 0 and fe == fs):
                    return -1 - line, high
                line, base = _next_line(line, base, p + 1, line_starts, t1, tt, h1, tag)
                c = 0
            else:
                c += 1
            fs = p + 1
        elif ch == 13:
            if p + 1 >= hi or buf[p + 1] != 10:
                return -1 - line, high
        else:
            if ch == quote:
                return -1 - line, high
            high |= ch
            if sh == np.uint64(64):
                a = (a ^ w) * hash_ids._FNV_PRIME
                b = (b ^ w) * hash_ids._PRIME_2
                w, sh = np.uint64(0), np.uint64(0)
            w |= np.uint64(ch) << sh
            sh += np.uint64(8)
    _flush_tile(t1, tt, line - base, base, h1, tag)
    return line, high >= 128


_ONES, _LOW7 = np.uint64(0x0101010101010101), np.uint64(0x7F7F7F7F7F7F7F7F)
_BYTE_INDEX = np.uint64(0x0001020304050607)  # (bit 8j of a one-bit word) × this → j in the top byte


def _split_words_py(buf, words, lo, hi, ncol, delim, quote, no_empty, wanted, line_starts, h1, tag):
    """:func:`_split_py` on 8 bytes at a time (``words``: ``buf`` viewed as uint64, 8-aligned), for
    blocks without CR or quote characters (returns (-2⁴⁰, False) on the first one, and the caller
    uses :func:`_split_py`). Delimiters and newlines are found with bit tricks on whole words (a
    byte b of x is zero iff bit 7 of ~(((x & 0x7F…) + 0x7F…) | x | 0x7F…) is set), and a value of
    ≤ 8 bytes is read as one word, without a loop over its bytes. Same keys, same checks."""
    nk = h1.shape[0]
    t1 = np.empty((_TILE, nk), np.uint64)
    tt = np.empty((_TILE, nk), np.uint32)
    dl, nl = _ONES * np.uint64(delim), _ONES * np.uint64(10)
    cr, qu = _ONES * np.uint64(13), _ONES * np.uint64(quote if quote >= 0 else 13)
    line, c, fs, base = 0, 0, lo, 0
    high = np.uint64(0)
    nw = words.shape[0]
    line_starts[0] = lo
    last = (hi - 1) >> 3
    for q in range(lo >> 3, last + 1):
        if q < nw:
            x = words[q]
        else:  # past the last whole word of buf: zero-padded
            x = np.uint64(0)
            for i in range(hi - q * 8):
                x |= np.uint64(buf[q * 8 + i]) << np.uint64(8 * i)
        if q == lo >> 3:  # bytes before lo belong to the previous block: zero them
            x &= ~((np.uint64(1) << np.uint64(8 * (lo & 7))) - np.uint64(1))
        if q == last and hi & 7:  # and so do bytes from hi on
            x &= (np.uint64(1) << np.uint64(8 * (hi & 7))) - np.uint64(1)
        high |= x
        y = x ^ cr
        z = x ^ qu
        if (~(((y & _LOW7) + _LOW7) | y | _LOW7) | ~(((z & _LOW7) + _LOW7) | z | _LOW7)) & ~_LOW7:
            return NOT_WORDS, False
        y = x ^ nl
        zn = ~(((y & _LOW7) + _LOW7) | y | _LOW7)
        y = x ^ dl
        m = (~(((y & _LOW7) + _LOW7) | y | _LOW7) | zn) & ~_LOW7
        while m:
            low = m & (~m + np.uint64(1))
            p = q * 8 + np.int64(((low >> np.uint64(7)) * _BYTE_INDEX) >> np.uint64(56))
            n = p - fs
            if c >= ncol or (no_empty and n == 0):
                return -1 - line, False
            k = wanted[c]
            if k >= 0:
                if n <= 8 and (fs >> 3) + 1 < nw:  # two aligned words, shifted and masked
                    r8 = np.uint64((fs & 7) * 8)
                    w = (words[fs >> 3] >> r8) | ((words[(fs >> 3) + 1] << np.uint64(1)) << (np.uint64(63) - r8))
                    keep = ((np.uint64(1) << np.uint64(max(n, 1) * 8 - 1)) << np.uint64(1)) - np.uint64(1)
                    t1[line - base, k] = (w & keep) if n else np.uint64(0)
                    tt[line - base, k] = np.uint32(n)
                else:
                    t1[line - base, k], tt[line - base, k] = hash_ids._hash_bytes(buf, fs, p)
            if zn & low:
                if c != ncol - 1 or (c == 0 and n == 0):
                    return -1 - line, False
                line, base = _next_line(line, base, p + 1, line_starts, t1, tt, h1, tag)
                c = 0
            else:
                c += 1
            fs = p + 1
            m ^= low
    _flush_tile(t1, tt, line - base, base, h1, tag)
    return line, (high & ~_LOW7) != 0


split_words = hash_ids._jit(_split_words_py)


def _field_ranges_py(buf, line_starts, rows, col, delim, starts, ends):
    """Byte range of field ``col`` of the lines ``rows`` of a plain block (a CR before LF excluded)."""
    for j in range(rows.shape[0]):
        p = line_starts[rows[j]]
        c = 0
        while c < col:
            if buf[p] == delim:
                c += 1
            p += 1
        s = p
        while buf[p] != delim and buf[p] != 10:
            p += 1
        if buf[p] == 10 and p > s and buf[p - 1] == 13:
            p -= 1
        starts[j] = s
        ends[j] = p


_field_ranges = hash_ids._jit(_field_ranges_py)


class LineCells(Cells):
    """Cells of the native parser: keys per row, byte ranges found only for the rows packed."""

    def __init__(self, buf, line_starts, col, delim, h1, tag):
        self.buf, self.line_starts, self.col, self.delim = buf, line_starts, col, delim
        self.h1, self.tag = h1, tag

    def pack(self, rows: np.ndarray) -> tuple[bytes, np.ndarray]:
        rows = np.ascontiguousarray(rows, np.int64)
        tags = self.tag[rows]
        if (tags <= 8).all():  # short values are their keys: their bytes are in h1
            return hash_ids.short_values(self.h1[rows], tags)
        starts, ends = np.empty(rows.shape[0], np.int64), np.empty(rows.shape[0], np.int64)
        _field_ranges(self.buf, self.line_starts, rows, self.col, self.delim, starts, ends)
        return take(self.buf, starts, ends, np.arange(rows.shape[0]))


split = hash_ids._jit(_split_py)


def _count_lines_py(buf, lo, hi):
    n = 0
    for p in range(lo, hi):
        n += buf[p] == 10
    return n


count_lines = hash_ids._jit(_count_lines_py)
