"""Tests for the input pipeline: readers, vocabulary rules (spec §1.2-1.3), the cache, the loader,
synthetic data, and the real Frappe / Criteo sample files when present.

Every fixture is written inline to tmp_path and every cache goes to tmp_path (data.cache_dir set
explicitly; KDEF_CACHE_DIR also pointed at tmp_path), so nothing touches ~/.cache.
"""
import dataclasses
import functools
import json
import os
import re

import numpy as np
import pytest

from conftest import load_config_module, shared_data_dir
from kdef_jax.config import base_config
from kdef_jax.data import dataset as dataset_mod
from kdef_jax.data import id_files, preprocess
from kdef_jax.data.dataset import Split, load_dataset
from kdef_jax.data.feature_map import FeatureMap
from kdef_jax.data.formats import libfm as libfm_mod
from kdef_jax.data.loader import epoch_permutation, iterate_batches, num_batches, prefetch
from kdef_jax.data.schema import DataFormatError, bucketize
from kdef_jax.data.synthetic import SyntheticSpec, _Planted, build_synthetic
from kdef_jax.metrics import auc


def _quiet(*args, **kwargs):
  pass


@pytest.fixture(autouse=True)
def _cache_env(no_home_cache):
  """Every test in this file runs with KDEF_CACHE_DIR inside tmp_path."""
  yield


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def _cfg(data_dir, cache_dir, *, fmt="libfm", train="train.libfm", valid="", test="", fields=("f1", "f2", "f3"),
         split="files", valid_mod=0, min_count=1, name="tiny", **extra):
  c = base_config()
  d = c.data
  d.name = name
  d.format = fmt
  d.data_dir = str(data_dir)
  d.cache_dir = str(cache_dir)
  d.files.train, d.files.valid, d.files.test = train, valid, test
  d.split = split
  d.valid_mod = valid_mod
  d.fields = tuple(fields)
  d.min_count = min_count
  for k, v in extra.items():
    setattr(d, k, v)
  return d


def _load(cfg):
  return load_dataset(cfg, log=_quiet)


def _vocab(ds):
  return json.loads((ds.cache_dir / "vocab.json").read_text())


def _x(ds, split):
  return np.asarray(ds.splits[split].x)


def _y(ds, split):
  return np.asarray(ds.splits[split].y)


# ===================================================================================== libFM

# Field tokens (the idx before ':') of the train file, and their train counts:
#   f1: 10 x3, 9 x2, 100 x1      string order: "10" < "100" < "9"
#   f2: 200 x3, 30 x2, 4 x1      string order: "200" < "30" < "4"
#   f3: 7 x4, 8 x1, 5 x1         string order: "5" < "7" < "8"
TRAIN_LIBFM = """\
1 10:1 200:1 7:1
-1 9:1 200:1 7:1
1 10:1 30:1 8:1
-1 10:1 30:1 7:1
-1 9:1 200:1 5:1
-1 100:1 4:1 7:1
"""
# "999" is frequent in test (3x) but absent from train -> OOV; "31" and "6" only in test -> OOV.
TEST_LIBFM = """\
1 999:1 30:1 8:1
-1 999:1 4:1 7:1
-1 999:1 200:1 6:1
1 9:1 31:1 5:1
"""


@pytest.fixture
def libfm_dir(tmp_path):
  d = tmp_path / "raw"
  _write(d / "train.libfm", TRAIN_LIBFM)
  _write(d / "test.libfm", TEST_LIBFM)
  return d


def test_libfm_vocab_sorted_ids_and_oov_min_count_1(libfm_dir, tmp_path):
  ds = _load(_cfg(libfm_dir, tmp_path / "cache", test="test.libfm"))
  fm = ds.feature_map
  assert _vocab(ds) == {"f1": ["10", "100", "9"], "f2": ["200", "30", "4"], "f3": ["5", "7", "8"]}
  # ids 1..n in sorted token order; vocab_size = n + 2; OOV = n + 1
  assert [f.name for f in fm.fields] == ["f1", "f2", "f3"]
  assert fm.vocab_sizes == (5, 5, 5)
  assert [f.oov_index for f in fm.fields] == [4, 4, 4]
  assert fm.total_vocab == 15
  np.testing.assert_array_equal(
      _x(ds, "train"),
      [[1, 1, 2], [3, 1, 2], [1, 2, 3], [1, 2, 2], [3, 1, 1], [2, 3, 2]],
  )
  # test: 999 (test-only, frequent) -> OOV; 31, 6 unseen -> OOV
  np.testing.assert_array_equal(_x(ds, "test"), [[4, 2, 3], [4, 3, 2], [4, 1, 4], [3, 4, 1]])
  assert _x(ds, "train").dtype == np.int32
  for s in ("train", "test"):
    assert (_x(ds, s) != 0).all(), "PAD (0) must never appear in a categorical field"


