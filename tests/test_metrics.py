"""Tests for kdef_jax.metrics: exact AUC (ties by trapezoid), clipped logloss, the ensemble teacher."""
import math
import warnings

import numpy as np
import pytest

from kdef_jax import metrics
from kdef_jax.metrics import auc, ensemble_metrics, ensemble_prob64, logloss, sigmoid64

sk_metrics = pytest.importorskip("sklearn.metrics")

EPS = 1e-7


def _sk_logloss(y, p):
  """sklearn's log_loss with FuxiCTR's eps=1e-7 clipping done by hand (newer sklearn lost ``eps``)."""
  p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
  return sk_metrics.log_loss(np.asarray(y, np.float64), p, labels=[0, 1])


def _softplus(x):
  return math.log1p(math.exp(x))


# ---------------------------------------------------------------------------------------- auc


def test_auc_hand_computed_with_ties():
  # pos scores {0.4, 0.8}, neg scores {0.1, 0.4}: pairs (0.4>0.1)=1, (0.4=0.4)=1/2, (0.8>0.1)=1,
  # (0.8>0.4)=1 -> 3.5 / 4.
  assert auc([0, 1, 0, 1], [0.1, 0.4, 0.4, 0.8]) == pytest.approx(0.875, abs=1e-15)


def test_auc_hand_computed_tie_run_across_classes():
  # labels 1,0,0,1,1 with scores 0.3,0.3,0.3,0.9,0.1. Pairs (pos, neg) with neg scores {0.3, 0.3}:
  # pos 0.3 -> 1/2 + 1/2, pos 0.9 -> 1 + 1, pos 0.1 -> 0 + 0 => 3 / 6.
  assert auc([1, 0, 0, 1, 1], [0.3, 0.3, 0.3, 0.9, 0.1]) == pytest.approx(0.5, abs=1e-15)
  # And one where the answer is not 0.5: drop the last row -> (1 + 2) / 4.
  assert auc([1, 0, 0, 1], [0.3, 0.3, 0.3, 0.9]) == pytest.approx(0.75, abs=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_many_ties(seed):
  rng = np.random.default_rng(seed)
  n = 2000
  y = (rng.random(n) < 0.3).astype(np.float64)
  # Scores rounded to one decimal: only 11 distinct values, so nearly every score is tied.
  s = np.round(np.clip(0.3 * y + rng.random(n) * 0.8, 0, 1), 1)
  assert len(np.unique(s)) <= 11
  assert auc(y, s) == pytest.approx(sk_metrics.roc_auc_score(y, s), abs=1e-12)


def test_auc_matches_sklearn_without_ties_and_unsorted_input():
  rng = np.random.default_rng(5)
  y = rng.integers(0, 2, 777)
  s = rng.normal(size=777) + 0.5 * y
  assert auc(y, s) == pytest.approx(sk_metrics.roc_auc_score(y, s), abs=1e-12)


def test_auc_float32_inputs():
  rng = np.random.default_rng(3)
  y = (rng.random(1500) < 0.4).astype(np.float32)
  s = np.round(rng.random(1500) + 0.2 * y, 2).astype(np.float32)  # float32 ties survive the cast
  expected = sk_metrics.roc_auc_score(y.astype(np.float64), s.astype(np.float64))
  got = auc(y, s)
  assert isinstance(got, float)
  assert got == pytest.approx(expected, abs=1e-12)


def test_auc_all_tied_is_half():
  assert auc([0, 1, 1, 0, 1], np.full(5, 0.37)) == pytest.approx(0.5, abs=1e-15)


def test_auc_perfect_and_inverted():
  y = np.array([0, 0, 1, 0, 1, 1])
  s = np.array([0.1, 0.2, 0.7, 0.3, 0.8, 0.9])
  assert auc(y, s) == 1.0
  assert auc(y, -s) == 0.0
  assert auc(1 - y, s) == 0.0


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0]])
def test_auc_single_class_is_nan(labels):
  assert math.isnan(auc(labels, [0.2, 0.5, 0.9]))


def test_auc_accepts_column_vectors():
  y = np.array([[0], [1], [0], [1]])
  s = np.array([0.1, 0.4, 0.4, 0.8])
  assert auc(y, s) == pytest.approx(0.875)


def test_auc_shape_mismatch_raises():
  with pytest.raises(ValueError, match="shape"):
    auc([0, 1, 1], [0.1, 0.2])


