"""The built-in synthetic dataset: deterministic, planted signal, and loadable like any dataset."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from data_helpers import load_data, quiet, x_of, y_of
from kdef_jax.config import base_config
from kdef_jax.data import dataset as dataset_mod
from kdef_jax.data.synthetic import SyntheticSpec, _Planted, _zipf_ids, build_synthetic
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


# Cases mutation testing of synthetic.py found unpinned (2026-12-07).

SMALL = SyntheticSpec(vocab_sizes=(12, 7, 5, 3), num_train=600, num_valid=200, num_test=200, seed=11,
           positive_rate=0.3, chunk_rows=250)


def test_zipf_ranks_follow_r_to_the_minus_s():
  """_zipf_ids returns 0-based ranks r (rank r+1 of the docstring) with P(r) ∝ (r+1)^(−s):
  frequencies within 5 standard errors of the exact law (kills a flipped exponent, a missing
  normalisation, ranks starting at 2)."""
  n, size, s = 6, 200_000, 1.05
  r = _zipf_ids(np.random.default_rng(0), n, size, s)
  assert r.min() >= 0 and r.max() <= n - 1
  w = np.arange(1, n + 1, dtype=np.float64) ** -s
  p = w / w.sum()
  freq = np.bincount(r, minlength=n) / size
  np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / size))


def test_planted_model_shapes_scales_and_pairs():
  """w_f ~ N(0, 0.3²) over all V_f ids (PAD and OOV included), v_f ~ N(0, 0.6²) of rank 4, ranks
  randomly permuted over ids 1..n_f, and min(num_pairs, F(F−1)/2) pairs of two DIFFERENT fields."""
  spec = SyntheticSpec(vocab_sizes=(4002, 7, 5, 3), num_train=500, seed=3, num_pairs=8)
  p = _Planted(spec)
  for j, v in enumerate(spec.vocab_sizes):
    assert p.w[j].shape == (v,)
    assert sorted(p.perm[j].tolist()) == list(range(1, v - 1))
  assert abs(p.w[0].std() - 0.3) < 0.02  # 4002 draws: se ≈ 0.0034
  assert not np.array_equal(p.perm[0], np.arange(1, 4001))  # rank order permuted over the ids
  assert len(p.pairs) == 6  # capped at F(F−1)/2 = 6
  for j, v in p.v.items():
    assert v.shape == (spec.vocab_sizes[j], 4)
  big = [v for j, v in p.v.items() if j == 0]
  if big:
    assert abs(big[0].std() - 0.6) < 0.03
  for seed in range(6):  # a pair is two distinct fields (not a field with itself)
    for a, b in _Planted(dataclasses.replace(spec, seed=seed, vocab_sizes=(5, 5, 5, 5))).pairs:
      assert a != b
  # the planted model depends on the seed
  q = _Planted(dataclasses.replace(spec, seed=4))
  assert not np.allclose(p.w[1], q.w[1])


def test_generated_ids_most_frequent_is_rank_one_of_the_permutation():
  spec = SyntheticSpec(vocab_sizes=(40, 7), num_train=500, seed=5, num_pairs=1)
  p = _Planted(spec)
  x = p.ids(np.random.default_rng(9), 50_000)
  counts = np.bincount(x[:, 0], minlength=40)
  assert counts.argmax() == p.perm[0][0]
  assert counts[0] == 0 and counts[39] == 0  # neither PAD nor OOV is drawn at oov_rate 0


def test_vocab_size_below_three_is_rejected():
  with pytest.raises(ValueError, match=">= 3"):
    _Planted(SyntheticSpec(vocab_sizes=(5, 2), num_train=100))


def test_logit_by_hand():
  """logit = b + Σ_f w_f[x_f] + Σ_(a,b) ⟨v_a[x_a], v_b[x_b]⟩ / √4, term by term in plain Python."""
  p = _Planted(SMALL)
  x = p.ids(np.random.default_rng(7), 5)
  got = p.logit(x)
  for i in range(5):
    want = p.bias
    for j in range(x.shape[1]):
      want += p.w[j][x[i, j]]
    for a, b in p.pairs:
      want += sum(p.v[a][x[i, a], k] * p.v[b][x[i, b], k] for k in range(4)) / np.sqrt(4.0)
    assert got[i] == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("rate", [0.02, 0.3, 0.97])
def test_bias_calibrates_the_positive_rate_exactly(rate):
  """The bisection puts mean σ(logit) of the calibration sample (seed [seed, 1], min(200k, num_train)
  rows) at the requested rate to ~1e-12, even where the bias lies beyond ±2."""
  spec = dataclasses.replace(SMALL, positive_rate=rate, num_train=2000)
  p = _Planted(spec)
  x = p.ids(np.random.default_rng([spec.seed, 1]), 2000)
  assert np.mean(1 / (1 + np.exp(-p.logit(x)))) == pytest.approx(rate, abs=1e-9)


def test_oov_ids_are_the_last_row_at_the_requested_rate():
  spec = dataclasses.replace(SMALL, oov_rate=0.2)
  p = _Planted(spec)
  x = p.ids(np.random.default_rng(1), 20_000)
  for j, v in enumerate(spec.vocab_sizes):
    assert x[:, j].min() >= 1 and x[:, j].max() <= v - 1
    assert abs((x[:, j] == v - 1).mean() - 0.2) < 0.015  # se ≈ 0.003
  assert np.isfinite(p.logit(x)).all()  # w and v have an OOV row


def test_splits_and_chunks_use_distinct_random_streams(tmp_path):
  spec = dataclasses.replace(SMALL, num_train=500, num_valid=250, num_test=250, chunk_rows=250)
  d = build_synthetic(spec, tmp_path, dataset_id="syn", log=quiet)
  tr, va, te = (np.load(d / f"{s}_x.npy") for s in ("train", "valid", "test"))
  assert not np.array_equal(tr[:250], tr[250:])  # chunk 0 vs chunk 1
  assert not np.array_equal(tr[:250], va) and not np.array_equal(tr[:250], te) and not np.array_equal(va, te)


def test_an_empty_split_has_no_rate_no_rows_and_no_bayes_auc(tmp_path):
  spec = dataclasses.replace(SMALL, num_test=0)
  d = build_synthetic(spec, tmp_path, dataset_id="syn", log=quiet)
  fm = json.loads((d / "feature_map.json").read_text())
  assert set(fm["positive_rate"]) == {"train", "valid"}
  assert set(fm["num_rows"]) == {"train", "valid"}
  assert fm["info"]["bayes_auc"] == {}


def test_a_built_cache_is_reused_not_regenerated(tmp_path):
  logs = []
  d1 = build_synthetic(SMALL, tmp_path, dataset_id="syn", log=logs.append)
  mtime = (d1 / "train_x.npy").stat().st_mtime_ns
  d2 = build_synthetic(SMALL, tmp_path, dataset_id="syn", log=logs.append)
  assert d1 == d2 and len(logs) == 1 and (d2 / "train_x.npy").stat().st_mtime_ns == mtime


def test_the_cache_key_covers_every_spec_field():
  base = SyntheticSpec()
  changed = {"vocab_sizes": (5, 5), "num_train": 7, "num_valid": 7, "num_test": 7, "seed": 1,
       "positive_rate": 0.5, "zipf_exponent": 1.5, "num_pairs": 2, "oov_rate": 0.1, "chunk_rows": 9}
  assert set(changed) == {f.name for f in dataclasses.fields(SyntheticSpec)}
  for k, v in changed.items():
    assert dataclasses.replace(base, **{k: v}).key() != base.key(), k


def test_golden_bytes_of_a_small_spec(tmp_path):
  """Same spec → byte-identical arrays, also across versions of this code (the cache is keyed by the
  spec and the generator's version). Pins every random stream: the calibration sample's seed, the OOV
  draw's presence at oov_rate 0, the chunk/split seeds. Values of generator version 2 (numpy's PCG64
  Generator streams; a numpy release that changes them would change these too)."""
  d = build_synthetic(SMALL, tmp_path, dataset_id="syn", log=quiet)
  assert d.name == "syn-dd15c3231ff03bc7" and SyntheticSpec().key() == "8c8ea3b5320fc77a"
  want = {"train_x": "1b83f60d76671dfd", "train_y": "f93b2d70fe274b1f", "valid_x": "e3b192eee3394811",
          "valid_y": "61bfa597f4e0bd38", "test_x": "5ee0806c3bc68025", "test_y": "5458c54f4646d839"}
  got = {k: hashlib.sha256(np.load(d / f"{k}.npy").tobytes()).hexdigest()[:16] for k in want}
  assert got == want
  assert _Planted(SMALL).bias == pytest.approx(-0.20834040413789062, abs=1e-12)


def test_pairs_are_distinct_and_an_empty_training_split_is_refused():
  """Version 1 drew (1, 3) and (1, 2) twice for this spec and never (0, 1) or (2, 3): now every unordered
  pair once, as many as F(F-1)/2 allows. num_train = 0 has no rows to calibrate the bias on."""
  pairs = _Planted(SMALL).pairs
  assert sorted(tuple(sorted(map(int, p))) for p in pairs) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
  for seed in range(20):
    got = [tuple(sorted(map(int, p))) for p in _Planted(dataclasses.replace(SMALL, seed=seed, num_pairs=4)).pairs]
    assert len(got) == 4 and len(set(got)) == 4
  with pytest.raises(ValueError, match="num_train must be >= 1, got 0"):
    _Planted(dataclasses.replace(SMALL, num_train=0))


def test_a_synthetic_split_of_no_rows_is_left_out_and_the_cache_reopens(tmp_path):
  """API review: num_valid=0 wrote an empty valid file that feature_map.json left out, so opening the
  cache failed ('do not match feature_map.json; delete the folder') however often it was rebuilt."""
  from kdef_jax.data.dataset import load_dataset

  c = base_config().data
  c.cache_dir = str(tmp_path)
  c.synthetic.num_train, c.synthetic.num_valid, c.synthetic.num_test = 300, 0, 0
  for _ in range(2):  # built, then reopened
    ds = load_dataset(c, log=None)  # None: no progress lines (was "'NoneType' object is not callable")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 300}
  assert sorted(p.name for p in next(tmp_path.iterdir()).glob("*.npy")) == ["train_x.npy", "train_y.npy"]
