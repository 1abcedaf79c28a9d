"""Dense ids for the distinct strings of a column: 96-bit keys in an open-addressing hash table (numba).

The fast engines give every distinct raw value of a column a dense id, first seen first (what
:class:`~kdef_jax.data.vocab.RawColumn` needs) without a Python object per row. A value (its UTF-8
bytes) is identified by a 96-bit key: hash 1 and the high 32 bits of hash 2, two multiply-xor
chains over its 64-bit words (:func:`_hash_bytes_py`). Values of ≤ 8 bytes never collide; longer
ones share an id only if both hashes collide, about n² / 2⁹⁷ for n distinct values in a column
(< 10⁻¹⁵ for the 10M values of Criteo's largest field).

Table: ``uint64 [capacity, 2]``; word 0 = hash 1, word 1 = (hash 2 & 0xFFFFFFFF00000000) | (id + 1),
so 16 bytes per slot and word 1 = 0 marks an empty slot. Slot = top log2(capacity) bits of
hash 1 × 2⁶⁴/φ, linear probing, load factor ≤ 1/2 (the table doubles). Every loop is compiled by
numba (``nogil``, so parser threads run beside it) and falls back to plain Python without numba.
"""

from __future__ import annotations

import numpy as np

try:  # optional extra (preprocess)
    import numba
except ImportError:  # pragma: no cover - exercised when the extra is absent
    numba = None

_HI = np.uint64(0xFFFFFFFF00000000)
_LO = np.uint64(0xFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)
_OFFSET_2, _PRIME_2 = np.uint64(0x84222325CBF29CE4), np.uint64(0x9FB21C651E98DF25)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


def available() -> bool:
    return numba is not None


def _fmix_py(h):
    """MurmurHash3's 64-bit finalizer (full avalanche)."""
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    return h


def _hash_bytes_py(buf, lo, hi):
    """(hash 1, hash 2) of buf[lo:hi]: its bytes as little-endian 64-bit words w (the last one
    zero-padded), a ← (a ⊕ w)·P₁ and b ← (b ⊕ w)·P₂ per word, then fmix64(a ⊕ len), fmix64(b + len·φ).
    For values of ≤ 8 bytes and a given length both are bijections of the value: no collisions."""
    a, b = _FNV_OFFSET, _OFFSET_2
    w, sh = np.uint64(0), np.uint64(0)
    for p in range(lo, hi):
        w |= np.uint64(buf[p]) << sh
        sh += np.uint64(8)
        if sh == np.uint64(64):
            a = (a ^ w) * _FNV_PRIME
            b = (b ^ w) * _PRIME_2
            w, sh = np.uint64(0), np.uint64(0)
    if sh:
        a = (a ^ w) * _FNV_PRIME
        b = (b ^ w) * _PRIME_2
    n = np.uint64(hi - lo)
    return _fmix(a ^ n), _fmix(b + n * _GOLDEN)


def _hash_cells_py(buf, starts, ends, h1, h2):
    for i in range(starts.shape[0]):
        h1[i], h2[i] = _hash_bytes(buf, starts[i], ends[i])


def _gather_py(buf, starts, ends, rows, out, lens):
    """Copy the cells ``rows`` into ``out`` back to back; their byte lengths into ``lens``."""
    q = 0
    for k in range(rows.shape[0]):
        r = rows[k]
        lo, hi = starts[r], ends[r]
        for p in range(lo, hi):
            out[q] = buf[p]
            q += 1
        lens[k] = hi - lo
    return q


def _probe_py(h1, h2, table, state, out, start, shift):
    """Look up / insert rows ``start..`` of (h1, h2); write ids to ``out``. Returns the first row not
    done (< len(h1) when the table reached its load limit and must grow). ``state = [count, limit]``;
    ``shift`` = 64 - log2(capacity)."""
    mask = table.shape[0] - 1
    count, limit = state[0], state[1]
    for i in range(start, h1.shape[0]):
        a = h1[i]
        tag = h2[i] & _HI
        s = np.int64((a * _GOLDEN) >> shift)
        while True:
            w = table[s, 1]
            if w == 0:
                if count >= limit:
                    state[0] = count
                    return i
                table[s, 0] = a
                table[s, 1] = tag | np.uint64(count + 1)
                v = count
                count += 1
                break
            if table[s, 0] == a and (w & _HI) == tag:
                v = np.int64(w & _LO) - 1
                break
            s = (s + 1) & mask
        out[i] = v
    state[0] = count
    return h1.shape[0]


def _rehash_py(old, new, shift):
    mask = new.shape[0] - 1
    for j in range(old.shape[0]):
        if old[j, 1] != 0:
            s = np.int64((old[j, 0] * _GOLDEN) >> shift)
            while new[s, 1] != 0:
                s = (s + 1) & mask
            new[s, 0] = old[j, 0]
            new[s, 1] = old[j, 1]


