"""Hash-table ids of the fast preprocessing engines (kdef_jax/data/hash_ids.py, formats/columnar.py)."""

import threading
import time

import numpy as np
import pytest

from kdef_jax.data import hash_ids
from kdef_jax.data.formats import columnar, split_kernels
from kdef_jax.data.hash_ids import Cells, HashIds, unpack

pytestmark = pytest.mark.skipif(not hash_ids.available(), reason="numba (the 'preprocess' extra) is not installed")

VALUES = ["", "a", "0a699c99", "12345678", "123456789", "Amélie", "x" * 40, "-1", "é" * 5]


def _first_seen_ids(values):
  order = {}
  return np.array([order.setdefault(v, len(order)) for v in values])


def test_ids_are_dense_in_order_of_first_appearance_across_table_growth():
  rng = np.random.default_rng(0)
  values = [str(v) for v in rng.integers(0, 5000, 20000)] + VALUES
  ids = HashIds(capacity=16)  # grows (rehash) many times
  got = np.concatenate([ids(c.h1, c.tag) for c in (Cells.from_strings(values[i : i + 3000]) for i in range(0, len(values), 3000))])
  np.testing.assert_array_equal(got, _first_seen_ids(values))
  assert ids.n == len(set(values))
  again = Cells.from_strings(values[::-1])
  np.testing.assert_array_equal(ids(again.h1, again.tag), _first_seen_ids(values)[::-1])  # no new ids


def test_short_values_have_distinct_keys_and_equal_values_equal_keys():
  c = Cells.from_strings(VALUES + VALUES)
  keys = set(zip(c.h1.tolist(), c.tag.tolist()))
  assert len(keys) == len(VALUES)
  # every byte matters, also in the zero padding of the last word and in the length
  c2 = Cells.from_strings(["a", "a\0", "\0a", "ab", "ba", "", "\0"])
  assert len(set(zip(c2.h1.tolist(), c2.tag.tolist()))) == 7


def test_short_values_are_their_own_keys_long_ones_are_tagged():
  short = ["", "a", "0a699c99", "é", "a\0"]
  c = Cells.from_strings(short)
  assert c.h1.tolist() == [int.from_bytes(v.encode(), "little") for v in short]  # ≤ 8 bytes: exact
  assert c.tag.tolist() == [len(v.encode()) for v in short]
  long = Cells.from_strings(["123456789", "x" * 40, "é" * 5])
  assert all(t >= 2**31 for t in long.tag.tolist())  # never equal to a short key's tag (≤ 8)


def test_pack_unpack_round_trip_utf8():
  c = Cells.from_strings(VALUES)
  rows = np.array([5, 0, 8, 2])
  assert unpack(*c.pack(rows)) == [VALUES[r] for r in rows]


def test_native_split_hashes_equal_the_hash_of_the_same_strings():
  """A value gets one key whichever parser read it (native split, CRLF lines, Python strings)."""
  lines = ["\t".join([a, b]) for a, b in zip(VALUES, VALUES[::-1])]
  for eol in ("\n", "\r\n"):
    block = bytearray(eol.join(lines).encode() + eol.encode())
    fast = columnar._Fast("<t>", ("p", "q"), ("q", "p"), ("q", "p"), "\t", "", 0, "utf-8", "native")
    got = fast(block, 1, len(lines))
    assert got is not None
    for key, col in (("p", VALUES), ("q", VALUES[::-1])):
      ref = Cells.from_strings(col)
      np.testing.assert_array_equal(got.columns[key].h1, ref.h1)
      np.testing.assert_array_equal(got.columns[key].tag, ref.tag)
      assert unpack(*got.columns[key].pack(np.arange(len(col)))) == col


@pytest.mark.parametrize("block", [b"a\tb\n\n", b"a\tb\tc\n", b"a\n", b'"a"\tb\n', b"a\rb\tc\n", b"a\t\xff\n"])
def test_native_split_declines_what_is_not_plain(block):
  fast = columnar._Fast("<t>", ("p", "q"), ("p", "q"), ("p", "q"), "\t", '"', 0, "utf-8", "native")
  assert fast(bytearray(block), 1, block.count(b"\n")) is None


