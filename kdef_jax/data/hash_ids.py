"""Dense ids for the distinct strings of a column: exact or 95-bit keys in an open-addressing hash table (numba).

The fast engines give every distinct raw value of a column a dense id, first seen first (what
:class:`~kdef_jax.data.vocab.RawColumn` needs) without a Python object per row. A value (its UTF-8
bytes) is identified by a key (``h1`` uint64, ``tag`` uint32), :func:`_hash_bytes_py`:

* a value of ≤ 8 bytes is its own key: h1 = its bytes as a little-endian word (zero-padded),
  tag = its length — exact, no collisions (all of Criteo's values are this short);
* a longer one: h1 and tag are two multiply-xor chains over its 64-bit words, finalized by fmix64,
  with the tag's top bit set (so it never equals a short key). Two long values share an id only if
  all 95 bits collide, about n² / 2⁹⁶ for n distinct long values in a column (< 10⁻¹⁴ for 10M).

Table: ``uint64 [capacity, 2]``; word 0 = h1, word 1 = (tag << 32) | (id + 1), so 16 bytes per slot
and word 1 = 0 marks an empty slot. Slot = top log2(capacity) bits of (h1 ⊕ h1 >> 29)·2⁶⁴/φ
(:func:`_slot_py`), linear probing, load factor ≤ 1/2 (the table doubles). Every loop is compiled by numba (``nogil``, so parser threads
run beside it) and falls back to plain Python without numba.
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
_S32 = np.uint64(32)
_S29 = np.uint64(29)
_LONG = np.uint64(0x80000000)


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
    """Key (h1, tag) of buf[lo:hi]. ≤ 8 bytes: (the bytes as a little-endian word, the length).
    Longer: its bytes as little-endian 64-bit words w (the last one zero-padded), a ← (a ⊕ w)·P₁ and
    b ← (b ⊕ w)·P₂ per word, then h1 = fmix64(a ⊕ len), tag = high half of fmix64(b + len·φ) | 2³¹."""
    a, b = _FNV_OFFSET, _OFFSET_2
    w, sh = np.uint64(0), np.uint64(0)
    for p in range(lo, hi):
        if sh == np.uint64(64):
            a = (a ^ w) * _FNV_PRIME
            b = (b ^ w) * _PRIME_2
            w, sh = np.uint64(0), np.uint64(0)
        w |= np.uint64(buf[p]) << sh
        sh += np.uint64(8)
    return _finish(a, b, w, hi - lo)


def _finish_py(a, b, w, n):
    """The key of a value of n bytes whose last (≤ 8-byte) word is w, after chains a, b over the others."""
    if n <= 8:
        return w, np.uint32(n)
    a = (a ^ w) * _FNV_PRIME
    b = (b ^ w) * _PRIME_2
    m = np.uint64(n)
    return _fmix(a ^ m), np.uint32((_fmix(b + m * _GOLDEN) >> _S32) | _LONG)


def _hash_cells_py(buf, starts, ends, h1, tag):
    for i in range(starts.shape[0]):
        h1[i], tag[i] = _hash_bytes(buf, starts[i], ends[i])


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


def _slot_py(h1, shift):
    """Home slot of a key: the top bits of (h1 ⊕ h1 >> 29)·2⁶⁴/φ (the fold lets the high bytes of a
    short value — its last characters — reach the product's top bits)."""
    return np.int64(((h1 ^ (h1 >> _S29)) * _GOLDEN) >> shift)


def _probe_py(h1, tag, table, state, out, start, shift):
    """Look up / insert rows ``start..`` of the keys (h1, tag); write ids to ``out``. Returns the first
    row not done (< len(h1) when the table reached its load limit and must grow).
    ``state = [count, limit]``; ``shift`` = 64 - log2(capacity). A table larger than the caches
    (≥ 2¹⁶ slots) has the slot of row i + 16 prefetched while row i is looked up."""
    mask = table.shape[0] - 1
    count, limit = state[0], state[1]
    n = h1.shape[0]
    far = table.shape[0] >= 1 << 16
    for i in range(start, n):
        if far and i + 16 < n:
            _prefetch(table, _slot(h1[i + 16], shift))
        a = h1[i]
        t = np.uint64(tag[i]) << _S32
        s = _slot(a, shift)
        while True:
            w = table[s, 1]
            if w == 0:
                if count >= limit:
                    state[0] = count
                    return i
                table[s, 0] = a
                table[s, 1] = t | np.uint64(count + 1)
                v = count
                count += 1
                break
            if table[s, 0] == a and (w & _HI) == t:
                v = np.int64(w & _LO) - 1
                break
            s = (s + 1) & mask
        out[i] = v
    state[0] = count
    return n


def _rehash_py(old, new, shift):
    mask = new.shape[0] - 1
    for j in range(old.shape[0]):
        if old[j, 1] != 0:
            s = _slot(old[j, 0], shift)
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


def _count_py(counts, ids, codes, code):
    """counts[ids[i]] += 1 for every row i with codes[i] == code."""
    for i in range(ids.shape[0]):
        if codes[i] == code:
            counts[ids[i]] += 1


def _scatter_columns_py(src, cols, rows, x):
    """x[rows[i], cols[j]] = src[j, i], in tiles of 256 rows so that the writes stay in cache."""
    n = src.shape[1]
    for lo in range(0, n, 256):
        hi = min(n, lo + 256)
        for j in range(src.shape[0]):
            c = cols[j]
            for i in range(lo, hi):
                x[rows[i], c] = src[j, i]


def _remap_columns_py(x, offsets, lut):
    """x[i, j] ← lut[x[i, j] + offsets[j]], in place."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] = lut[x[i, j] + offsets[j]]


def _jit(f):
    """numba.njit(nogil=True), cached on disk where numba finds a writable cache folder."""
    if numba is None:
        return f
    try:
        return numba.njit(nogil=True, cache=True)(f)
    except RuntimeError:  # "no locator available": read-only install and no user cache folder
        return numba.njit(nogil=True)(f)


def _no_prefetch(table, s):
    pass


def _prefetch_intrinsic():
    """``prefetch(table, s)``: LLVM's prefetch of row s of a 2-D array (read, keep in all caches)."""
    from llvmlite import ir
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, arr, idx):
        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            zero = context.get_constant(numba.types.intp, 0)
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], zero], wraparound=False)
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                                "llvm.prefetch.p0i8")
            builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return numba.types.void(arr, idx), codegen

    return prefetch