def _first_rows_py(ids, n_before, out):
    """Rows where the ids ≥ ``n_before`` first appear (ids are dense and numbered in row order, so
    the first occurrence of a new id is the first row holding the next expected one)."""
    nxt, k = n_before, 0
    for i in range(ids.shape[0]):
        if ids[i] == nxt:
            out[k] = i
            k += 1
            nxt += 1
    return k


def _jit(f):
    """numba.njit(nogil=True), cached on disk where numba finds a writable cache folder."""
    if numba is None:
        return f
    try:
        return numba.njit(nogil=True, cache=True)(f)
    except RuntimeError:  # "no locator available": read-only install and no user cache folder
        return numba.njit(nogil=True)(f)


_fmix = _jit(_fmix_py)
_hash_bytes = _jit(_hash_bytes_py)
_hash_cells, _gather, _probe, _rehash = map(_jit, (_hash_cells_py, _gather_py, _probe_py, _rehash_py))
_first_rows = _jit(_first_rows_py)


def first_rows(ids: np.ndarray, n_before: int) -> np.ndarray:
    """Rows (int64) where ids ≥ ``n_before`` appear first (see :func:`_first_rows_py`)."""
    out = np.empty(ids.shape[0], np.int64)
    return out[: _first_rows(ids, n_before, out)]


def _shift(table: np.ndarray) -> np.uint64:
    return np.uint64(64 - (table.shape[0].bit_length() - 1))


class HashIds:
    """value key → dense id (0, 1, 2, … in order of first appearance) for one column."""

    def __init__(self, capacity: int = 1024):
        cap = 1 << max(4, int(capacity - 1).bit_length())
        self.table = np.zeros((cap, 2), np.uint64)
        self.state = np.array([0, cap // 2], np.int64)  # count, load limit

    @property
    def n(self) -> int:
        return int(self.state[0])

    def __call__(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """Ids (int32 [n]) of the keys (h1, h2); unseen keys get the next ids in row order."""
        h1 = np.ascontiguousarray(h1, np.uint64)
        h2 = np.ascontiguousarray(h2, np.uint64)
        out = np.empty(h1.shape[0], np.int32)
        done = 0
        while True:
            done = _probe(h1, h2, self.table, self.state, out, done, _shift(self.table))
            if done == h1.shape[0]:
                return out
            new = np.zeros((2 * self.table.shape[0], 2), np.uint64)
            _rehash(self.table, new, _shift(new))
            self.table = new
            self.state[1] = new.shape[0] // 2


class Cells:
    """The strings of one column of a block as byte ranges ``buf[starts[i]:ends[i]]`` of one buffer,
    with their keys (h1, h2). The native parser computes the keys while it splits the text; other
    sources (polars Series, Python lists) are packed and hashed here by the same function, so a
    value has one key whichever parser read it."""

    def __init__(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, h1=None, h2=None):
        self.buf, self.starts, self.ends = buf, starts, ends
        if h1 is None:
            h1, h2 = np.empty(starts.shape[0], np.uint64), np.empty(starts.shape[0], np.uint64)
            _hash_cells(buf, starts, ends, h1, h2)
        self.h1, self.h2 = h1, h2

    @classmethod
    def from_bytes(cls, blob: bytes, lens: np.ndarray) -> "Cells":
        ends = np.cumsum(lens, dtype=np.int64)
        return cls(np.frombuffer(blob, np.uint8), ends - lens, ends)

    @classmethod
    def from_strings(cls, values) -> "Cells":
        enc = [v.encode("utf-8") for v in values]
        return cls.from_bytes(b"".join(enc), np.fromiter(map(len, enc), np.int64, len(enc)))

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def pack(self, rows: np.ndarray) -> tuple[bytes, np.ndarray]:
        """(the cells ``rows`` back to back, their byte lengths)."""
        return take(self.buf, self.starts, self.ends, rows)


def take(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray) -> tuple[bytes, np.ndarray]:
    """(the byte ranges ``rows`` of ``buf`` back to back, their lengths)."""
    rows = np.ascontiguousarray(rows, np.int64)
    out = np.empty(int((ends[rows] - starts[rows]).sum()), np.uint8)
    lens = np.empty(rows.shape[0], np.int64)
    _gather(buf, starts, ends, rows, out, lens)
    return out.tobytes(), lens


def unpack(blob: bytes, lens: np.ndarray) -> list:
    """The strings of a packed (bytes, byte lengths) pair."""
    ends = np.cumsum(lens).tolist()
    starts = [0] + ends[:-1]
    if blob.isascii():
        text = blob.decode("ascii")
        return [text[a:b] for a, b in zip(starts, ends)]
    return [blob[a:b].decode("utf-8") for a, b in zip(starts, ends)]