def test_libfm_min_count_2_sends_rare_tokens_to_oov(libfm_dir, tmp_path):
  ds = _load(_cfg(libfm_dir, tmp_path / "cache", test="test.libfm", min_count=2))
  # kept: f1 {10:3, 9:2}; f2 {200:3, 30:2}; f3 {7:4} -> 100, 4, 8, 5 are rare -> OOV
  assert _vocab(ds) == {"f1": ["10", "9"], "f2": ["200", "30"], "f3": ["7"]}
  assert ds.feature_map.vocab_sizes == (4, 4, 3)
  np.testing.assert_array_equal(
      _x(ds, "train"),
      [[1, 1, 1], [2, 1, 1], [1, 2, 2], [1, 2, 1], [2, 1, 2], [3, 3, 1]],
  )
  # "999" occurs 3x (>= min_count) in test, yet it is OOV: the vocabulary is fitted on train only.
  np.testing.assert_array_equal(_x(ds, "test"), [[3, 2, 2], [3, 3, 1], [3, 1, 2], [2, 3, 2]])
  assert (_x(ds, "train") != 0).all() and (_x(ds, "test") != 0).all()


def test_libfm_labels_and_feature_map_json(libfm_dir, tmp_path):
  ds = _load(_cfg(libfm_dir, tmp_path / "cache", test="test.libfm"))
  np.testing.assert_array_equal(_y(ds, "train"), [1, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(_y(ds, "test"), [1, 0, 0, 1])
  assert _y(ds, "train").dtype == np.float32
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
  _write(d / "train.libfm", "+1 1:1\n0 2:1\n1 1:1\n-1 2:1\n")
  ds = _load(_cfg(d, tmp_path / "cache", fields=("a",)))
  np.testing.assert_array_equal(_y(ds, "train"), [1, 0, 1, 0])


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
  _write(d / "train.libfm", MOD_LIBFM)
  ds = _load(_cfg(d, tmp_path / "cache", fields=("a", "b"), split="mod", valid_mod=3))
  assert _vocab(ds) == {"a": ["1", "2", "3"], "b": ["51", "52"]}
  assert ds.feature_map.num_rows == {"train": 4, "valid": 3}
  np.testing.assert_array_equal(_x(ds, "train"), [[2, 1], [1, 2], [3, 1], [3, 2]])  # rows 1, 2, 4, 5
  np.testing.assert_array_equal(_y(ds, "train"), [0, 1, 0, 1])
  # rows 0, 3, 6: "50" (valid-only) and "4", "53" (unseen) -> OOV (a: 4, b: 3)
  np.testing.assert_array_equal(_x(ds, "valid"), [[1, 3], [2, 3], [4, 3]])
  np.testing.assert_array_equal(_y(ds, "valid"), [1, 0, 1])
  assert ds.feature_map.positive_rate == {"train": pytest.approx(0.5), "valid": pytest.approx(2 / 3)}


def test_mod_split_with_test_file_and_chunking(tmp_path, monkeypatch):
  """Same mod rule when the file is read in several chunks (row indices continue across chunks)."""
  d = tmp_path / "raw"
  lines = [f"{1 if i % 4 == 0 else -1} {i}:1" for i in range(23)]
  _write(d / "train.libfm", "\n".join(lines) + "\n")
  _write(d / "test.libfm", "1 5:1\n-1 77:1\n")
  monkeypatch.setattr(dataset_mod, "read_libfm", functools.partial(libfm_mod.read_libfm, chunk_rows=4))
  ds = _load(_cfg(d, tmp_path / "cache", fields=("a",), split="mod", valid_mod=5, test="test.libfm", engine="python"))
  valid_rows = [i for i in range(23) if i % 5 == 0]
  train_rows = [i for i in range(23) if i % 5 != 0]
  vocab = _vocab(ds)["a"]
  assert vocab == sorted(str(i) for i in train_rows)
  oov = len(vocab) + 1
  lookup = {t: j + 1 for j, t in enumerate(vocab)}
  np.testing.assert_array_equal(_x(ds, "train")[:, 0], [lookup[str(i)] for i in train_rows])
  np.testing.assert_array_equal(_x(ds, "valid")[:, 0], [oov] * len(valid_rows))
  np.testing.assert_array_equal(_y(ds, "valid"), [1.0 if i % 4 == 0 else 0.0 for i in valid_rows])
  np.testing.assert_array_equal(_x(ds, "test")[:, 0], [oov, oov])  # 5 is a valid row (5 % 5 == 0)
  assert ds.feature_map.num_rows == {"train": 18, "valid": 5, "test": 2}


# ================================================================================ bad input


def _load_error(cfg, exc=DataFormatError) -> str:
  """The message of the ``exc`` that loading ``cfg`` raises."""
  with pytest.raises(exc) as e:
    _load(cfg)
  return str(e.value)


def test_libfm_wrong_number_of_fields_names_file_and_line(tmp_path):
  d = tmp_path / "raw"
  p = _write(d / "train.libfm", "1 1:1 2:1 3:1\n-1 1:1 2:1 3:1\n1 1:1 2:1\n")
  msg = _load_error(_cfg(d, tmp_path / "cache"))
  assert f"{p}:3:" in msg
  assert "expected 3" in msg and "found 2" in msg


def test_libfm_label_outside_map_names_file_and_line(tmp_path):
  d = tmp_path / "raw"
  p = _write(d / "train.libfm", "1 1:1 2:1 3:1\n2 1:1 2:1 3:1\n")
  msg = _load_error(_cfg(d, tmp_path / "cache"))
  assert f"{p}:2:" in msg
  assert "'2'" in msg


def test_libfm_blank_line_is_an_error_with_line(tmp_path):
  d = tmp_path / "raw"
  p = _write(d / "train.libfm", "1 1:1 2:1 3:1\n\n-1 1:1 2:1 3:1\n")
  msg = _load_error(_cfg(d, tmp_path / "cache"))
  assert f"{p}:2:" in msg


@pytest.mark.parametrize("fmt", ["libfm", "delimited"])
def test_empty_file_names_path(tmp_path, fmt):
  d = tmp_path / "raw"
  _write(d / "train.txt", "1 1:1 2:1 3:1\n" if fmt == "libfm" else "1\t1\t2\t3\n")
  p = _write(d / "test.txt", "")
  extra = {} if fmt == "libfm" else {"column_names": ("label", "f1", "f2", "f3")}
  msg = _load_error(_cfg(d, tmp_path / "cache", fmt=fmt, train="train.txt", test="test.txt", **extra))
  assert str(p) in msg and "empty" in msg


def test_missing_data_dir_names_path(tmp_path):
  missing = tmp_path / "does_not_exist"
  msg = _load_error(_cfg(missing, tmp_path / "cache"), FileNotFoundError)
  assert str(missing) in msg
  assert not (tmp_path / "cache").exists()


def test_missing_file_names_path(libfm_dir, tmp_path):
  msg = _load_error(_cfg(libfm_dir, tmp_path / "cache", test="nope.libfm"), FileNotFoundError)
  assert str(libfm_dir / "nope.libfm") in msg
  assert "test" in msg


def test_empty_data_dir_resolves_kdef_data_dir_subdir(tmp_path, monkeypatch, libfm_dir):
  monkeypatch.setenv("KDEF_DATA_DIR", str(libfm_dir.parent))
  cfg = _cfg("", tmp_path / "cache", test="test.libfm")
  cfg.subdir = libfm_dir.name
  ds = _load(cfg)
  assert ds.feature_map.num_rows == {"train": 6, "test": 4}
  cfg.subdir = "absent_subdir"
  msg = _load_error(cfg, FileNotFoundError)
  assert str(libfm_dir.parent / "absent_subdir") in msg


def test_unknown_on_bad_rows_rejected(libfm_dir, tmp_path):
  with pytest.raises(ValueError, match="on_bad_rows"):
    _load(_cfg(libfm_dir, tmp_path / "cache", on_bad_rows="ignore"))


DELIM_COLS = ("label", "I1", "I2", "C1", "C2")


def _dcfg(data_dir, cache_dir, **kw):
  kw.setdefault("train", "train.tsv")
  kw.setdefault("column_names", DELIM_COLS)
  kw.setdefault("numeric_fields", ("I1", "I2"))
  return _cfg(data_dir, cache_dir, fmt="delimited", fields=("I1", "I2", "C1", "C2"), **kw)


def test_delimited_wrong_column_count_names_file_and_line(tmp_path):
  d = tmp_path / "raw"
  p = _write(d / "train.tsv", "1\t1\t2\ta\tb\n0\t1\t2\ta\tb\n0\t1\t2\ta\n1\t1\t2\ta\tb\n")
  msg = _load_error(_dcfg(d, tmp_path / "cache"))
  assert f"{p}:3:" in msg
  assert "expected 5 columns, found 4" in msg


def test_delimited_bad_label_names_file_and_line(tmp_path):
  d = tmp_path / "raw"
  p = _write(d / "train.tsv", "1\t1\t2\ta\tb\n0\t1\t2\ta\tb\nyes\t1\t2\ta\tb\n")
  msg = _load_error(_dcfg(d, tmp_path / "cache"))
  assert f"{p}:3:" in msg and "'yes'" in msg


def test_delimited_non_numeric_in_numeric_field_names_file_line_column(tmp_path):
  d = tmp_path / "raw"
  p = _write(d / "train.tsv", "1\t1\t2\ta\tb\n0\t1\t2\ta\tb\n1\t3\t2\ta\tb\n0\tabc\t2\ta\tb\n")
  msg = _load_error(_dcfg(d, tmp_path / "cache"))
  assert f"{p}:4:" in msg
  assert "'I1'" in msg and "'abc'" in msg


def test_delimited_non_finite_numeric_is_an_error(tmp_path):
  d = tmp_path / "raw"
  p = _write(d / "train.tsv", "1\t1\t2\ta\tb\n0\t1\tinf\ta\tb\n")
  msg = _load_error(_dcfg(d, tmp_path / "cache"))
  assert f"{p}:2:" in msg and "'I2'" in msg


def test_delimited_header_line_numbers_count_the_header(tmp_path):
  d = tmp_path / "raw"
  p = _write(d / "train.csv", "label,I1,I2,C1,C2\n1,1,2,a,b\n0,x1,2,a,b\n")
  msg = _load_error(_dcfg(d, tmp_path / "cache", train="train.csv", header=True, delimiter=",", column_names=()))
  assert f"{p}:3:" in msg


def test_delimited_header_missing_schema_column(tmp_path):
  d = tmp_path / "raw"
  p = _write(d / "train.csv", "label,I1,C1,C2\n1,1,a,b\n")
  msg = _load_error(_dcfg(d, tmp_path / "cache", train="train.csv", header=True, delimiter=",", column_names=()))
  assert str(p) in msg and "I2" in msg


def test_delimited_header_columns_in_any_order(tmp_path):
  d = tmp_path / "raw"
  _write(d / "train.csv", "C2,C1,extra,I2,label,I1\nq,a,zz,2,1,3\nr,b,zz,1,0,\n")
  ds = _load(_dcfg(d, tmp_path / "cache", train="train.csv", header=True, delimiter=",", column_names=()))
  # I1: 3 -> bucket 1 (id 1), "" -> OOV 2; I2: 2 -> id 2, 1 -> id 1; C1 a/b; C2 q/r
  np.testing.assert_array_equal(_x(ds, "train"), [[1, 2, 1, 1], [2, 1, 2, 2]])
  np.testing.assert_array_equal(_y(ds, "train"), [1, 0])


def test_delimited_undecodable_bytes_names_path(tmp_path):
  d = tmp_path / "raw"
  p = d / "train.tsv"
  d.mkdir()
  p.write_bytes(b"1\t1\t2\ta\tb\n0\t1\t2\ta\tb\n0\t1\t2\t\xff\xfe\tb\n")
  msg = _load_error(_dcfg(d, tmp_path / "cache"))
  assert str(p) in msg
  assert not any((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


def test_delimited_undecodable_bytes_names_line(tmp_path):
  d = tmp_path / "raw"
  p = d / "train.tsv"
  d.mkdir()
  p.write_bytes(b"1\t1\t2\ta\tb\n0\t1\t2\ta\tb\n0\t1\t2\t\xff\xfe\tb\n")
  msg = _load_error(_dcfg(d, tmp_path / "cache"))
  assert re.search(r"line 3\b|:3:", msg), msg


def test_libfm_undecodable_bytes_names_path(tmp_path):
  d = tmp_path / "raw"
  p = d / "train.libfm"
  d.mkdir()
  p.write_bytes(b"1 1:1 2:1 3:1\n-1 1:1 2:1 3:1\n1 \xff\xfe:1 2:1 3:1\n")
  msg = _load_error(_cfg(d, tmp_path / "cache"))
  assert f"{p}:3:" in msg


def test_libfm_skip_bad_rows_counts_and_keeps_good_rows(tmp_path):
  d = tmp_path / "raw"
  p = _write(
      d / "train.libfm",
      "1 1:1 5:1\n"  # row 0 good
      "-1 2:1\n"  # row 1 wrong field count
      "1 3:1 6:1\n"  # row 2 good
      "7 1:1 5:1\n"  # row 3 bad label
      "-1 2:1 6:1\n"  # row 4 good
      "\n"  # row 5 empty line
      "1 :1 6:1\n",  # row 6 no index
  )
  ds = _load(_cfg(d, tmp_path / "cache", fields=("a", "b"), on_bad_rows="skip"))
  assert ds.feature_map.skipped_rows == {str(p): 4}
  assert ds.feature_map.num_rows == {"train": 3}
  assert _vocab(ds) == {"a": ["1", "2", "3"], "b": ["5", "6"]}
  np.testing.assert_array_equal(_x(ds, "train"), [[1, 1], [3, 2], [2, 2]])
  np.testing.assert_array_equal(_y(ds, "train"), [1, 1, 0])


def test_skip_with_mod_split_counts_skipped_rows_in_row_index(tmp_path):
  d = tmp_path / "raw"
  _write(d / "train.libfm", "1 1:1\n-1\n1 2:1\n-1 3:1\n1 4:1\n-1 5:1\n")  # row 1 malformed
  ds = _load(_cfg(d, tmp_path / "cache", fields=("a",), on_bad_rows="skip", split="mod", valid_mod=3))
  # data rows 0..5, row 1 skipped: valid = rows 0, 3; train = rows 2, 4, 5 (tokens 2, 4, 5)
  assert _vocab(ds) == {"a": ["2", "4", "5"]}
  np.testing.assert_array_equal(_x(ds, "train")[:, 0], [1, 2, 3])
  np.testing.assert_array_equal(_y(ds, "valid"), [1, 0])
  assert sum(ds.feature_map.skipped_rows.values()) == 1


def test_delimited_mod_split_with_header(tmp_path):
  d = tmp_path / "raw"
  # data rows 0..4 (the header is not a data row): valid = rows 0, 2, 4 with valid_mod=2
  _write(d / "train.csv", "label,I1,I2,C1,C2\n1,1,1,r0,x\n0,1,1,r1,x\n1,1,1,r2,x\n0,1,1,r3,x\n0,1,1,r4,x\n")
  ds = _load(_dcfg(d, tmp_path / "cache", train="train.csv", header=True, delimiter=",", column_names=(),
                   split="mod", valid_mod=2))
  assert _vocab(ds)["C1"] == ["r1", "r3"]
  np.testing.assert_array_equal(_x(ds, "train")[:, 2], [1, 2])
  np.testing.assert_array_equal(_x(ds, "valid")[:, 2], [3, 3, 3])
  np.testing.assert_array_equal(_y(ds, "valid"), [1, 1, 0])
  np.testing.assert_array_equal(_y(ds, "train"), [0, 0])


def test_delimited_skip_bad_rows(tmp_path):
  d = tmp_path / "raw"
  p = _write(
      d / "train.tsv",
      "1\t1\t2\ta\tb\n"
      "0\t1\t2\ta\n"  # too few columns
      "2\t1\t2\ta\tb\n"  # bad label
      "0\t3\t1\tc\td\n"
      "1\t1\t2\ta\tb\textra\n",  # too many columns
  )
  ds = _load(_dcfg(d, tmp_path / "cache", on_bad_rows="skip"))
  assert ds.feature_map.skipped_rows == {str(p): 3}
  np.testing.assert_array_equal(_y(ds, "train"), [1, 0])
  # I1: 1 -> 1, 3 -> bucket 1 : same token; I2: 2 -> id 2, 1 -> id 1
  np.testing.assert_array_equal(_x(ds, "train"), [[1, 2, 1, 1], [1, 1, 2, 2]])


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
  _write(d / "train.tsv", CRITEO_TRAIN)
  _write(d / "test.tsv", CRITEO_TEST)
  return _load(_dcfg(d, tmp_path / "cache", test="test.tsv"))


def test_bucketize_hand_values():
  raw = np.array(["", "0", "0.9", "1", "1.99", "2", "2.5", "3", "10", "25", "1000", "-1", "-1.7", "-3", "1e3"],
                 dtype=object)
  np.testing.assert_array_equal(bucketize(raw), [0, 0, 0, 1, 1, 2, 0, 1, 5, 10, 47, -1, -1, -3, 47])
  assert bucketize(raw).dtype == np.int64


def test_criteo_numeric_buckets_quirk_and_numeric_sort(criteo_tiny):
  ds = criteo_tiny
  # I1 tokens (bucket 0 = missing or genuine 0 is the NA token): {1, 5, 47} -> numeric order;
  # lexicographic order would be "1" < "47" < "5".
  # I2 tokens {-1, 1, 2, 10}: numeric order; lexicographic would be "-1" < "1" < "10" < "2".
  assert _vocab(ds) == {"I1": ["1", "5", "47"], "I2": ["-1", "1", "2", "10"], "C1": ["a", "b", "c"], "C2": ["x", "y"]}
  assert ds.feature_map.vocab_sizes == (5, 6, 5, 4)
  assert [f.source for f in ds.feature_map.fields] == ["numeric_bucket", "numeric_bucket", "categorical", "categorical"]
  x = _x(ds, "train")
  np.testing.assert_array_equal(x[:, 0], [4, 4, 1, 2, 3])  # "" -> OOV, 0 -> OOV (quirk), 3, 10, 1000
  np.testing.assert_array_equal(x[:, 1], [1, 4, 3, 1, 2])  # -1, 25, 2, -1.7 (trunc -1), 1
  np.testing.assert_array_equal(x[:, 2], [2, 4, 1, 2, 3])  # empty categorical -> OOV
  np.testing.assert_array_equal(x[:, 3], [1, 1, 2, 3, 1])
  np.testing.assert_array_equal(_y(ds, "train"), [1, 0, 1, 0, 1])
  assert (x != 0).all()


def test_criteo_test_split_oov(criteo_tiny):
  x = _x(criteo_tiny, "test")
  # I1 OOV = 4, I2 OOV = 5, C1 OOV = 4, C2 OOV = 3
  np.testing.assert_array_equal(x, [[4, 4, 4, 2], [1, 5, 1, 3]])
  np.testing.assert_array_equal(_y(criteo_tiny, "test"), [0, 1])


def test_numeric_field_min_count_applies_to_buckets(tmp_path):
  d = tmp_path / "raw"
  # I1 buckets: 1 (from 1), 1 (from 3), 5 (from 10), 2, 2 -> counts {1: 2, 5: 1, 2: 2}
  _write(d / "train.tsv", "1\t1\t1\ta\tb\n0\t3\t1\ta\tb\n1\t10\t1\ta\tb\n0\t2\t1\ta\tb\n1\t2\t1\ta\tb\n")
  ds = _load(_dcfg(d, tmp_path / "cache", min_count=2))
  assert _vocab(ds)["I1"] == ["1", "2"]
  np.testing.assert_array_equal(_x(ds, "train")[:, 0], [1, 1, 3, 2, 2])


# =================================================================================== cache


def test_cache_is_reused_without_rebuild(libfm_dir, tmp_path, monkeypatch):
  cfg = _cfg(libfm_dir, tmp_path / "cache", test="test.libfm")
  ds1 = _load(cfg)
  fm_path = ds1.cache_dir / "feature_map.json"
  mtime = fm_path.stat().st_mtime_ns
  assert ds1.cache_dir.parent == tmp_path / "cache"
  assert ds1.cache_dir.name.startswith("tiny-")

  def boom(*a, **k):
    raise AssertionError("the count pass must not run when the cache exists")

  monkeypatch.setattr(preprocess, "_admit", boom)
  ds2 = _load(cfg)
  assert ds2.cache_dir == ds1.cache_dir
  assert fm_path.stat().st_mtime_ns == mtime
  np.testing.assert_array_equal(_x(ds2, "test"), _x(ds1, "test"))
  assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [ds1.cache_dir.name]


def test_cache_key_changes_with_schema_and_content(libfm_dir, tmp_path):
  root = tmp_path / "cache"
  base = _load(_cfg(libfm_dir, root, test="test.libfm")).cache_dir
  other_min = _load(_cfg(libfm_dir, root, test="test.libfm", min_count=2)).cache_dir
  other_fields = _load(_cfg(libfm_dir, root, test="test.libfm", fields=("g1", "g2", "g3"))).cache_dir
  assert len({base, other_min, other_fields}) == 3

  # Same size, different content, mtime moved forward: a new cache, and it holds the new content.
  train = libfm_dir / "train.libfm"
  new_text = TRAIN_LIBFM.replace("100:1 4:1", "101:1 4:1")
  assert len(new_text) == len(TRAIN_LIBFM)
  st = train.stat()
  train.write_text(new_text)
  os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
  ds_new = _load(_cfg(libfm_dir, root, test="test.libfm"))
  assert ds_new.cache_dir != base
  assert _vocab(ds_new)["f1"] == ["10", "101", "9"]
  # Appending a row (size change) also gives a new cache.
  with open(train, "a") as f:
    f.write("1 10:1 200:1 7:1\n")
  ds_app = _load(_cfg(libfm_dir, root, test="test.libfm"))
  assert ds_app.cache_dir not in (base, ds_new.cache_dir)
  assert ds_app.feature_map.num_rows["train"] == 7


def _leftovers(root):
  return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_failed_build_in_count_pass_leaves_nothing(libfm_dir, tmp_path):
  _write(libfm_dir / "bad_test.libfm", "1 999:1 30:1 8:1\n3 1:1 2:1 3:1\n")
  root = tmp_path / "cache"
  msg = _load_error(_cfg(libfm_dir, root, test="bad_test.libfm"))
  assert f"{libfm_dir / 'bad_test.libfm'}:2:" in msg
  assert _leftovers(root) == []


def test_bad_value_in_test_split_is_found_in_the_first_pass(tmp_path):
  d = tmp_path / "raw"
  _write(d / "train.tsv", CRITEO_TRAIN)
  # A non-numeric value in a test row: every split is validated in the first pass.
  p = _write(d / "test.tsv", "0\t2\t1\ta\tx\n1\tabc\t1\ta\tx\n")
  root = tmp_path / "cache"
  msg = _load_error(_dcfg(d, root, test="test.tsv"))
  assert f"{p}:2:" in msg and "'abc'" in msg
  assert _leftovers(root) == []


def test_failed_build_in_encode_pass_leaves_nothing(tmp_path, monkeypatch):
  """A crash in the second pass (rewriting ids in place) leaves no cache and no temporary folder."""
  d = tmp_path / "raw"
  _write(d / "train.tsv", CRITEO_TRAIN)
  _write(d / "test.tsv", "0\t2\t1\ta\tx\n1\t3\t1\ta\tx\n")
  passes = []
  real = preprocess.remap_in_place

  def crash(*a, **k):
    passes.append("encode")
    raise OSError("disk full (simulated)")

  monkeypatch.setattr(preprocess, "remap_in_place", crash)
  root = tmp_path / "cache"
  with pytest.raises(OSError, match="simulated"):
    _load(_dcfg(d, root, test="test.tsv"))
  assert passes == ["encode"]
  assert _leftovers(root) == []
  assert not list(tmp_path.rglob("*.tmp-*"))
  # Without the fault it builds normally.
  monkeypatch.setattr(preprocess, "remap_in_place", real)
  ds = _load(_dcfg(d, root, test="test.tsv"))
  assert ds.feature_map.num_rows == {"train": 5, "test": 2}
  assert _leftovers(root) == [ds.cache_dir.name]


# ================================================================================== loader


def _toy_split(n=10, c=3):
  x = (np.arange(n)[:, None] * 10 + np.arange(c)[None, :] + 1).astype(np.int32)  # row r: 10r+1..10r+c
  y = (np.arange(n) % 2).astype(np.float32)
  return Split("train", x, y)


def test_num_batches():
  assert [num_batches(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_iterate_batches_permutation_covers_each_row_once_and_pads():
  split = _toy_split(10)
  order = epoch_permutation(10, seed=3, epoch=0)
  batches = list(iterate_batches(split, 4, order=order))
  assert len(batches) == 3
  seen = []
  for b, batch in enumerate(batches):
    assert batch["ids"].shape == (4, 3) and batch["ids"].dtype == np.int32
    assert batch["y"].shape == (4,) and batch["y"].dtype == np.float32
    assert batch["mask"].shape == (4,) and batch["mask"].dtype == np.float32
    real = batch["mask"] == 1
    rows = (batch["ids"][real, 0] - 1) // 10
    # each real row is intact (ids and its label)
    np.testing.assert_array_equal(batch["ids"][real], split.x[rows])
    np.testing.assert_array_equal(batch["y"][real], split.y[rows])
    # the batch holds exactly the rows order[4b:4b+4]
    assert sorted(rows.tolist()) == sorted(order[4 * b : 4 * b + 4].tolist())
    seen.extend(rows.tolist())
  assert sorted(seen) == list(range(10))
  last = batches[-1]
  np.testing.assert_array_equal(last["mask"], [1, 1, 0, 0])
  np.testing.assert_array_equal(last["ids"][2:], 0)
  np.testing.assert_array_equal(last["y"][2:], 0)
  assert batches[0]["mask"].sum() == 4 and batches[1]["mask"].sum() == 4


def test_iterate_batches_file_order_without_permutation():
  split = _toy_split(7)
  batches = list(iterate_batches(split, 3))
  assert [b["mask"].tolist() for b in batches] == [[1, 1, 1], [1, 1, 1], [1, 0, 0]]
  ids = np.concatenate([b["ids"] for b in batches])
  np.testing.assert_array_equal(ids[:7], split.x)
  np.testing.assert_array_equal(ids[7:], 0)
  ys = np.concatenate([b["y"] for b in batches])
  np.testing.assert_array_equal(ys[:7], split.y)


def test_iterate_batches_exact_multiple_has_no_padding_and_works_on_memmap(tmp_path):
  x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.int32, (8, 2))
  x[:] = np.arange(16).reshape(8, 2) + 1
  x.flush()
  del x
  split = Split("test", np.load(tmp_path / "x.npy", mmap_mode="r"), np.ones(8, np.float32))
  batches = list(iterate_batches(split, 4, order=epoch_permutation(8, 0, 1)))
  assert len(batches) == 2
  assert all(b["mask"].tolist() == [1, 1, 1, 1] for b in batches)
  got = np.concatenate([b["ids"] for b in batches])
  np.testing.assert_array_equal(np.sort(got[:, 0]), np.arange(1, 16, 2))


def test_epoch_permutation_reproducible_and_differs_across_epochs():
  p0 = epoch_permutation(100, seed=2024, epoch=0)
  assert sorted(p0.tolist()) == list(range(100))
  np.testing.assert_array_equal(p0, epoch_permutation(100, seed=2024, epoch=0))
  p1 = epoch_permutation(100, seed=2024, epoch=1)
  assert not np.array_equal(p0, p1)
  assert sorted(p1.tolist()) == list(range(100))
  assert not np.array_equal(p0, epoch_permutation(100, seed=2025, epoch=0))
  assert not np.array_equal(p0, np.arange(100))


def test_prefetch_preserves_items_and_order():
  assert list(prefetch(iter(range(50)), size=2)) == list(range(50))
  assert list(prefetch(iter(range(5)), size=0)) == [0, 1, 2, 3, 4]
  assert list(prefetch(iter(range(5)), size=-1)) == [0, 1, 2, 3, 4]
  assert list(prefetch(iter([]), size=3)) == []
  assert list(prefetch(iter(range(4)), size=2, transform=lambda v: v * 10)) == [0, 10, 20, 30]
  assert list(prefetch(iter(range(4)), size=0, transform=lambda v: v + 1)) == [1, 2, 3, 4]


def _consume_with_watchdog(it, timeout=10.0):
  """Drain ``it`` in a helper thread; returns (items, exception). Fails instead of hanging."""
  import threading

  got, err = [], []

  def run():
    try:
      for v in it:
        got.append(v)
    except BaseException as e:  # noqa: BLE001
      err.append(e)

  t = threading.Thread(target=run, daemon=True)
  t.start()
  t.join(timeout)
  assert not t.is_alive(), f"prefetch consumer hung after {got}"
  return got, (err[0] if err else None)


@pytest.mark.parametrize("size", [0, 1, 3])
def test_prefetch_reraises_producer_exception(size):
  def gen():
    yield 1
    yield 2
    raise RuntimeError("producer failed")

  got, err = _consume_with_watchdog(prefetch(gen(), size=size))
  assert got == [1, 2]
  assert isinstance(err, RuntimeError) and "producer failed" in str(err)


def test_prefetch_transform_exception_reraised():
  def bad(v):
    if v == 2:
      raise KeyError("transform")
    return v

  got, err = _consume_with_watchdog(prefetch(iter(range(5)), size=2, transform=bad))
  assert got == [0, 1]
  assert isinstance(err, KeyError)


def test_prefetch_early_break_does_not_hang():
  def infinite():
    i = 0
    while True:
      yield i
      i += 1

  it = prefetch(infinite(), size=2)
  assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
  it.close()  # runs the finally: stops and drains the producer thread


# =============================================================================== synthetic

TINY_SYN = SyntheticSpec(vocab_sizes=(12, 7, 5, 3), num_train=3000, num_valid=500, num_test=3000, seed=11,
                         positive_rate=0.3, chunk_rows=1000)


def test_synthetic_deterministic_across_dirs(tmp_path):
  a = build_synthetic(TINY_SYN, tmp_path / "a", dataset_id="syn", log=_quiet)
  b = build_synthetic(TINY_SYN, tmp_path / "b", dataset_id="syn", log=_quiet)
  assert a != b
  for name in ("train_x.npy", "train_y.npy", "valid_x.npy", "valid_y.npy", "test_x.npy", "test_y.npy"):
    assert (a / name).read_bytes() == (b / name).read_bytes(), name
  # a different seed gives different data
  c = build_synthetic(dataclasses.replace(TINY_SYN, seed=12), tmp_path / "c", dataset_id="syn", log=_quiet)
  assert (a / "train_x.npy").read_bytes() != (c / "train_x.npy").read_bytes()


def test_synthetic_ids_labels_rates_and_signal(tmp_path):
  path = build_synthetic(TINY_SYN, tmp_path / "syn", dataset_id="syn", log=_quiet)
  ds = dataset_mod.open_cache(path)
  fm = ds.feature_map
  assert fm.vocab_sizes == (12, 7, 5, 3)
  assert fm.num_rows == {"train": 3000, "valid": 500, "test": 3000}
  for s in ("train", "valid", "test"):
    x, y = _x(ds, s), _y(ds, s)
    assert x.dtype == np.int32 and x.shape == (fm.num_rows[s], 4)
    for j, v in enumerate(fm.vocab_sizes):
      assert x[:, j].min() >= 1 and x[:, j].max() <= v - 2, (s, j)
    assert set(np.unique(y).tolist()) == {0.0, 1.0}
    assert fm.positive_rate[s] == pytest.approx(float(y.mean()), abs=1e-6)
  assert abs(fm.positive_rate["train"] - 0.3) < 0.05
  assert abs(fm.positive_rate["test"] - 0.3) < 0.05
  # Every id of the small fields is drawn (Zipf over 1..n with 3000 rows).
  assert set(np.unique(_x(ds, "train")[:, 3]).tolist()) == {1}
  assert set(np.unique(_x(ds, "train")[:, 2]).tolist()) == {1, 2, 3}
  bayes = fm.info["bayes_auc"]["test_first_chunk"]
  assert bayes > 0.6
  # The recorded Bayes AUC is the AUC of the planted logit on the first test chunk.
  planted = _Planted(TINY_SYN)
  n0 = TINY_SYN.chunk_rows
  assert bayes == pytest.approx(auc(_y(ds, "test")[:n0], planted.logit(_x(ds, "test")[:n0])), abs=1e-12)
  # And the planted logit really predicts the labels beyond that chunk.
  assert auc(_y(ds, "train"), planted.logit(_x(ds, "train"))) > 0.6


def test_synthetic_through_load_dataset(tmp_path):
  cfg = base_config().data
  cfg.cache_dir = str(tmp_path / "cache")
  cfg.synthetic.num_train, cfg.synthetic.num_valid, cfg.synthetic.num_test = 500, 100, 100
  ds = _load(cfg)
  from kdef_jax.data.synthetic import SMALL_VOCAB

  assert ds.feature_map.vocab_sizes == SMALL_VOCAB
  assert ds.cache_dir.parent == tmp_path / "cache"
  assert len(ds.splits["train"]) == 500 and len(ds.splits["test"]) == 100
  cfg.synthetic.preset = "huge"
  with pytest.raises(ValueError, match="preset"):
    _load(cfg)


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
  ds = _load(cfg.data)
  fm = ds.feature_map
  assert fm.num_rows == {"train": 51_949, "valid": 5_773, "test": 28_860}
  assert fm.total_vocab == 5_298  # = FuxiCTR's embedding rows on the same split
  assert fm.num_fields == 10
  assert [f.name for f in fm.fields] == list(load_config_module("frappe").FRAPPE_FIELDS)
  for s in ("train", "valid", "test"):
    y = _y(ds, s)
    assert set(np.unique(y).tolist()) == {0.0, 1.0}
    assert (_x(ds, s) >= 1).all()
    assert (_x(ds, s) <= np.array(fm.vocab_sizes) - 1).all()
  assert fm.positive_rate["train"] == pytest.approx(0.33, abs=0.01)
  assert fm.positive_rate["test"] == pytest.approx(0.33, abs=0.01)
  # valid = rows 0, 10, 20, ... of frappe.validation.libfm, in file order, labels 1/-1 -> 1/0
  raw_labels = [ln.split(" ", 1)[0] for ln in (d / "frappe.validation.libfm").read_text().splitlines()]
  expect = np.array([1.0 if lab == "1" else 0.0 for lab in raw_labels[::10]], np.float32)
  np.testing.assert_array_equal(_y(ds, "valid"), expect)


def test_criteo_sample_real(tmp_path):
  d = _real_dir("criteo_sample")
  if not all((d / f).is_file() for f in ("train.csv", "dev.csv", "test.csv")):
    pytest.skip(f"Criteo sample files not found in {d} (set KDEF_DATA_DIR to the folder holding criteo_sample/)")
  mod = load_config_module("criteo")
  cfg = mod.get_config("sample")
  cfg.data.data_dir = str(d)
  cfg.data.cache_dir = str(tmp_path / "cache")
  ds = _load(cfg.data)
  fm = ds.feature_map
  assert fm.num_rows == {"train": 7_200, "valid": 409, "test": 391}
  assert fm.num_fields == 39
  assert [f.name for f in fm.fields] == list(mod.I_FIELDS + mod.C_FIELDS)
  vocab = _vocab(ds)
  for name in mod.I_FIELDS:
    toks = [int(t) for t in vocab[name]]
    assert toks == sorted(toks) and len(set(toks)) == len(toks), name  # numeric order
    assert 0 not in toks, name  # bucket 0 is the NA token (Criteo quirk)
  assert "" not in vocab["C1"]
  for s in ("train", "valid", "test"):
    assert (_x(ds, s) >= 1).all()
    assert set(np.unique(_y(ds, s)).tolist()) == {0.0, 1.0}


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
  _load(_cfg(libfm_dir, tmp_path / "c1", test="test.libfm"))
  assert gc.isenabled()  # disabled during the build only
  gc.disable()
  try:
    _load(_cfg(libfm_dir, tmp_path / "c2", test="test.libfm", min_count=2))
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