# ------------------------------------------------------------------------------------ logloss


def test_logloss_hand_computed():
  # -(ln 0.8 + ln(1-0.4)) / 2
  assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2, rel=1e-14)


def test_logloss_clips_at_1e_minus_7():
  # A certain wrong prediction costs -ln(1e-7) = 7 ln 10, not infinity; a certain right one ~1e-7.
  assert logloss([1], [0.0]) == pytest.approx(7 * math.log(10), rel=1e-12)
  # 1 - (1 - 1e-7) is 1e-7 only to ~1e-10 relative in float64.
  assert logloss([0], [1.0]) == pytest.approx(7 * math.log(10), rel=1e-9)
  assert logloss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log1p(-1e-7), rel=1e-9)
  assert metrics.LOGLOSS_EPS == 1e-7


@pytest.mark.parametrize("seed", [0, 1])
def test_logloss_matches_sklearn(seed):
  rng = np.random.default_rng(seed)
  n = 3000
  y = (rng.random(n) < 0.25).astype(np.float64)
  p = np.round(rng.random(n), 1)  # includes exact 0.0 and 1.0 -> exercises the clipping
  assert (p == 0).any() and (p == 1).any()
  assert logloss(y, p) == pytest.approx(_sk_logloss(y, p), rel=1e-12)


def test_logloss_float32_inputs():
  rng = np.random.default_rng(7)
  y = (rng.random(1000) < 0.5).astype(np.float32)
  p = rng.random(1000).astype(np.float32)
  expected = _sk_logloss(y.astype(np.float64), p.astype(np.float64))
  got = logloss(y, p)
  assert isinstance(got, float)
  assert got == pytest.approx(expected, rel=1e-12)


def test_logloss_shape_mismatch_raises():
  with pytest.raises(ValueError, match="shape"):
    logloss([0, 1, 1], [0.1, 0.2])


# ----------------------------------------------------------------------------------- sigmoid64


def test_sigmoid64_stable_at_extremes():
  z = np.array([-800.0, -700.0, -30.0, 0.0, 30.0, 800.0])
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no overflow RuntimeWarning
    with np.errstate(over="raise", invalid="raise", divide="raise"):
      p = sigmoid64(z)
  assert p.dtype == np.float64
  assert np.all(np.isfinite(p))
  assert p[0] == 0.0
  assert p[-1] == 1.0
  assert p[3] == 0.5
  assert p[1] == pytest.approx(math.exp(-700), rel=1e-12)  # tiny but not flushed to 0
  assert p[2] == pytest.approx(1 / (1 + math.exp(30)), rel=1e-12)
  assert p[4] == pytest.approx(1 / (1 + math.exp(-30)), rel=1e-15)
  np.testing.assert_allclose(p + sigmoid64(-z), 1.0, rtol=0, atol=1e-15)


def test_sigmoid64_float32_input_and_shape():
  z = np.array([[-1.0, 2.0], [0.5, -3.0]], dtype=np.float32)
  p = sigmoid64(z)
  assert p.shape == (2, 2) and p.dtype == np.float64
  np.testing.assert_allclose(p, 1 / (1 + np.exp(-z.astype(np.float64))), rtol=1e-15)


# ---------------------------------------------------------------------------- ensemble_metrics


def test_ensemble_teacher_is_sigmoid_of_mean_logit_not_mean_prob():
  # Sample A (label 1): student logits (6, -4) -> mean logit 1 -> sigma = 0.731,
  #   but mean prob = (0.9975 + 0.0180) / 2 = 0.508.
  # Sample B (label 0): logits (0.5, 0.5) -> sigma(0.5) = 0.622 either way.
  # Mean-logit teacher ranks A above B (AUC 1); a mean-prob teacher would rank B above A (AUC 0).
  labels = np.array([1.0, 0.0])
  logits = np.array([[6.0, 0.5], [-4.0, 0.5]])
  mean_prob = sigmoid64(logits).mean(axis=0)
  assert mean_prob[0] < mean_prob[1]  # the construction really separates the two definitions
  out = ensemble_metrics(labels, logits)
  assert out["teacher"]["auc"] == 1.0
  # logloss = (softplus(-1) + softplus(0.5)) / 2 = (0.3132617 + 0.9740770) / 2
  expected_ll = (_softplus(-1.0) + _softplus(0.5)) / 2
  assert expected_ll == pytest.approx(0.6436693358, abs=1e-9)
  assert out["teacher"]["logloss"] == pytest.approx(expected_ll, rel=1e-12)
  mean_prob_ll = -(math.log(mean_prob[0]) + math.log(1 - mean_prob[1])) / 2
  assert abs(out["teacher"]["logloss"] - mean_prob_ll) > 0.1