_prefetch_llvm = _prefetch_intrinsic() if numba is not None else _no_prefetch
_prefetch = _no_prefetch  # set by _use_prefetch() before the lookup kernel is first compiled


def _prefetch_check_py(table):
    _prefetch_llvm(table, 0)


def _use_prefetch() -> None:
    """Give the lookup kernels LLVM's prefetch, or a no-op where this numba/LLVM cannot compile it."""
    global _prefetch
    if numba is not None and _prefetch is _no_prefetch:
        try:
            _prefetch_check(np.zeros((2, 2), np.uint64))
            _prefetch = _prefetch_llvm
        except Exception:  # noqa: BLE001 - any compile failure: lookups work without prefetching
            _prefetch = numba.njit(_no_prefetch)


_fmix = _jit(_fmix_py)
_slot = _jit(_slot_py)
_prefetch_check = _jit(_prefetch_check_py)
_finish = _jit(_finish_py)
_hash_bytes = _jit(_hash_bytes_py)
_hash_cells, _gather, _probe, _rehash = map(_jit, (_hash_cells_py, _gather_py, _probe_py, _rehash_py))
_first_rows = _jit(_first_rows_py)
_count = _jit(_count_py)
_scatter_columns = _jit(_scatter_columns_py)
_remap_columns = _jit(_remap_columns_py)


def remap_columns(x: np.ndarray, offsets: np.ndarray, lut: np.ndarray) -> None:
    """x[i, j] ← lut[x[i, j] + offsets[j]] in place (x int32 [n, k]); compiled, numpy without numba."""
    if numba is None:
        x[...] = lut[x + offsets]
    else:
        _remap_columns(x, offsets, lut)


def scatter_columns(src: np.ndarray, cols: np.ndarray, order: np.ndarray | None, x: np.ndarray) -> None:
    """Row j of ``src`` [k, n] becomes column ``cols[j]`` of ``x`` [n, ·], its rows permuted by
    ``order`` (x row r = src column order[r]; None = unchanged). Compiled; numpy without numba."""
    if numba is None:
        x[:, cols] = src.T if order is None else src.T[order]
        return
    n = src.shape[1]
    rows = np.arange(n, dtype=np.int64)
    if order is not None:
        rows[order] = np.arange(n, dtype=np.int64)  # where each source row goes
    _scatter_columns(src, cols, rows, x)


