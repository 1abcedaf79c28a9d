"""Helpers of the data tests: write raw files into tmp_path, build data configs, load a dataset
quietly and read its splits back."""
import json

import numpy as np
import pytest

from kdef_jax.config import base_config
from kdef_jax.data.dataset import load_dataset
from kdef_jax.data.formats import columnar
from kdef_jax.data.schema import DataFormatError

HAS_NATIVE = columnar.available("native")
HAS_POLARS = columnar.available("columnar")
FAST = [  # the compiled engines, each skipped where its extra is missing
        pytest.param("native", marks=pytest.mark.skipif(not HAS_NATIVE, reason="numba (the 'preprocess' extra) is not installed")),
        pytest.param("columnar", marks=pytest.mark.skipif(
            not HAS_POLARS, reason="numba and polars (the 'preprocess' extra) are not installed"))]
ENGINES = ["python", *FAST]


def quiet(*args, **kwargs):
  pass


def write_file(path, data):
  """Write text (UTF-8) or bytes to ``path``, creating its folder; returns ``path``."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(data, bytes):
    path.write_bytes(data)
  else:
    path.write_text(data, encoding="utf-8")
  return path


def raw_cfg(data_dir, cache_dir, **kw):
  """``config.data`` of the base config for raw files in ``data_dir``: ``files={split: name}``, any
  other keyword a data key (name defaults to "fx")."""
  c = base_config().data
  c.name = kw.pop("name", "fx")
  c.data_dir, c.cache_dir = str(data_dir), str(cache_dir)
  for k, v in kw.pop("files", {}).items():
    c.files[k] = v
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def load_data(cfg):
  return load_dataset(cfg, log=quiet)


def load_error(cfg, exc=DataFormatError) -> str:
  """The message of the ``exc`` that loading ``cfg`` raises."""
  with pytest.raises(exc) as e:
    load_data(cfg)
  return str(e.value)


def vocab_of(ds):
  return json.loads((ds.cache_dir / "vocab.json").read_text())


def x_of(ds, split):
  return np.asarray(ds.splits[split].x)


def y_of(ds, split):
  return np.asarray(ds.splits[split].y)


def assert_same_splits(a, b):
  """Datasets ``a`` and ``b`` hold the same splits with the same ids and labels."""
  assert set(a.splits) == set(b.splits)
  for s in a.splits:
    np.testing.assert_array_equal(x_of(a, s), x_of(b, s))
    np.testing.assert_array_equal(y_of(a, s), y_of(b, s))


def data_cfg(data_dir, cache_dir, *, fmt="libfm", train="train.libfm", valid="", test="", fields=("f1", "f2", "f3"),
             split="files", valid_mod=0, min_count=1, name="tiny", **extra):
  """A ``config.data`` for files in ``data_dir`` (libFM with fields f1, f2, f3 unless told)."""
  d = base_config().data
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


DELIM_COLS = ("label", "I1", "I2", "C1", "C2")


def delimited_cfg(data_dir, cache_dir, **kw):
  """:func:`data_cfg` for a tab-separated ``train.tsv`` with columns DELIM_COLS (I1, I2 numeric)."""
  kw.setdefault("train", "train.tsv")
  kw.setdefault("column_names", DELIM_COLS)
  kw.setdefault("numeric_fields", ("I1", "I2"))
  return data_cfg(data_dir, cache_dir, fmt="delimited", fields=("I1", "I2", "C1", "C2"), **kw)


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


def write_libfm_dir(tmp_path):
  """tmp_path/raw with train.libfm (TRAIN_LIBFM) and test.libfm (TEST_LIBFM)."""
  d = tmp_path / "raw"
  write_file(d / "train.libfm", TRAIN_LIBFM)
  write_file(d / "test.libfm", TEST_LIBFM)
  return d
