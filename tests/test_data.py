"""Tests for the input pipeline: readers, vocabulary rules (spec §1.2-1.3), the cache, and the real
Frappe / Criteo sample files when present (bad input, the loader and synthetic data have their own
files: test_bad_input.py, test_loader.py, test_synthetic.py).

Every fixture is written inline to tmp_path and every cache goes to tmp_path (data.cache_dir set
explicitly; KDEF_CACHE_DIR also pointed at tmp_path), so nothing touches ~/.cache.
"""
import functools
import json
import os
import re
import threading

import numpy as np
import pytest

from conftest import load_config_module, shared_data_dir
from data_helpers import (ENGINES, TRAIN_LIBFM, data_cfg, delimited_cfg, load_data, load_error, quiet, raw_cfg, vocab_of,
                          write_file, write_libfm_dir, x_of, y_of)
from kdef_jax.data.dataset import load_dataset
from kdef_jax.data import dataset as dataset_mod
from kdef_jax.data import id_files, preprocess
from kdef_jax.data.feature_map import FeatureMap
from kdef_jax.data.formats import libfm as libfm_mod
from kdef_jax.data.preprocess import SourceSpec
from kdef_jax.data.schema import TRANSFORMS, ColumnSpec, DataFormatError, LabelRule, bucket_value
from kdef_jax.data.vocab import FieldEncoder, RawColumn


@pytest.fixture(autouse=True)
def _cache_env(no_home_cache):
  """Every test in this file runs with KDEF_CACHE_DIR inside tmp_path."""
  yield


# ===================================================================================== libFM

def test_libfm_vocab_sorted_ids_and_oov_min_count_1(libfm_dir, tmp_path):
  ds = load_data(data_cfg(libfm_dir, tmp_path / "cache", test="test.libfm"))
  fm = ds.feature_map
  assert vocab_of(ds) == {"f1": ["10", "100", "9"], "f2": ["200", "30", "4"], "f3": ["5", "7", "8"]}
  # ids 1..n in sorted token order; vocab_size = n + 2; OOV = n + 1
  assert [f.name for f in fm.fields] == ["f1", "f2", "f3"]
  assert fm.vocab_sizes == (5, 5, 5)
  assert [f.oov_index for f in fm.fields] == [4, 4, 4]
  assert fm.total_vocab == 15
  np.testing.assert_array_equal(
      x_of(ds, "train"),
      [[1, 1, 2], [3, 1, 2], [1, 2, 3], [1, 2, 2], [3, 1, 1], [2, 3, 2]],
  )
  # test: 999 (test-only, frequent) -> OOV; 31, 6 unseen -> OOV
  np.testing.assert_array_equal(x_of(ds, "test"), [[4, 2, 3], [4, 3, 2], [4, 1, 4], [3, 4, 1]])
  assert x_of(ds, "train").dtype == np.int32
  for s in ("train", "test"):
    assert (x_of(ds, s) != 0).all(), "PAD (0) must never appear in a categorical field"


def test_libfm_min_count_2_sends_rare_tokens_to_oov(libfm_dir, tmp_path):
  ds = load_data(data_cfg(libfm_dir, tmp_path / "cache", test="test.libfm", min_count=2))
  # kept: f1 {10:3, 9:2}; f2 {200:3, 30:2}; f3 {7:4} -> 100, 4, 8, 5 are rare -> OOV
  assert vocab_of(ds) == {"f1": ["10", "9"], "f2": ["200", "30"], "f3": ["7"]}
  assert ds.feature_map.vocab_sizes == (4, 4, 3)
  np.testing.assert_array_equal(
      x_of(ds, "train"),
      [[1, 1, 1], [2, 1, 1], [1, 2, 2], [1, 2, 1], [2, 1, 2], [3, 3, 1]],
  )
  # "999" occurs 3x (>= min_count) in test, yet it is OOV: the vocabulary is fitted on train only.
  np.testing.assert_array_equal(x_of(ds, "test"), [[3, 2, 2], [3, 3, 1], [3, 1, 2], [2, 3, 2]])
  assert (x_of(ds, "train") != 0).all() and (x_of(ds, "test") != 0).all()