def count_where(counts: np.ndarray, ids: np.ndarray, codes: np.ndarray, code: int) -> None:
    """counts[ids[i]] += 1 for the rows i with codes[i] == code (compiled; numpy without numba)."""
    if numba is None:
        np.add.at(counts, ids[codes == code], 1)
    else:
        _count(counts, ids, codes, code)


def first_rows(ids: np.ndarray, n_before: int) -> np.ndarray:
    """Rows (int64) where ids ≥ ``n_before`` appear first (see :func:`_first_rows_py`)."""
    out = np.empty(ids.shape[0], np.int64)
    return out[: _first_rows(ids, n_before, out)]


def _shift(table: np.ndarray) -> np.uint64:
    return np.uint64(64 - (table.shape[0].bit_length() - 1))


class HashIds:
    """value key → dense id (0, 1, 2, … in order of first appearance) for one column."""

    def __init__(self, capacity: int = 1024):
        _use_prefetch()
        cap = 1 << max(4, int(capacity - 1).bit_length())
        self.table = np.zeros((cap, 2), np.uint64)
        self.state = np.array([0, cap // 2], np.int64)  # count, load limit

    @property
    def n(self) -> int:
        return int(self.state[0])

    def __call__(self, h1: np.ndarray, tag: np.ndarray) -> np.ndarray:
        """Ids (int32 [n]) of the keys (h1, tag); unseen keys get the next ids in row order."""
        h1 = np.ascontiguousarray(h1, np.uint64)
        tag = np.ascontiguousarray(tag, np.uint32)
        out = np.empty(h1.shape[0], np.int32)
        done = 0
        while True:
            done = _probe(h1, tag, self.table, self.state, out, done, _shift(self.table))
            if done == h1.shape[0]:
                return out
            new = np.zeros((2 * self.table.shape[0], 2), np.uint64)
            _rehash(self.table, new, _shift(new))
            self.table = new
            self.state[1] = new.shape[0] // 2


class Cells:
    """The strings of one column of a block as byte ranges ``buf[starts[i]:ends[i]]`` of one buffer,
    with their keys (h1, tag). The native parser computes the keys while it splits the text (and
    finds the byte ranges only of the rows that get packed, :class:`~kdef_jax.data.formats.split_kernels.LineCells`);
    other sources (polars Series, Python lists) are packed and hashed here by the same function, so
    a value has one key whichever parser read it."""

    def __init__(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, h1=None, tag=None):
        self.buf, self.starts, self.ends = buf, starts, ends
        if h1 is None:
            h1, tag = np.empty(starts.shape[0], np.uint64), np.empty(starts.shape[0], np.uint32)
            _hash_cells(buf, starts, ends, h1, tag)
        self.h1, self.tag = h1, tag

    @classmethod
    def from_bytes(cls, blob: bytes, lens: np.ndarray) -> "Cells":
        ends = np.cumsum(lens, dtype=np.int64)
        return cls(np.frombuffer(blob, np.uint8), ends - lens, ends)

    @classmethod
    def from_strings(cls, values) -> "Cells":
        enc = [v.encode("utf-8") for v in values]
        return cls.from_bytes(b"".join(enc), np.fromiter(map(len, enc), np.int64, len(enc)))

    def __len__(self) -> int:
        return int(self.h1.shape[0])

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


def short_values(h1: np.ndarray, tag: np.ndarray) -> tuple[bytes, np.ndarray]:
    """(the values back to back, their lengths) of short keys (tag ≤ 8: h1 holds the value's bytes)."""
    lens = tag.astype(np.int64)
    words = np.ascontiguousarray(h1, "<u8").view(np.uint8).reshape(-1, 8)
    return words[np.arange(8) < lens[:, None]].tobytes(), lens


def unpack(blob: bytes, lens: np.ndarray) -> list:
    """The strings of a packed (bytes, byte lengths) pair."""
    ends = np.cumsum(lens).tolist()
    starts = [0] + ends[:-1]
    if blob.isascii():
        text = blob.decode("ascii")
        return [text[a:b] for a, b in zip(starts, ends)]
    return [blob[a:b].decode("utf-8") for a, b in zip(starts, ends)]