def test_python_fallback_kernels_agree_with_the_compiled_ones():
  c = Cells.from_strings(VALUES * 3)
  h1, tag = np.empty(len(c), np.uint64), np.empty(len(c), np.uint32)
  with np.errstate(over="ignore"):  # uint64 arithmetic is modular on purpose
    for i in range(len(c)):  # pure-Python hash (numba absent) equals the compiled one
      h1[i], tag[i] = hash_ids._hash_bytes_py(c.buf, int(c.starts[i]), int(c.ends[i]))
  np.testing.assert_array_equal(h1, c.h1)
  np.testing.assert_array_equal(tag, c.tag)
  table, state, out = np.zeros((64, 2), np.uint64), np.array([0, 32], np.int64), np.empty(len(c), np.int64)
  with np.errstate(over="ignore"):
    assert hash_ids._probe_py(c.h1, c.tag, table, state, out, 0, hash_ids._shift(table)) == len(c)
  np.testing.assert_array_equal(out, _first_seen_ids(VALUES * 3))


def test_reader_closed_midway_stops_its_threads(tmp_path):
  p = tmp_path / "x.tsv"
  p.write_bytes(b"1\ta\n0\tb\n" * 5000)
  before = threading.active_count()
  gen = columnar.read_blocks(str(p), names=("l", "c"), wanted=("l", "c"), keys=("l", "c"), delimiter="\t",
                             slow=lambda lines, first: None, block_bytes=64, admit=lambda b: b)
  next(gen)
  gen.close()
  deadline = time.time() + 10
  while threading.active_count() > before and time.time() < deadline:
    time.sleep(0.05)
  assert threading.active_count() <= before


def test_first_rows_of_new_ids():
  ids = np.array([0, 2, 1, 3, 2, 4, 3], np.int32)  # ids 2, 3, 4 are new (n_before = 2)
  np.testing.assert_array_equal(hash_ids.first_rows(ids, 2), [1, 3, 5])
  assert hash_ids.first_rows(ids, 5).size == 0


def test_short_values_come_back_from_their_keys():
  short = ["", "a", "0a699c99", "é", "a\0", "-12"]
  c = Cells.from_strings(short)
  assert unpack(*hash_ids.short_values(c.h1, c.tag)) == short


def test_native_cells_pack_short_and_long_values():
  lines = ["\t".join(v) for v in zip(VALUES, VALUES[::-1])]
  block = bytearray(("\n".join(lines) + "\n").encode())
  fast = columnar._Fast("<t>", ("p", "q"), ("p", "q"), ("p", "q"), "\t", "", 0, "utf-8", "native")
  got = fast(block, 1, len(lines))
  short_rows = np.array([i for i, v in enumerate(VALUES) if len(v.encode()) <= 8])
  assert unpack(*got.columns["p"].pack(short_rows)) == [VALUES[i] for i in short_rows]
  assert unpack(*got.columns["p"].pack(np.arange(len(VALUES)))) == VALUES  # long ones: found in the text


def test_chunks_cover_the_file_in_whole_lines(tmp_path):
  p = tmp_path / "x.tsv"
  text = b"head\n" + b"a\tb\n" + b"c" * 100 + b"\td\n" + b"e\tf"  # a line longer than a block; no final newline
  p.write_bytes(text)
  chunks = list(columnar.iter_chunks(str(p), block_bytes=16, header_lines=1))
  got = b"".join(c.tobytes() for c in chunks)
  assert got == text[5:] + b"\n"
  assert all(c.tobytes().endswith(b"\n") for c in chunks)
  assert list(columnar.iter_chunks(str(tmp_path / "x.tsv"), header_lines=9)) == []
  (tmp_path / "e.tsv").write_bytes(b"")
  assert list(columnar.iter_chunks(str(tmp_path / "e.tsv"))) == []


def test_word_kernel_equals_byte_kernel_at_every_offset():
  """The 8-bytes-at-a-time split and the byte loop give the same keys and line starts for a block
  starting at any offset of its buffer (mapped files: blocks start anywhere)."""
  rng = np.random.default_rng(1)
  vals = VALUES + ["", "-7", "0123456", "01234567", "012345678"]
  lines = ["\t".join(vals[i] for i in rng.integers(0, len(vals), 3)) for _ in range(50)]
  body = ("\n".join(lines) + "\n").encode()
  wanted = np.array([0, -1, 1], np.int64)
  for pad in range(9):
    buf = np.frombuffer(bytearray(b"\tx\r\n\"" * 2)[:pad] + body, np.uint8)  # junk before lo is ignored
    out = []
    for kernel in ("words", "bytes"):
      ls, h1, tag = np.zeros(51, np.int64), np.zeros((2, 50), np.uint64), np.zeros((2, 50), np.uint32)
      args = (pad, buf.shape[0], 3, 9, -1, False, wanted, ls, h1, tag)
      if kernel == "words":
        got = split_kernels.split_words(buf, buf[: buf.shape[0] & ~7].view(np.uint64), *args)
      else:
        got = split_kernels.split(buf, *args)
      assert got[0] == 50
      out.append((ls.copy(), h1.copy(), tag.copy()))
    for a, b in zip(*out):
      np.testing.assert_array_equal(a, b)
    ref = Cells.from_strings([ln.split("\t")[0] for ln in lines])
    np.testing.assert_array_equal(out[0][1][0], ref.h1)
    np.testing.assert_array_equal(out[0][2][0], ref.tag)