def test_libfm_labels_and_feature_map_json(libfm_dir, tmp_path):
  ds = load_data(data_cfg(libfm_dir, tmp_path / "cache", test="test.libfm"))
  np.testing.assert_array_equal(y_of(ds, "train"), [1, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(y_of(ds, "test"), [1, 0, 0, 1])
  assert y_of(ds, "train").dtype == np.float32
  assert set(ds.splits) == {"train", "test"}  # no valid file -> no valid split
  raw = json.loads((ds.cache_dir / "feature_map.json").read_text())
  assert raw["num_fields"] == 3
  assert raw["total_vocab"] == 15
  assert [f["name"] for f in raw["fields"]] == ["f1", "f2", "f3"]
  assert [f["vocab_size"] for f in raw["fields"]] == [5, 5, 5]
  assert all(f["type"] == "categorical" and f["max_len"] == 1 for f in raw["fields"])
  assert raw["num_rows"] == {"train": 6, "test": 4}
  assert raw["positive_rate"]["train"] == pytest.approx(2 / 6)
  assert raw["positive_rate"]["test"] == pytest.approx(0.5)
  assert raw["skipped_rows"] == {}
  # The loaded FeatureMap round-trips the json.
  assert FeatureMap.load(ds.cache_dir / "feature_map.json").to_dict() == ds.feature_map.to_dict()


def test_libfm_label_map_plus_one_and_zero(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.libfm", "+1 1:1\n0 2:1\n1 1:1\n-1 2:1\n")
  ds = load_data(data_cfg(d, tmp_path / "cache", fields=("a",)))
  np.testing.assert_array_equal(y_of(ds, "train"), [1, 0, 1, 0])


# Row i (0-based) of this file goes to valid iff i % 3 == 0 -> rows 0, 3, 6 valid; 1, 2, 4, 5 train.
# Train-only tokens: a {2, 1, 3, 3}, b {51, 52, 51, 52}. "50" appears twice, but only in valid rows.
MOD_LIBFM = """\
1 1:1 50:1
-1 2:1 51:1
1 1:1 52:1
-1 2:1 50:1
-1 3:1 51:1
1 3:1 52:1
1 4:1 53:1
"""


def test_mod_split_rows_order_and_train_only_vocab(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.libfm", MOD_LIBFM)
  ds = load_data(data_cfg(d, tmp_path / "cache", fields=("a", "b"), split="mod", valid_mod=3))
  assert vocab_of(ds) == {"a": ["1", "2", "3"], "b": ["51", "52"]}
  assert ds.feature_map.num_rows == {"train": 4, "valid": 3}
  np.testing.assert_array_equal(x_of(ds, "train"), [[2, 1], [1, 2], [3, 1], [3, 2]])  # rows 1, 2, 4, 5
  np.testing.assert_array_equal(y_of(ds, "train"), [0, 1, 0, 1])
  # rows 0, 3, 6: "50" (valid-only) and "4", "53" (unseen) -> OOV (a: 4, b: 3)
  np.testing.assert_array_equal(x_of(ds, "valid"), [[1, 3], [2, 3], [4, 3]])
  np.testing.assert_array_equal(y_of(ds, "valid"), [1, 0, 1])
  assert ds.feature_map.positive_rate == {"train": pytest.approx(0.5), "valid": pytest.approx(2 / 3)}


def test_mod_split_with_test_file_and_chunking(tmp_path, monkeypatch):
  """Same mod rule when the file is read in several chunks (row indices continue across chunks)."""
  d = tmp_path / "raw"
  lines = [f"{1 if i % 4 == 0 else -1} {i}:1" for i in range(23)]
  write_file(d / "train.libfm", "\n".join(lines) + "\n")
  write_file(d / "test.libfm", "1 5:1\n-1 77:1\n")
  monkeypatch.setattr(dataset_mod, "read_libfm", functools.partial(libfm_mod.read_libfm, chunk_rows=4))
  ds = load_data(data_cfg(d, tmp_path / "cache", fields=("a",), split="mod", valid_mod=5, test="test.libfm", engine="python"))
  valid_rows = [i for i in range(23) if i % 5 == 0]
  train_rows = [i for i in range(23) if i % 5 != 0]
  vocab = vocab_of(ds)["a"]
  assert vocab == sorted(str(i) for i in train_rows)
  oov = len(vocab) + 1
  lookup = {t: j + 1 for j, t in enumerate(vocab)}
  np.testing.assert_array_equal(x_of(ds, "train")[:, 0], [lookup[str(i)] for i in train_rows])
  np.testing.assert_array_equal(x_of(ds, "valid")[:, 0], [oov] * len(valid_rows))
  np.testing.assert_array_equal(y_of(ds, "valid"), [1.0 if i % 4 == 0 else 0.0 for i in valid_rows])
  np.testing.assert_array_equal(x_of(ds, "test")[:, 0], [oov, oov])  # 5 is a valid row (5 % 5 == 0)
  assert ds.feature_map.num_rows == {"train": 18, "valid": 5, "test": 2}


# ================================================================= delimited / Criteo quirks

# label, I1, I2, C1, C2 (TAB-separated, no header, raw Criteo layout with fewer columns).
# I1 raw:  ""   0     3     10    1000   -> buckets: miss, 0, 1, 5, 47
# I2 raw:  -1   25    2     -1.7  1      -> buckets: -1, 10, 2, -1, 1
#   ln(3)^2 = 1.207 -> 1; ln(10)^2 = 5.302 -> 5; ln(1000)^2 = 47.72 -> 47; ln(25)^2 = 10.36 -> 10
CRITEO_TRAIN = (
    "1\t\t-1\tb\tx\n"
    "0\t0\t25\t\tx\n"
    "1\t3\t2\ta\ty\n"
    "0\t10\t-1.7\tb\t\n"
    "1\t1000\t1\tc\tx\n"
)
# test: I1 2.5 -> ln(2.5)^2 = 0.84 -> bucket 0 -> OOV; 4 -> ln(4)^2 = 1.92 -> 1; 26 -> 10.6 -> 10;
#       7 -> ln(7)^2 = 3.79 -> 3 (unseen) -> OOV; C1 "d" unseen -> OOV.
CRITEO_TEST = (
    "0\t2.5\t26\td\ty\n"
    "1\t4\t7\ta\tz\n"
)


@pytest.fixture
def criteo_tiny(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.tsv", CRITEO_TRAIN)
  write_file(d / "test.tsv", CRITEO_TEST)
  return load_data(delimited_cfg(d, tmp_path / "cache", test="test.tsv"))


def test_bucketize_hand_values():
  """⌊ln² v⌋ for v > 2, int(v) (toward 0) otherwise; missing ("", and pandas' NaN strings) → 0."""
  raw = ["", "0", "0.9", "1", "1.99", "2", "2.5", "3", "10", "25", "1000", "-1", "-1.7", "-3", "1e3", "NaN", "null"]
  enc = FieldEncoder(ColumnSpec("n", kind="numeric_bucket"), RawColumn("n", need_values=True, hashed=False))
  toks, bad = enc.tokenize(raw)
  assert toks == [0, 0, 0, 1, 1, 2, 0, 1, 5, 10, 47, -1, -1, -3, 47, 0, 0] and bad == {}


def test_criteo_numeric_buckets_quirk_and_numeric_sort(criteo_tiny):
  ds = criteo_tiny
  # I1 tokens (bucket 0 = missing or genuine 0 is the NA token): {1, 5, 47} -> numeric order;
  # lexicographic order would be "1" < "47" < "5".
  # I2 tokens {-1, 1, 2, 10}: numeric order; lexicographic would be "-1" < "1" < "10" < "2".
  assert vocab_of(ds) == {"I1": ["1", "5", "47"], "I2": ["-1", "1", "2", "10"], "C1": ["a", "b", "c"], "C2": ["x", "y"]}
  assert ds.feature_map.vocab_sizes == (5, 6, 5, 4)
  assert [f.source for f in ds.feature_map.fields] == ["numeric_bucket", "numeric_bucket", "categorical", "categorical"]
  x = x_of(ds, "train")
  np.testing.assert_array_equal(x[:, 0], [4, 4, 1, 2, 3])  # "" -> OOV, 0 -> OOV (quirk), 3, 10, 1000
  np.testing.assert_array_equal(x[:, 1], [1, 4, 3, 1, 2])  # -1, 25, 2, -1.7 (trunc -1), 1
  np.testing.assert_array_equal(x[:, 2], [2, 4, 1, 2, 3])  # empty categorical -> OOV
  np.testing.assert_array_equal(x[:, 3], [1, 1, 2, 3, 1])
  np.testing.assert_array_equal(y_of(ds, "train"), [1, 0, 1, 0, 1])
  assert (x != 0).all()


def test_criteo_test_split_oov(criteo_tiny):
  x = x_of(criteo_tiny, "test")
  # I1 OOV = 4, I2 OOV = 5, C1 OOV = 4, C2 OOV = 3
  np.testing.assert_array_equal(x, [[4, 4, 4, 2], [1, 5, 1, 3]])
  np.testing.assert_array_equal(y_of(criteo_tiny, "test"), [0, 1])


def test_numeric_field_min_count_applies_to_buckets(tmp_path):
  d = tmp_path / "raw"
  # I1 buckets: 1 (from 1), 1 (from 3), 5 (from 10), 2, 2 -> counts {1: 2, 5: 1, 2: 2}
  write_file(d / "train.tsv", "1\t1\t1\ta\tb\n0\t3\t1\ta\tb\n1\t10\t1\ta\tb\n0\t2\t1\ta\tb\n1\t2\t1\ta\tb\n")
  ds = load_data(delimited_cfg(d, tmp_path / "cache", min_count=2))
  assert vocab_of(ds)["I1"] == ["1", "2"]
  np.testing.assert_array_equal(x_of(ds, "train")[:, 0], [1, 1, 3, 2, 2])


# =================================================================================== cache


def test_cache_is_reused_without_rebuild(libfm_dir, tmp_path, monkeypatch):
  cfg = data_cfg(libfm_dir, tmp_path / "cache", test="test.libfm")
  ds1 = load_data(cfg)
  fm_path = ds1.cache_dir / "feature_map.json"
  mtime = fm_path.stat().st_mtime_ns
  assert ds1.cache_dir.parent == tmp_path / "cache"
  assert ds1.cache_dir.name.startswith("tiny-")

  def boom(*a, **k):
    raise AssertionError("the count pass must not run when the cache exists")

  monkeypatch.setattr(preprocess, "_admit", boom)
  ds2 = load_data(cfg)
  assert ds2.cache_dir == ds1.cache_dir
  assert fm_path.stat().st_mtime_ns == mtime
  np.testing.assert_array_equal(x_of(ds2, "test"), x_of(ds1, "test"))
  assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [ds1.cache_dir.name]


def test_cache_key_changes_with_schema_and_content(libfm_dir, tmp_path):
  root = tmp_path / "cache"
  base = load_data(data_cfg(libfm_dir, root, test="test.libfm")).cache_dir
  other_min = load_data(data_cfg(libfm_dir, root, test="test.libfm", min_count=2)).cache_dir
  other_fields = load_data(data_cfg(libfm_dir, root, test="test.libfm", fields=("g1", "g2", "g3"))).cache_dir
  assert len({base, other_min, other_fields}) == 3

  # Same size, different content, mtime moved forward: a new cache, and it holds the new content.
  train = libfm_dir / "train.libfm"
  new_text = TRAIN_LIBFM.replace("100:1 4:1", "101:1 4:1")
  assert len(new_text) == len(TRAIN_LIBFM)
  st = train.stat()
  train.write_text(new_text)
  os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
  ds_new = load_data(data_cfg(libfm_dir, root, test="test.libfm"))
  assert ds_new.cache_dir != base
  assert vocab_of(ds_new)["f1"] == ["10", "101", "9"]
  # Appending a row (size change) also gives a new cache.
  with open(train, "a") as f:
    f.write("1 10:1 200:1 7:1\n")
  ds_app = load_data(data_cfg(libfm_dir, root, test="test.libfm"))
  assert ds_app.cache_dir not in (base, ds_new.cache_dir)
  assert ds_app.feature_map.num_rows["train"] == 7


def test_cache_key_holds_only_the_parameters_of_the_split_rule_in_use():
  from kdef_jax.data.preprocess import SourceSpec

  def key(**kw):
    return SourceSpec("d", (), (), reader=None, reader_key={}, **kw).key()

  files = key(split="files")
  assert files == key(split="files", valid_mod=7, split_seed=1, split_fractions=(0.5, 0.25, 0.25))  # unread by "files"
  assert key(split="mod", valid_mod=10) == key(split="mod", valid_mod=10, split_seed=1)
  assert key(split="mod", valid_mod=10) != key(split="mod", valid_mod=5)
  rnd = key(split="random")
  assert rnd == key(split="random", valid_mod=3)
  assert len({files, rnd, key(split="random", split_seed=1), key(split="random", split_fractions=(0.7, 0.2, 0.1))}) == 4


def _leftovers(root):
  return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_failed_build_in_count_pass_leaves_nothing(libfm_dir, tmp_path):
  write_file(libfm_dir / "bad_test.libfm", "1 999:1 30:1 8:1\n3 1:1 2:1 3:1\n")
  root = tmp_path / "cache"
  msg = load_error(data_cfg(libfm_dir, root, test="bad_test.libfm"))
  assert f"{libfm_dir / 'bad_test.libfm'}:2:" in msg
  assert _leftovers(root) == []


def test_bad_value_in_test_split_is_found_in_the_first_pass(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.tsv", CRITEO_TRAIN)
  # A non-numeric value in a test row: every split is validated in the first pass.
  p = write_file(d / "test.tsv", "0\t2\t1\ta\tx\n1\tabc\t1\ta\tx\n")
  root = tmp_path / "cache"
  msg = load_error(delimited_cfg(d, root, test="test.tsv"))
  assert f"{p}:2:" in msg and "'abc'" in msg
  assert _leftovers(root) == []


def test_failed_build_in_encode_pass_leaves_nothing(tmp_path, monkeypatch):
  """A crash in the second pass (rewriting ids in place) leaves no cache and no temporary folder."""
  d = tmp_path / "raw"
  write_file(d / "train.tsv", CRITEO_TRAIN)
  write_file(d / "test.tsv", "0\t2\t1\ta\tx\n1\t3\t1\ta\tx\n")
  passes = []
  real = preprocess.remap_in_place

  def crash(*a, **k):
    passes.append("encode")
    raise OSError("disk full (simulated)")

  monkeypatch.setattr(preprocess, "remap_in_place", crash)
  root = tmp_path / "cache"
  with pytest.raises(OSError, match="simulated"):
    load_data(delimited_cfg(d, root, test="test.tsv"))
  assert passes == ["encode"]
  assert _leftovers(root) == []
  assert not list(tmp_path.rglob("*.tmp-*"))
  # Without the fault it builds normally.
  monkeypatch.setattr(preprocess, "remap_in_place", real)
  ds = load_data(delimited_cfg(d, root, test="test.tsv"))
  assert ds.feature_map.num_rows == {"train": 5, "test": 2}
  assert _leftovers(root) == [ds.cache_dir.name]


# =============================================================================== real data


def _real_dir(name):
  return shared_data_dir() / name


def test_frappe_real_split_and_vocab(tmp_path):
  d = _real_dir("frappe")
  if not (d / "frappe.validation.libfm").is_file() or not (d / "frappe.test.libfm").is_file():
    pytest.skip(f"Frappe files not found in {d} (set KDEF_DATA_DIR to the folder holding frappe/)")
  cfg = load_config_module("frappe").get_config()
  cfg.data.data_dir = str(d)
  cfg.data.cache_dir = str(tmp_path / "cache")
  ds = load_data(cfg.data)
  fm = ds.feature_map
  assert fm.num_rows == {"train": 51_949, "valid": 5_773, "test": 28_860}
  assert fm.total_vocab == 5_298  # = FuxiCTR's embedding rows on the same split
  assert fm.num_fields == 10
  assert [f.name for f in fm.fields] == list(load_config_module("frappe").FRAPPE_FIELDS)
  for s in ("train", "valid", "test"):
    y = y_of(ds, s)
    assert set(np.unique(y).tolist()) == {0.0, 1.0}
    assert (x_of(ds, s) >= 1).all()
    assert (x_of(ds, s) <= np.array(fm.vocab_sizes) - 1).all()
  assert fm.positive_rate["train"] == pytest.approx(0.33, abs=0.01)
  assert fm.positive_rate["test"] == pytest.approx(0.33, abs=0.01)
  # valid = rows 0, 10, 20, ... of frappe.validation.libfm, in file order, labels 1/-1 -> 1/0
  raw_labels = [ln.split(" ", 1)[0] for ln in (d / "frappe.validation.libfm").read_text().splitlines()]
  expect = np.array([1.0 if lab == "1" else 0.0 for lab in raw_labels[::10]], np.float32)
  np.testing.assert_array_equal(y_of(ds, "valid"), expect)


def test_criteo_sample_real(tmp_path):
  d = _real_dir("criteo_sample")
  if not all((d / f).is_file() for f in ("train.csv", "dev.csv", "test.csv")):
    pytest.skip(f"Criteo sample files not found in {d} (set KDEF_DATA_DIR to the folder holding criteo_sample/)")
  mod = load_config_module("criteo")
  cfg = mod.get_config("sample")
  cfg.data.data_dir = str(d)
  cfg.data.cache_dir = str(tmp_path / "cache")
  ds = load_data(cfg.data)
  fm = ds.feature_map
  assert fm.num_rows == {"train": 7_200, "valid": 409, "test": 391}
  assert fm.num_fields == 39
  assert [f.name for f in fm.fields] == list(mod.I_FIELDS + mod.C_FIELDS)
  vocab = vocab_of(ds)
  for name in mod.I_FIELDS:
    toks = [int(t) for t in vocab[name]]
    assert toks == sorted(toks) and len(set(toks)) == len(toks), name  # numeric order
    assert 0 not in toks, name  # bucket 0 is the NA token (Criteo quirk)
  assert "" not in vocab["C1"]
  for s in ("train", "valid", "test"):
    assert (x_of(ds, s) >= 1).all()
    assert set(np.unique(y_of(ds, s)).tolist()) == {0.0, 1.0}


def test_outputs_close_waits_for_writes_and_refuses_later_ones(tmp_path):
  out = id_files.IdFiles(tmp_path, 2)
  start = out.reserve({"train": 3})["train"]
  out.write("train", start, np.arange(6, dtype=np.int32).reshape(3, 2), np.ones(3, np.float32))
  out.close()
  np.testing.assert_array_equal(np.load(tmp_path / "train_x.npy"), np.arange(6).reshape(3, 2))
  assert np.load(tmp_path / "valid_x.npy").shape == (0, 2)
  with pytest.raises(RuntimeError, match="closed"):  # a worker still running after a failed build
    out.write("train", 0, np.zeros((1, 2), np.int32), np.zeros(1, np.float32))


def test_build_leaves_the_cyclic_gc_as_it_found_it(libfm_dir, tmp_path):
  import gc
  assert gc.isenabled()
  load_data(data_cfg(libfm_dir, tmp_path / "c1", test="test.libfm"))
  assert gc.isenabled()  # disabled during the build only
  gc.disable()
  try:
    load_data(data_cfg(libfm_dir, tmp_path / "c2", test="test.libfm", min_count=2))
    assert not gc.isenabled()
  finally:
    gc.enable()


def test_atomic_dir_publishes_only_complete_builds_and_keeps_the_first_of_two(tmp_path):
  from kdef_jax.data.atomic_dir import building

  final = tmp_path / "ds-abc"
  with building(final) as tmp:
    assert tmp.is_dir() and tmp != final and not final.exists()
    (tmp / "feature_map.json").write_text("first")
  assert (final / "feature_map.json").read_text() == "first"
  # A second build of the same cache that finishes later: the published one stays, the new one goes.
  with building(final) as tmp:
    (tmp / "feature_map.json").write_text("second")
  assert (final / "feature_map.json").read_text() == "first"
  # A build that fails leaves neither its folder nor a cache.
  other = tmp_path / "ds-def"
  with pytest.raises(KeyboardInterrupt):
    with building(other) as tmp:
      (tmp / "train_x.npy").write_text("half")
      raise KeyboardInterrupt
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ds-abc"]


def test_two_builders_in_one_process_never_share_a_folder(tmp_path):
  """Builders of one cache in one process (threads; or two hosts whose builders share a pid) each get
  their own folder: the published cache is one complete build, not a mix."""
  from kdef_jax.data.atomic_dir import building

  final = tmp_path / "ds-abc"
  with building(final) as a:
    (a / "train_x.npy").write_text("a")
    with building(final) as b:  # starts while a is half done
      assert b != a and (a / "train_x.npy").exists()
      (b / "train_x.npy").write_text("b")
      (b / "feature_map.json").write_text("b")
    (a / "feature_map.json").write_text("a")
  assert {p.name: p.read_text() for p in final.iterdir()} == {"train_x.npy": "b", "feature_map.json": "b"}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ds-abc"]


def test_a_killed_builds_folder_is_removed_by_the_next_build_of_that_cache(tmp_path):
  """A SIGKILLed build cannot clean up: its temporary folder (named with host and pid) is removed by the
  next build of the same cache on that host once its process is gone; a live builder's, another host's
  and another cache's folders stay (interruption fuzzing)."""
  import subprocess
  import sys
  from kdef_jax.data import atomic_dir
  from kdef_jax.data.atomic_dir import building

  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  host = atomic_dir._host()
  final = tmp_path / "ds-abc"
  folders = {"killed": f"ds-abc.tmp-{host}-{dead.pid}-x1", "live": f"ds-abc.tmp-{host}-{os.getppid()}-x2",
             "other_host": f"ds-abc.tmp-{'0' * 8 if host != '0' * 8 else '1' * 8}-{dead.pid}-x3",
             "other_cache": f"ds-abd.tmp-{host}-{dead.pid}-x4"}
  for name in folders.values():
    (tmp_path / name).mkdir()
    (tmp_path / name / "train_x.npy").write_text("half")
  said = []
  with building(final, log=said.append) as tmp:
    assert tmp.name.startswith(f"ds-abc.tmp-{host}-{os.getpid()}-")
    (tmp / "feature_map.json").write_text("{}")
  left = sorted(p.name for p in tmp_path.iterdir())
  assert left == sorted(["ds-abc", folders["live"], folders["other_host"], folders["other_cache"]])
  assert said == [f"[data] removed {tmp_path / folders['killed']}, the folder of a build that was killed"]


def test_a_cache_missing_a_split_file_is_an_error_not_a_smaller_dataset(libfm_dir, tmp_path):
  from kdef_jax.data.dataset import open_cache

  ds = load_data(data_cfg(libfm_dir, tmp_path / "cache", test="test.libfm"))
  (ds.cache_dir / "test_y.npy").unlink()
  with pytest.raises(ValueError, match=r"incomplete cache, feature_map.json lists test_y.npy but they are missing"):
    open_cache(ds.cache_dir)


@pytest.mark.parametrize("engine", ENGINES)
def test_keep_lines_records_each_kept_rows_line_in_every_split(tmp_path, engine):
  # lines 1: header, 2..9 data rows 0..7; row 1 has a column too few, row 4 the label 7 (both skipped,
  # on_bad_rows='skip'); valid_mod=3 sends data rows 0, 3, 6 (counting the skipped ones) to valid
  text = ("label,C1\n" "1,a\n" "0\n" "1,b\n" "0,a\n" "7,b\n" "1,a\n" "0,c\n" "1,b\n")
  write_file(tmp_path / "raw" / "train.csv", text)
  write_file(tmp_path / "raw" / "test.csv", "label,C1\n0,a\n1,zz\n")
  cfg = raw_cfg(tmp_path / "raw", tmp_path / "cache", format="delimited", header=True, delimiter=",",
                fields=("C1",), engine=engine, on_bad_rows="skip", split="mod", valid_mod=3,
                files={"train": "train.csv", "test": "test.csv"})
  ds = load_dataset(cfg, log=quiet, keep_lines=True)
  assert ds.feature_map.skipped_rows == {str(tmp_path / "raw" / "train.csv"): 2}
  lines = {s: np.asarray(sp.line).tolist() for s, sp in ds.splits.items()}
  assert lines == {"train": [4, 7, 9], "valid": [2, 5, 8], "test": [2, 3]}
  assert y_of(ds, "train").tolist() == [1, 1, 1] and y_of(ds, "valid").tolist() == [1, 0, 0]
  plain = load_dataset(cfg, log=quiet)  # without keep_lines: its own cache, no line files, the same ids
  assert plain.cache_dir != ds.cache_dir and all(sp.line is None for sp in plain.splits.values())
  assert not list(plain.cache_dir.glob("*_line.npy"))
  for s in ds.splits:
    np.testing.assert_array_equal(x_of(plain, s), x_of(ds, s))



def test_random_split_fractions_are_relative_weights(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.libfm", "".join(f"{i % 2} {i}:1 1:1 1:1\n" for i in range(200)))
  a = load_data(data_cfg(d, tmp_path / "c1", split="random", split_fractions=(0.8, 0.1, 0.1)))
  b = load_data(data_cfg(d, tmp_path / "c2", split="random", split_fractions=(8, 1, 1)))
  assert set(a.feature_map.num_rows) == {"train", "valid", "test"}
  assert a.feature_map.num_rows == b.feature_map.num_rows
  np.testing.assert_array_equal(x_of(a, "valid"), x_of(b, "valid"))


# The id files and the atomic cache folder: cases mutation testing showed no test pinned.

def test_npy_header_is_always_exactly_header_bytes_or_refused():  # I01
  assert len(id_files.npy_header(np.float32, (10**60,))) == id_files.HEADER_BYTES  # the longest that fits
  with pytest.raises(ValueError, match="does not fit"):
    id_files.npy_header(np.float32, (10**61,))


def test_line_file_rows_land_at_their_reserved_offsets(tmp_path):  # I06
  out = id_files.IdFiles(tmp_path, 1, lines=True)
  for lines in ([3, 4], [7, 9, 11]):
    start = out.reserve({"train": len(lines)})["train"]
    out.write("train", start, np.zeros((len(lines), 1), np.int32), np.zeros(len(lines), np.float32), np.array(lines))
  out.close()
  np.testing.assert_array_equal(np.load(tmp_path / "train_line.npy"), [3, 4, 7, 9, 11])


def test_close_waits_for_a_write_in_progress(tmp_path, monkeypatch):  # I03
  entered, release = threading.Event(), threading.Event()
  real = id_files.pwrite_all

  def slow(fd, arr, offset):
    entered.set()
    release.wait(10)
    real(fd, arr, offset)

  out = id_files.IdFiles(tmp_path, 1)
  monkeypatch.setattr(id_files, "pwrite_all", slow)
  writer = threading.Thread(target=out.write, args=("train", 0, np.zeros((1, 1), np.int32), np.zeros(1, np.float32)))
  writer.start()
  assert entered.wait(10)
  monkeypatch.setattr(id_files, "pwrite_all", real)
  closer = threading.Thread(target=out.close)
  closer.start()
  closer.join(0.3)
  still_waiting = closer.is_alive()
  release.set()
  writer.join(10)
  closer.join(10)
  assert still_waiting, "close() returned while a write was in progress"


def test_building_reraises_a_failed_rename_when_no_complete_cache_is_there(tmp_path):  # A01
  from kdef_jax.data.atomic_dir import building

  final = tmp_path / "ds"
  (final / "junk").mkdir(parents=True)  # a non-empty folder without feature_map.json: the rename fails
  with pytest.raises(OSError):
    with building(final) as tmp:
      (tmp / "feature_map.json").write_text("x")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


# The data pipeline's schema / preprocess / vocab / dataset: cases mutation testing found unpinned (2026-12-06).

# pandas.read_csv's default NA strings (pandas >= 2.0; pandas.io.parsers STR_NA_VALUES), "" included
PANDAS_2_NA = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
               "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]


def test_every_pandas_default_na_string_is_a_missing_value(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.csv", "label,c\n1,x\n" + "".join(f"0,{s}\n" for s in PANDAS_2_NA))
  ds = load_data(raw_cfg(d, tmp_path / "c", format="delimited", files={"train": "train.csv"}, header=True,
                         delimiter=",", fields=("c",), engine="python"))
  assert vocab_of(ds) == {"c": ["x"]}
  np.testing.assert_array_equal(x_of(ds, "train")[:, 0], [1] + [2] * len(PANDAS_2_NA))


def test_a_numeric_fields_missing_value_is_the_empty_value_whatever_its_na_value(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.csv", "label,n\n1,10\n0,\n1,NA\n")
  ds = load_data(raw_cfg(d, tmp_path / "c", format="delimited", files={"train": "train.csv"}, header=True,
                         delimiter=",", fields=("n",), numeric_fields=("n",), engine="python",
                         field_options={"n": {"na_value": "?"}}))
  assert vocab_of(ds) == {"n": ["5"]}  # ⌊ln² 10⌋ = 5; "" and "NA" are missing -> bucket 0 -> OOV
  np.testing.assert_array_equal(x_of(ds, "train")[:, 0], [1, 2, 2])
  p = write_file(d / "train.csv", "label,n\n1,10\n0,?\n")  # the na_value itself is no missing number
  with pytest.raises(DataFormatError, match=f"{p}:3: column 'n' is numeric but holds '\\?'"):
    load_data(raw_cfg(d, tmp_path / "c2", format="delimited", files={"train": "train.csv"}, header=True,
                      delimiter=",", fields=("n",), numeric_fields=("n",), engine="python",
                      field_options={"n": {"na_value": "?"}}))


@pytest.mark.parametrize("kw, what", [
    (dict(min_count=0), "min_count"),
    (dict(pandas_na="false"), "pandas_na"),
    (dict(max_len=3), "max_len"),
    (dict(kind="sequence", max_len=2, splitter=""), "splitter"),
])
def test_column_spec_rejects_bad_options(kw, what):
  with pytest.raises(ValueError, match=what):
    ColumnSpec(name="c", **kw)


def test_libfm_index_must_be_ascii_digits():
  assert TRANSFORMS["libfm_index"]("12:1") == TRANSFORMS["libfm_index"]("12:1.0") == "12"
  for pair in ("\u00b2:1", "\u0661:1"):  # "²" and Arabic-Indic "1": str.isdigit() is true for both
    with pytest.raises(ValueError, match="not a non-negative integer"):
      TRANSFORMS["libfm_index"](pair)


def test_cache_key_changes_with_label_rule_bad_rows_reader_and_pinned_vocab():
  def key(**kw):
    return SourceSpec("d", (ColumnSpec("c"),), (), reader=None, reader_key=kw.pop("reader_key", {}), **kw).key()

  base = key()
  others = [key(label_rule=LabelRule.parse("threshold:4:2")), key(on_bad_rows="skip"),
            key(reader_key={"delim": ","}), key(vocab={"c": ["a"]}), key(vocab={"c": ["a", "b"]})]
  assert len({base, *others}) == 1 + len(others)


def test_raw_rows_counts_the_rows_the_reader_skipped(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.libfm", "1 1:1 5:1\n-1 2:1\n1 3:1 6:1\n")  # line 2: wrong field count, skipped by the reader
  ds = load_data(data_cfg(d, tmp_path / "cache", fields=("a", "b"), on_bad_rows="skip", engine="python"))
  assert ds.feature_map.num_rows == {"train": 2}
  assert ds.feature_map.info["raw_rows"] == 3


def _csv_cfg(d, cache, fields, **kw):
  kw = {"files": {"train": "train.csv"}, "header": True, "delimiter": ",", "engine": "python", **kw}
  return raw_cfg(d, cache, format="delimited", fields=fields, **kw)


def test_a_missing_value_becomes_the_fields_own_na_value_before_a_transform(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.csv", "label,isrc\n1,GBBKS1100170\n0,NA\n1,\n0,ZZ12345\n")
  ds = load_data(_csv_cfg(d, tmp_path / "c", ("isrc",), field_options={"isrc": {"transform": "isrc_country",
                                                                                 "na_value": "ZZ"}}))
  assert vocab_of(ds) == {"isrc": ["GB"]}  # "NA" and "" -> "ZZ" (the NA value) -> OOV, never an "" token
  np.testing.assert_array_equal(x_of(ds, "train")[:, 0], [1, 2, 2, 2])


def test_without_zero_is_missing_a_missing_number_is_the_bucket_0_token(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.csv", "label,n\n1,0\n0,\n1,5\n0,NA\n")
  ds = load_data(_csv_cfg(d, tmp_path / "c", ("n",), numeric_fields=("n",),
                          field_options={"n": {"zero_is_missing": False}}))
  assert vocab_of(ds) == {"n": ["0", "2"]}  # fill_na 0 then bucket 0 is a token; ⌊ln² 5⌋ = 2
  np.testing.assert_array_equal(x_of(ds, "train")[:, 0], [1, 1, 2, 1])


def test_a_transform_error_on_a_missing_value_names_the_column_and_the_raw_value(tmp_path):
  d = tmp_path / "raw"
  opts = {"h": {"transform": "hour_of_day"}}
  p = write_file(d / "train.csv", "label,h\n1,14102100\n0,NA\n")
  with pytest.raises(DataFormatError) as e:
    load_data(_csv_cfg(d, tmp_path / "c1", ("h",), field_options=opts))
  assert str(e.value) == (f"{p}:3: column 'h': expected an hour stamp YYMMDDHH, got '' "
                          "(the raw value 'NA', a missing value: data.pandas_na)")
  write_file(d / "train.csv", "label,h\n1,14102100\n0,\n")  # the empty value is the fill itself: no note
  with pytest.raises(DataFormatError) as e:
    load_data(_csv_cfg(d, tmp_path / "c2", ("h",), field_options=opts))
  assert str(e.value) == f"{p}:3: column 'h': expected an hour stamp YYMMDDHH, got ''"


def test_a_pinned_vocabulary_still_maps_a_missing_value_to_oov(tmp_path):
  from kdef_jax.data.dataset import load_dataset
  d = tmp_path / "raw"
  write_file(d / "new.csv", "label,c\n1,x\n0,NA\n1,\n")
  ds = load_dataset(_csv_cfg(d, tmp_path / "c", ("c",), files={"test": "new.csv"}), log=lambda *a: None,
                    vocab={"c": ["NA", "x"]})  # e.g. a run trained with pandas_na=false
  np.testing.assert_array_equal(x_of(ds, "test")[:, 0], [2, 3, 3])


def test_delimited_cache_key_holds_every_reader_option(tmp_path):
  from kdef_jax.data.dataset import _source_spec
  d = tmp_path / "raw"
  write_file(d / "train.csv", "label,c,y\n1,x,0\n")

  def key(**kw):
    return _source_spec(_csv_cfg(d, tmp_path / "c", ("c",), **kw)).key()

  keys = [key(), key(encoding="latin-1"), key(header=False), key(column_names=("label", "c", "y")), key(quotechar="'"),
          key(delimiter=";"), key(label_column="y")]
  assert len(set(keys)) == len(keys)


def test_libfm_cache_key_follows_the_feature_index_file(tmp_path):
  from kdef_jax.data.dataset import _source_spec
  d = tmp_path / "raw"
  write_file(d / "train.fm", "0 1:1\n")
  write_file(d / "fi.txt", "a:x\t1\n")
  cfg = raw_cfg(d, tmp_path / "c", format="libfm", files={"train": "train.fm"}, fields=("a",), featindex="fi.txt",
                engine="python")
  before = _source_spec(cfg).key()
  write_file(d / "fi.txt", "a:yy\t1\n")
  assert _source_spec(cfg).key() != before


def test_data_config_errors_duplicates_stray_options_and_no_train_file(tmp_path):
  from kdef_jax.data.dataset import _source_spec, column_specs
  d = tmp_path / "raw"
  write_file(d / "train.csv", "label,c\n1,x\n")
  with pytest.raises(ValueError, match="duplicates"):
    column_specs(_csv_cfg(d, tmp_path / "c", ("c", "c")))
  with pytest.raises(ValueError, match=r"field_options \['z'\] are not in data.fields"):
    column_specs(_csv_cfg(d, tmp_path / "c", ("c",), field_options={"z": {}}))
  with pytest.raises(ValueError, match="training file is required"):
    _source_spec(_csv_cfg(d, tmp_path / "c", ("c",), files={"train": "", "test": "train.csv"}))


def test_open_cache_refuses_arrays_that_do_not_match_the_feature_map(tmp_path):
  import json
  from kdef_jax.data.dataset import open_cache
  d = tmp_path / "raw"
  write_file(d / "train.csv", "label,c\n1,x\n0,y\n")
  ds = load_data(_csv_cfg(d, tmp_path / "c", ("c",)))
  fm = json.loads((ds.cache_dir / "feature_map.json").read_text())
  fm["num_rows"]["train"] = 3
  (ds.cache_dir / "feature_map.json").write_text(json.dumps(fm))
  with pytest.raises(ValueError, match="do not match feature_map.json"):
    open_cache(ds.cache_dir)


def test_field_spec_rejects_a_vocabulary_without_pad_and_oov_and_a_wide_categorical():
  from kdef_jax.data.feature_map import FieldSpec
  assert FieldSpec("a", "categorical", 5).oov_index == 4
  with pytest.raises(ValueError, match="vocab_size 1 < 2"):
    FieldSpec("a", "categorical", 1)
  with pytest.raises(ValueError, match="bad max_len 3"):
    FieldSpec("a", "categorical", 5, max_len=3)


def test_more_than_1024_distinct_values_of_a_bucketed_field(tmp_path):
  # the encoders' per-raw-value tables start at 1024 entries: the 1025th value onwards lands in grown ones
  d = tmp_path / "raw"
  n = 1100
  p = write_file(d / "train.csv", "label,n\n1,abc\n" + "".join(f"{i % 2},{i}\n" for i in range(n)))
  ds = load_data(_csv_cfg(d, tmp_path / "c", ("n",), numeric_fields=("n",), on_bad_rows="skip"))
  assert ds.feature_map.skipped_rows == {str(p): 1}  # "abc" only
  buckets = sorted({bucket_value(float(i)) for i in range(1, n)})  # 0 -> bucket 0 = missing
  assert vocab_of(ds) == {"n": [str(b) for b in buckets]}
  ids = {b: i for i, b in enumerate(buckets, start=1)}
  expect = [len(buckets) + 1] + [ids[bucket_value(float(i))] for i in range(1, n)]
  np.testing.assert_array_equal(x_of(ds, "train")[:, 0], expect)


@pytest.mark.parametrize("rule, message", [
    ("threshold:nan:2", "POS and NEG must be finite numbers"),
    ("threshold:4:nan", "POS and NEG must be finite numbers"),
    ("map:1=1,1=0", "raw value(s) ['1'] mapped to both 0 and 1"),
])
def test_label_rules_that_cannot_label_every_class_or_contradict_themselves_are_refused(rule, message):
  with pytest.raises(ValueError, match=re.escape(f"label rule {rule!r}: {message}")):
    LabelRule.parse(rule)
  assert LabelRule.parse("map:yes=1,yes=1,no=0").apply(["yes", "no"])[0].tolist() == [1.0, 0.0]  # a repeat agrees


# Found by damaging the data cache (corruption fuzzing).
def test_a_truncated_cache_array_is_an_error_naming_it(libfm_dir, tmp_path):
  """np.load's "mmap length is greater than file size" named no file."""
  ds = load_data(data_cfg(libfm_dir, tmp_path / "cache"))
  x = ds.cache_dir / "train_x.npy"
  x.write_bytes(x.read_bytes()[: x.stat().st_size // 2])
  with pytest.raises(ValueError) as e:
    load_data(data_cfg(libfm_dir, tmp_path / "cache"))
  assert str(e.value).startswith(f"{x}: damaged cache file") and "delete the folder" in str(e.value)


def test_a_cache_folder_without_its_feature_map_is_an_error_naming_it(libfm_dir, tmp_path):
  """The rebuilt cache could not replace the incomplete folder: an OSError traceback on every run."""
  ds = load_data(data_cfg(libfm_dir, tmp_path / "cache"))
  (ds.cache_dir / "feature_map.json").unlink()
  with pytest.raises(FileExistsError) as e:
    load_data(data_cfg(libfm_dir, tmp_path / "cache"))
  assert str(e.value).startswith(f"{ds.cache_dir}: an incomplete folder") and "delete it" in str(e.value)
  assert not list(ds.cache_dir.parent.glob("*.tmp-*"))  # the new build was removed, the folder left as it was
  assert (ds.cache_dir / "train_x.npy").exists()


def test_random_split_uniform_is_the_splitmix64_mix_of_row_plus_seed_phi():
  """The random split's U[0,1) per (seed, row), values from Python-int splitmix64 arithmetic."""
  np.testing.assert_array_equal(preprocess._uniform(2018, np.arange(4)),
                                [0.18944153649287343, 0.12524753449371762, 0.952557696240979, 0.7836233539473965])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o027, 0o750), (0o077, 0o700)])
def test_a_published_cache_folder_has_the_mode_the_umask_gives(tmp_path, umask, mode):
  """mkdtemp makes its folder 0700 whatever the umask: a cache shared between users was readable by its
  builder alone."""
  import stat

  from kdef_jax.data import atomic_dir

  old = os.umask(umask)
  try:
    assert atomic_dir._umask() == umask
    with atomic_dir.building(tmp_path / "cache") as tmp:
      (tmp / "feature_map.json").write_text("{}")
  finally:
    os.umask(old)
  assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == mode


def test_a_cache_build_counts_each_files_rows_on_its_progress_bar(tmp_path, monkeypatch):
  """Reading a large raw file printed nothing until the build ended; a bar (on a terminal) counts its rows."""
  import io

  from tqdm import tqdm

  from kdef_jax.data import preprocess

  bars, real = [], preprocess._rows_bar

  def bar(desc):
    bars.append(tqdm(desc=desc, file=io.StringIO(), disable=False))  # as on a terminal
    return bars[-1]

  monkeypatch.setattr(preprocess, "_rows_bar", bar)
  load_data(data_cfg(write_libfm_dir(tmp_path), tmp_path / "c", test="test.libfm"))
  assert [(b.desc, b.n) for b in bars] == [("reading train train.libfm", 6), ("reading test test.libfm", 4)]
  assert real("x").disable  # the captured test streams are no terminal: no bar


@pytest.mark.parametrize("by_env", [True, False])
def test_a_cache_folder_that_is_a_file_names_where_it_was_set(tmp_path, monkeypatch, by_env):
  f = tmp_path / "afile"
  f.write_text("mine")
  cfg = data_cfg(write_libfm_dir(tmp_path), "" if by_env else f)
  if by_env:
    monkeypatch.setenv("KDEF_CACHE_DIR", str(f))
  where = "$KDEF_CACHE_DIR" if by_env else "config data.cache_dir"
  with pytest.raises(FileExistsError, match=re.escape(f"the data cache folder {f} ({where}) is a file; give a folder")):
    load_data(cfg)
  assert f.read_text() == "mine"


def test_absolute_file_paths_need_no_data_directory(tmp_path):
  """Before: files.train=/abs/path.csv failed on the default data directory ../shared/data not existing."""
  d = tmp_path / "raw"
  p = write_file(d / "train.csv", "label,c\n1,x\n0,y\n")
  ds = load_data(_csv_cfg(tmp_path / "no_such_dir", tmp_path / "c", ("c",), files={"train": str(p)}))
  assert vocab_of(ds) == {"c": ["x", "y"]}
  with pytest.raises(FileNotFoundError, match="no_such_dir does not exist"):  # a relative name still needs it
    load_data(_csv_cfg(tmp_path / "no_such_dir", tmp_path / "c", ("c",), files={"train": "train.csv"}))
