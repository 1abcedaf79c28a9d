"""The built-in synthetic dataset: deterministic, planted signal, and loadable like any dataset."""
import dataclasses

import numpy as np
import pytest

from data_helpers import load_data, quiet, x_of, y_of
from kdef_jax.config import base_config
from kdef_jax.data import dataset as dataset_mod
from kdef_jax.data.synthetic import SyntheticSpec, _Planted, build_synthetic
from kdef_jax.metrics import auc


@pytest.fixture(autouse=True)
def _cache_env(no_home_cache):
  """Every test in this file runs with KDEF_CACHE_DIR inside tmp_path."""
  yield


TINY_SYN = SyntheticSpec(vocab_sizes=(12, 7, 5, 3), num_train=3000, num_valid=500, num_test=3000, seed=11,
                         positive_rate=0.3, chunk_rows=1000)


def test_synthetic_deterministic_across_dirs(tmp_path):
  a = build_synthetic(TINY_SYN, tmp_path / "a", dataset_id="syn", log=quiet)
  b = build_synthetic(TINY_SYN, tmp_path / "b", dataset_id="syn", log=quiet)
  assert a != b
  for name in ("train_x.npy", "train_y.npy", "valid_x.npy", "valid_y.npy", "test_x.npy", "test_y.npy"):
    assert (a / name).read_bytes() == (b / name).read_bytes(), name
  # a different seed gives different data
  c = build_synthetic(dataclasses.replace(TINY_SYN, seed=12), tmp_path / "c", dataset_id="syn", log=quiet)
  assert (a / "train_x.npy").read_bytes() != (c / "train_x.npy").read_bytes()


def test_synthetic_ids_labels_rates_and_signal(tmp_path):
  path = build_synthetic(TINY_SYN, tmp_path / "syn", dataset_id="syn", log=quiet)
  ds = dataset_mod.open_cache(path)
  fm = ds.feature_map
  assert fm.vocab_sizes == (12, 7, 5, 3)
  assert fm.num_rows == {"train": 3000, "valid": 500, "test": 3000}
  for s in ("train", "valid", "test"):
    x, y = x_of(ds, s), y_of(ds, s)
    assert x.dtype == np.int32 and x.shape == (fm.num_rows[s], 4)
    for j, v in enumerate(fm.vocab_sizes):
      assert x[:, j].min() >= 1 and x[:, j].max() <= v - 2, (s, j)
    assert set(np.unique(y).tolist()) == {0.0, 1.0}
    assert fm.positive_rate[s] == pytest.approx(float(y.mean()), abs=1e-6)
  assert abs(fm.positive_rate["train"] - 0.3) < 0.05
  assert abs(fm.positive_rate["test"] - 0.3) < 0.05
  # Every id of the small fields is drawn (Zipf over 1..n with 3000 rows).
  assert set(np.unique(x_of(ds, "train")[:, 3]).tolist()) == {1}
  assert set(np.unique(x_of(ds, "train")[:, 2]).tolist()) == {1, 2, 3}
  bayes = fm.info["bayes_auc"]["test_first_chunk"]
  assert bayes > 0.6
  # The recorded Bayes AUC is the AUC of the planted logit on the first test chunk.
  planted = _Planted(TINY_SYN)
  n0 = TINY_SYN.chunk_rows
  assert bayes == pytest.approx(auc(y_of(ds, "test")[:n0], planted.logit(x_of(ds, "test")[:n0])), abs=1e-12)
  # And the planted logit really predicts the labels beyond that chunk.
  assert auc(y_of(ds, "train"), planted.logit(x_of(ds, "train"))) > 0.6


def test_synthetic_through_load_dataset(tmp_path):
  cfg = base_config().data
  cfg.cache_dir = str(tmp_path / "cache")
  cfg.synthetic.num_train, cfg.synthetic.num_valid, cfg.synthetic.num_test = 500, 100, 100
  ds = load_data(cfg)
  from kdef_jax.data.synthetic import SMALL_VOCAB

  assert ds.feature_map.vocab_sizes == SMALL_VOCAB
  assert ds.cache_dir.parent == tmp_path / "cache"
  assert len(ds.splits["train"]) == 500 and len(ds.splits["test"]) == 100
  cfg.synthetic.preset = "huge"
  with pytest.raises(ValueError, match="preset"):
    load_data(cfg)