def test_read_chunks_fallback_equals_mapped_chunks(tmp_path):
  p = tmp_path / "x.tsv"
  p.write_bytes(b"head\n" + b"".join(b"%d\tv%d\n" % (i, i * 7) for i in range(300)) + b"7\tlast")
  mapped = b"".join(c.tobytes() for c in columnar.iter_chunks(str(p), block_bytes=64, header_lines=1))
  with open(p, "rb") as fh:
    read = list(columnar._read_chunks(fh, 64, 1))
  assert b"".join(c.tobytes() for c in read) == mapped
  assert all(c.tobytes().endswith(b"\n") for c in read)


# Found by mutation testing: the tag keeps values that differ only in trailing NULs apart.

@pytest.mark.skipif(not hash_ids.available(), reason="numba (the 'preprocess' extra) is not installed")
def test_short_values_that_differ_only_in_trailing_nul_get_different_ids():  # H03
  c = hash_ids.Cells.from_strings(["a", "a\0", "", "\0", "a"])
  np.testing.assert_array_equal(hash_ids.HashIds(16)(c.h1, c.tag), [0, 1, 2, 3, 0])


# --- the documented hash formulas, with values from Python-int arithmetic (not from the module) -----


def test_fmix64_is_murmurhash3s_finaliser_hand_value():
  with np.errstate(over="ignore"):
    assert int(hash_ids._fmix_py(np.uint64(1))) == 0xB456BCFC34C2CB2C


def test_long_value_key_follows_the_documented_chains():
  """'123456789' = words w1 = b'12345678' (LE), w2 = b'9' (zero-padded); a, b: FNV-style chains;
  h1 = fmix64(a ^ 9), tag = (fmix64(b + 9·φ64) >> 32) | 2³¹; 16 and 17 bytes: one and two words' edge."""
  c = Cells.from_strings(["123456789", "x" * 16, "x" * 17])
  assert c.h1.tolist() == [0x2F09F696751E111E, 0x7B06994CD5FF9594, 0xB76BD808EF47A85D]
  assert c.tag.tolist() == [0xE2F480A3, 0x995AF220, 0xA205B4C8]


def test_home_slot_is_the_top_bits_of_the_folded_key_times_2_64_over_phi():
  """slot = ((h1 ^ h1 >> 29) · 0x9E3779B97F4A7C15 mod 2⁶⁴) >> (64 − log2 capacity); capacities 16, 1024."""
  for h1, s16, s1024 in [(1, 9, 632), (0x61, 15, 972), (1 << 40, 0, 25), (0x3837363534333231, 4, 299)]:
    assert int(hash_ids._slot(np.uint64(h1), np.uint64(60))) == s16
    assert int(hash_ids._slot(np.uint64(h1), np.uint64(54))) == s1024


def test_remap_scatter_and_count_kernels_by_hand():
  x = np.array([[0, 1], [2, 0], [1, 1]], np.int32)
  hash_ids.remap_columns(x, np.array([0, 3], np.int32), np.array([10, 11, 12, 20, 21, 22], np.int32))
  assert x.tolist() == [[10, 21], [12, 20], [11, 21]]  # x[i, j] <- lut[x[i, j] + offsets[j]]
  out = np.zeros((3, 4), np.int32)
  hash_ids.scatter_columns(np.array([[1, 2, 3], [4, 5, 6]], np.int32), np.array([3, 1]), np.array([2, 0, 1]), out)
  assert out.tolist() == [[0, 6, 0, 3], [0, 4, 0, 1], [0, 5, 0, 2]]  # row r = source column order[r]
  counts = np.zeros(4, np.int64)
  hash_ids.count_where(counts, np.array([0, 1, 1, 3, 1], np.int32), np.array([0, 0, 1, 0, 0], np.int8), 0)
  assert counts.tolist() == [1, 2, 0, 1]