def test_ensemble_fusions_by_hand():
  # the same two samples under each fusion: mean_prob ranks B (0.622) above A (0.508), AUC 0;
  # sum_logit: σ(2) for A, σ(1) for B, the mean's ranking with other probabilities
  labels = np.array([1.0, 0.0])
  logits = np.array([[6.0, 0.5], [-4.0, 0.5]])
  pa = (1 / (1 + math.exp(-6.0)) + 1 / (1 + math.exp(4.0))) / 2
  pb = 1 / (1 + math.exp(-0.5))
  np.testing.assert_allclose(ensemble_prob64(logits, "mean_prob"), [pa, pb], rtol=1e-15)
  np.testing.assert_allclose(ensemble_prob64(logits, "sum_logit"), [1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(-1.0))],
                             rtol=1e-15)
  np.testing.assert_array_equal(ensemble_prob64(logits), sigmoid64(logits.mean(0)))
  out = ensemble_metrics(labels, logits, "mean_prob")
  assert out["teacher"]["auc"] == 0.0
  assert out["teacher"]["logloss"] == pytest.approx(-(math.log(pa) + math.log(1 - pb)) / 2, rel=1e-12)
  out = ensemble_metrics(labels, logits, "sum_logit")
  assert out["teacher"]["auc"] == 1.0
  assert out["teacher"]["logloss"] == pytest.approx((_softplus(-2.0) + _softplus(1.0)) / 2, rel=1e-12)
  assert out["students"] == ensemble_metrics(labels, logits)["students"]  # students are the same either way
  with pytest.raises(ValueError, match="'vote'"):
    ensemble_prob64(logits, "vote")


def test_ensemble_students_metrics():
  labels = np.array([1.0, 0.0])
  logits = np.array([[6.0, 0.5], [-4.0, 0.5]])
  out = ensemble_metrics(labels, logits)
  assert len(out["students"]) == 2
  s1, s2 = out["students"]
  assert s1["auc"] == 1.0 and s2["auc"] == 0.0
  assert s1["logloss"] == pytest.approx((_softplus(-6.0) + _softplus(0.5)) / 2, rel=1e-12)
  assert s2["logloss"] == pytest.approx((_softplus(4.0) + _softplus(0.5)) / 2, rel=1e-12)


def test_ensemble_metrics_random_against_sklearn():
  rng = np.random.default_rng(11)
  n, k = 500, 3
  y = (rng.random(n) < 0.3).astype(np.float64)
  z = rng.normal(size=(k, n)) * 3 + y  # large spread: mean logit != logit of mean prob
  out = ensemble_metrics(y, z.astype(np.float32))
  t = 1 / (1 + np.exp(-z.astype(np.float32).astype(np.float64).mean(0)))
  assert out["teacher"]["auc"] == pytest.approx(sk_metrics.roc_auc_score(y, t), abs=1e-12)
  assert out["teacher"]["logloss"] == pytest.approx(_sk_logloss(y, t), rel=1e-10)
  for j in range(k):
    pj = 1 / (1 + np.exp(-z[j].astype(np.float32).astype(np.float64)))
    assert out["students"][j]["auc"] == pytest.approx(sk_metrics.roc_auc_score(y, pj), abs=1e-12)
    assert out["students"][j]["logloss"] == pytest.approx(_sk_logloss(y, pj), rel=1e-10)


def test_auc_of_nan_scores_is_nan_not_a_rank():
  """A NaN sorted as a number would give 0.75 here; sklearn raises."""
  assert math.isnan(auc([0, 1, 0, 1], [np.nan] * 4))
  assert math.isnan(auc([0, 1, 0, 1], [0.1, np.nan, 0.2, 0.3]))
  assert auc([0, 1, 0, 1], [0.1, 0.5, 0.2, np.inf]) == 1.0  # ±inf are ordinary ranks


def test_ensemble_metrics_single_class_teacher_auc_nan():
  out = ensemble_metrics(np.ones(3), np.zeros((2, 3)))
  assert math.isnan(out["teacher"]["auc"])
  assert out["teacher"]["logloss"] == pytest.approx(math.log(2), rel=1e-12)


def test_auc_ranks_scores_in_float64():
  assert auc([0, 1], [0.5, 0.5 + 1e-12]) == 1.0  # one float32 value: a tie, AUC 0.5
  assert auc([1, 0], [0.5, 0.5 + 1e-12]) == 0.0


# Cases mutation testing found unpinned.


def test_concat_fusion_teacher_is_the_heads_row_and_students_exclude_it():
  from kdef_jax.metrics import ensemble_metrics, ensemble_prob64, sigmoid64

  labels = np.array([1.0, 0.0])
  logits = np.array([[6.0, 0.5], [-4.0, 0.5], [-1.0, 2.0]])  # two students, then the head's logit
  np.testing.assert_array_equal(ensemble_prob64(logits, "concat"), sigmoid64(logits[2]))
  out = ensemble_metrics(labels, logits, "concat")
  assert out["teacher"]["auc"] == 0.0  # the head ranks B above A; student 0 would say 1.0
  assert out["students"] == ensemble_metrics(labels, logits[:2])["students"]


def test_single_class_auc_is_nan_without_a_warning():
  from kdef_jax.metrics import auc

  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert math.isnan(auc([1, 1, 1], [0.2, 0.5, 0.9]))
    assert math.isnan(auc([0, 0], [0.2, 0.5]))


def test_logloss_refuses_a_broadcastable_shape_mismatch():
  from kdef_jax.metrics import logloss

  with pytest.raises(ValueError, match="differ in shape"):
    logloss([1], [0.5, 0.5])


@pytest.mark.parametrize("fusion", ["mean_logit", "sum_logit", "mean_prob", "concat"])
def test_ensemble_metrics_hold_no_float64_copy_of_all_logits_and_give_the_same_numbers(fusion):
  """A [K, N] float64 copy doubled an evaluation's memory (K=64 on Criteo's test split: +2.2 GB); the
  students' rows become float64 one at a time, with bit-identical results."""
  import tracemalloc

  rng = np.random.default_rng(0)
  logits = (rng.normal(size=(64, 20_000)) * 3).astype(np.float32)
  y = (rng.random(20_000) < 0.25).astype(np.float32)
  tracemalloc.start()
  try:
    got = ensemble_metrics(y, logits, fusion)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < logits.nbytes  # the float64 copy alone is 2× logits.nbytes
  z = logits.astype(np.float64)
  want_p = {"mean_logit": sigmoid64(z.mean(0)), "sum_logit": sigmoid64(z.sum(0)), "mean_prob": sigmoid64(z).mean(0),
            "concat": sigmoid64(z[-1])}[fusion]
  np.testing.assert_array_equal(ensemble_prob64(logits, fusion), want_p)
  assert got["teacher"] == {"auc": auc(y, want_p), "logloss": logloss(y, want_p)}
  assert got["students"][3] == {"auc": auc(y, sigmoid64(z[3])), "logloss": logloss(y, sigmoid64(z[3]))}


@pytest.mark.parametrize("labels", [[0, 2, 1], [0, np.nan, 1], [0, -1, 1], [0, 0.5, 1]])
def test_metrics_refuse_a_label_other_than_0_and_1(labels):
  """logloss([2], [.5]) was 0.693 and a NaN label counted as a negative in the AUC."""
  for fn in (auc, logloss):
    with pytest.raises(ValueError, match=rf"^{fn.__name__}: labels must be 0 or 1, got .* at index 1$"):
      fn(labels, [0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match="labels must be 0 or 1"):
    ensemble_metrics(np.array(labels), np.zeros((2, 3)))


def test_metrics_refuse_arrays_shaped_apart_and_prob64_a_row_of_logits():
  rng = np.random.default_rng(0)
  y, s = (rng.random(50) > 0.5).astype(float), rng.random(50)
  with pytest.raises(ValueError, match=r"auc: labels \(5, 10\) and scores \(10, 5\) differ in shape"):
    auc(y.reshape(5, 10), s.reshape(10, 5))  # flattening both paired the wrong elements
  assert auc(y.reshape(1, 50), s.reshape(50, 1)) == auc(y, s)  # only axes of size 1 differ
  with pytest.raises(ValueError, match=r"ensemble_prob64: logits must be \[K, N\] with K >= 1, got shape \(50,\)"):
    ensemble_prob64(s)  # a scalar mean over all rows before
