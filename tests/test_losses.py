"""kdef_jax.losses: the authors' reference vectors, hand-computed and numpy-derived values, K=1,
extreme logits, jit, dtypes and argument validation (stop-gradients and masking: test_loss_gradients.py)."""
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdef_jax import losses
from kdef_jax.losses import CONSISTENCIES, VARIANTS, kdef_loss
from loss_refs import (CASES, TERMS, VEC_PATH, cached_problem_results, np_bce, np_fd_grad, np_kdef, problem,
                       run_combos, sig, VG_JIT, x64)  # noqa: F401 (x64: a fixture)


# ------------------------------------------------------------------------------------------------
# Reference vectors (authors' code, float64).
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("idx", range(len(CASES)) if CASES else [None])
def test_reference_vectors(idx, x64):
  if CASES is None:
    pytest.skip(f"reference vectors not found at {VEC_PATH}; set KDEF_REFERENCE_DIR")
  case = CASES[idx]
  z = jnp.asarray(case["logits"], jnp.float64)
  y = jnp.asarray(case["labels"], jnp.float64)
  (loss, aux), g = VG_JIT(z, y)
  assert loss.dtype == jnp.float64
  close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
  close(loss, case["loss"])
  for term in ("label_bce", "kd", "dml"):
    close(aux[term], case["terms"][term])
  if "exam_scores" in case:
    close(aux["exam_scores"], case["exam_scores"])
  if "teacher_weights_lambda" in case:
    close(aux["lambda"], case["teacher_weights_lambda"])
  if "teacher_prob" in case:
    close(aux["teacher_prob"], case["teacher_prob"])
  np.testing.assert_allclose(np.asarray(g), np.asarray(case["grad_logits"]), rtol=0, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# Hand-computed values.
# ------------------------------------------------------------------------------------------------
def test_k2_kdef_written_out(x64):
  """K=2, B=2 kdef/mse with scalar arithmetic only: for K=2 each mu row is a one-hot on the peer."""
  z = [[0.5, -1.0], [2.0, 0.3]]
  y = [1.0, 0.0]
  s = lambda v: 1 / (1 + math.exp(-v))
  p = [[s(v) for v in row] for row in z]
  yt = [s((z[0][i] + z[1][i]) / 2) for i in range(2)]
  bce = lambda q, t: -(t * math.log(q) + (1 - t) * math.log(1 - q))
  l_lab = sum((bce(p[k][0], 1) + bce(p[k][1], 0)) / 2 for k in range(2)) / 2
  S = [(p[k][0] + (1 - p[k][1])) / 2 for k in range(2)]  # mean prob of the true class
  M = [((p[k][0] - yt[0]) ** 2 + (p[k][1] - yt[1]) ** 2) / 2 for k in range(2)]
  lam0 = math.exp(-S[0]) / (math.exp(-S[0]) + math.exp(-S[1]))
  kd = lam0 * M[0] + (1 - lam0) * M[1]
  C01 = ((p[0][0] - p[1][0]) ** 2 + (p[0][1] - p[1][1]) ** 2) / 2  # symmetric for mse
  dml = (C01 + C01) / 2
  (loss, aux), _ = run_combos(np.array(z), np.array(y), grad=False)["kdef/mse"]
  np.testing.assert_allclose(float(loss), l_lab + kd + dml, rtol=1e-13)
  np.testing.assert_allclose(float(aux["kd"]), kd, rtol=1e-13)
  np.testing.assert_allclose(float(aux["dml"]), dml, rtol=1e-13)
  np.testing.assert_allclose(np.asarray(aux["mu"]), [[0, 1], [1, 0]], atol=1e-15)
  np.testing.assert_allclose(np.asarray(aux["lambda"]), [lam0, 1 - lam0], rtol=1e-13)


_CONS = [(c, 1.0) for c in CONSISTENCIES] + [("huber", 0.05)]  # delta=0.05 hits the linear branch


@pytest.mark.parametrize("K,B", [(2, 2), (3, 3)])
@pytest.mark.parametrize("kind,delta", _CONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_against_numpy(variant, kind, delta, K, B, x64):
  z, y = problem(K, B)
  ref = np_kdef(z, y, variant, kind, delta)
  (loss, aux), g = cached_problem_results(K, B, delta)[f"{variant}/{kind}"]
  tol = dict(rtol=1e-11, atol=1e-13)
  np.testing.assert_allclose(float(loss), ref["loss"], **tol)
  for t in TERMS:
    np.testing.assert_allclose(float(aux[t]), ref[t], **tol)
  np.testing.assert_allclose(float(loss), sum(float(aux[t]) for t in TERMS), **tol)
  np.testing.assert_allclose(np.asarray(aux["exam_scores"]), ref["exam_scores"], **tol)
  np.testing.assert_allclose(np.asarray(aux["lambda"]), ref["lam"], **tol)
  np.testing.assert_allclose(np.asarray(aux["mu"]), ref["mu"], **tol)
  np.testing.assert_allclose(np.asarray(aux["student_bce"]), ref["student_bce"], **tol)
  np.testing.assert_allclose(float(aux["teacher_bce_monitor"]), ref["teacher_bce_monitor"], **tol)
  np.testing.assert_allclose(np.asarray(aux["teacher_prob"]), ref["teacher_prob"], **tol)
  t = ref["teacher_prob"]
  np.testing.assert_allclose(np.asarray(aux["teacher_logit"]), np.log(t / (1 - t)), **tol)
  if g is not None:  # K=3
    np.testing.assert_allclose(np.asarray(g), np_fd_grad(z, y, variant, kind, delta), rtol=0, atol=2e-8)


# ------------------------------------------------------------------------------------------------
# The ensemble baselines' fusions, by hand.
# ------------------------------------------------------------------------------------------------
def test_ensemble_logit_by_hand(x64):
  # two students, one row: p = (1/2, 3/4); logit mean ln3/2, sum ln3; mean_prob 5/8 -> logit ln(5/3)
  z = jnp.asarray([[0.0, 2.0], [math.log(3.0), -2.0]])
  fused = {f: np.asarray(losses.ensemble_logit(z, f)) for f in losses.FUSIONS}
  np.testing.assert_allclose(fused["mean_logit"], [math.log(3.0) / 2, 0.0], rtol=1e-15, atol=1e-15)
  np.testing.assert_allclose(fused["sum_logit"], [math.log(3.0), 0.0], rtol=1e-15, atol=1e-15)
  np.testing.assert_allclose(fused["mean_prob"], [math.log(5.0 / 3.0), 0.0], rtol=1e-14, atol=1e-15)
  # saturated students: finite logits whose sigmoid is still the mean probability
  sat = jnp.asarray([[300.0, -300.0, 40.0], [300.0, 300.0, -40.0]])
  zt = np.asarray(losses.ensemble_logit(sat, "mean_prob"))
  assert np.all(np.isfinite(zt)) and zt[0] > 250 and abs(zt[1]) < 1e-12 and abs(zt[2]) < 1e-12
  with pytest.raises(ValueError, match=r"'median'.*mean_logit"):
    losses.ensemble_logit(z, "median")


def test_fusion_of_each_variant():
  assert {v: losses.fusion_of(v) for v in VARIANTS} == {
      "kdef": "mean_logit", "kd_only": "mean_logit", "dml_only": "mean_logit", "no_exam": "mean_logit",
      "mean": "mean_logit", "sum": "sum_logit", "mean_prob": "mean_prob", "concat": "concat",
      "independent": "mean_logit"}
  with pytest.raises(ValueError, match="'avg'"):
    losses.fusion_of("avg")


def test_sum_and_mean_prob_gradients_by_hand(x64):
  """One BCE on the ensemble: d/dz_k bce(Σz, y) = (σ(Σz) - y)/B for every k; for mean_prob,
  p̄ = mean_k p_k and d/dz_k = (p̄ - y)/(p̄(1 - p̄)) · p_k(1 - p_k)/K / B."""
  z, y = problem(3, 3)
  res = run_combos(z, y, combos=(("sum", "mse"), ("mean_prob", "mse")))
  (loss, aux), g = res["sum/mse"]
  s = sig(z.sum(0))
  np.testing.assert_allclose(float(loss), np.mean(-(y * np.log(s) + (1 - y) * np.log(1 - s))), rtol=1e-13)
  np.testing.assert_allclose(np.asarray(g), np.broadcast_to((s - y) / 3, z.shape), rtol=1e-12)
  assert float(aux["label_bce"]) == float(aux["kd"]) == float(aux["dml"]) == 0.0
  (loss, aux), g = res["mean_prob/mse"]
  p = sig(z)
  pbar = p.mean(0)
  np.testing.assert_allclose(float(loss), np.mean(-(y * np.log(pbar) + (1 - y) * np.log(1 - pbar))), rtol=1e-13)
  np.testing.assert_allclose(np.asarray(aux["teacher_prob"]), pbar, rtol=1e-14)
  want = (pbar - y) / (pbar * (1 - pbar)) * p * (1 - p) / 3 / 3
  np.testing.assert_allclose(np.asarray(g), want, rtol=1e-12)


def test_concat_is_one_bce_on_the_heads_row(x64):
  """[K + 1, B] logits: loss = bce(z_head, y) alone; its gradient reaches the head's row only, the K
  students' rows get 0 (their own heads are not trained, as in MLPs_concat)."""
  z = np.array([[0.7, -1.2, 2.5], [1.5, 0.2, -0.3], [0.4, -0.9, 1.1]])  # 2 students, then the head
  y = np.array([1.0, 0.0, 0.0])
  (loss, aux), g = run_combos(z, y, combos=(("concat", "mse"),))["concat/mse"]
  h = sig(z[2])
  np.testing.assert_allclose(float(loss), np.mean(-(y * np.log(h) + (1 - y) * np.log(1 - h))), rtol=1e-13)
  np.testing.assert_allclose(np.asarray(g), np.vstack([np.zeros((2, 3)), (h - y) / 3]), rtol=1e-12, atol=0)
  np.testing.assert_allclose(np.asarray(aux["teacher_logit"]), z[2], rtol=0)
  assert aux["student_bce"].shape == aux["exam_scores"].shape == (2,) and aux["mu"].shape == (2, 2)
  np.testing.assert_allclose(np.asarray(aux["student_bce"]), [np_bce(sig(z[0]), y), np_bce(sig(z[1]), y)], rtol=1e-13)
  # one student and the head
  (loss1, _), g1 = run_combos(z[1:], y, combos=(("concat", "mse"),))["concat/mse"]
  np.testing.assert_allclose(float(loss1), float(loss), rtol=0)
  np.testing.assert_allclose(np.asarray(g1), np.asarray(g)[1:], rtol=0)
  with pytest.raises(ValueError, match=r"K \+ 1.*\(1, 3\)"):
    kdef_loss(jnp.asarray(z[:1]), jnp.asarray(y), variant="concat")


def test_variants_differ(x64):
  res = cached_problem_results(3, 3, 1.0)
  vals = {v: float(res[f"{v}/mse"][0][0]) for v in VARIANTS}
  assert len({round(v, 12) for v in vals.values()}) == len(VARIANTS), vals


# ------------------------------------------------------------------------------------------------
# K=1 and extreme logits.
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", CONSISTENCIES)
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "concat"])  # concat: K + 1 rows (below)
def test_single_student(variant, kind, x64):
  z = np.array([[0.7, -1.2, 2.5, -0.1]])
  y = np.array([1.0, 0.0, 0.0, 1.0])
  p = sig(z[0])
  plain = np_bce(p, y)
  (loss, aux), g = run_combos(z, y)[f"{variant}/{kind}"]
  assert float(aux["dml"]) == 0.0
  np.testing.assert_array_equal(np.asarray(aux["mu"]), [[0.0]])
  expected_lam = [1.0] if variant in ("kdef", "kd_only", "no_exam") else [0.0]
  np.testing.assert_allclose(np.asarray(aux["lambda"]), expected_lam, rtol=1e-15)
  # c(p, p) is 0 except for soft-label BCE, where it is the entropy of p.
  entropy = float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))
  extra = entropy if (kind == "bce" and variant in ("kdef", "kd_only", "no_exam")) else 0.0
  np.testing.assert_allclose(float(loss), plain + extra, rtol=1e-12, atol=1e-15)
  # Every consistency has zero gradient at p == sg(p): the gradient is the plain BCE gradient.
  np.testing.assert_allclose(np.asarray(g), ((p - y) / 4)[None], rtol=1e-12, atol=1e-15)


_EXTREME_Z = np.array([[200.0, -200.0, 200.0, 0.0], [-200.0, 200.0, 200.0, -200.0],
                       [0.0, -200.0, 3.0, 200.0]])
_EXTREME_Y = np.array([0.0, 0.0, 1.0, 1.0])
_F32_COMBOS = tuple(("kdef", c) for c in CONSISTENCIES) + (("kd_only", "kl"), ("independent", "mse"))


def _assert_all_finite(results):
  for key, ((loss, aux), g) in results.items():
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(g))), key
    assert all(np.all(np.isfinite(np.asarray(v))) for v in aux.values()), key


def test_extreme_logits_finite_float64(x64):
  for K in (1, 3):  # every variant x consistency; shapes shared with other tests (no recompiles)
    z = _EXTREME_Z[:K] if K == 1 else _EXTREME_Z[:, :3]
    res = run_combos(z, _EXTREME_Y[: z.shape[1]])
    _assert_all_finite(res)
  # K=1 independent: row 0 saturated wrongly -> log clamped at -100; rows 1, 2 ~0; row 3 log 2.
  (loss, _), g = run_combos(_EXTREME_Z[:1], _EXTREME_Y)["independent/mse"]
  np.testing.assert_allclose(float(loss), (100 + math.log(2)) / 4, rtol=1e-12)
  np.testing.assert_allclose(np.asarray(g), [[0.0, 0.0, 0.0, -0.125]], atol=1e-15)


def test_extreme_logits_finite_float32():
  res = run_combos(jnp.asarray(_EXTREME_Z, jnp.float32), jnp.asarray(_EXTREME_Y, jnp.float32),
                   combos=_F32_COMBOS)
  assert res["kdef/mse"][0][0].dtype == np.float32
  _assert_all_finite(res)


# ------------------------------------------------------------------------------------------------
# jit, dtypes, argument validation.
# ------------------------------------------------------------------------------------------------
_JIT_LOSS = jax.jit(kdef_loss, static_argnames=("variant", "consistency"))  # the documented usage


def test_jit_matches_eager(x64):
  z, y = problem(2, 3)
  z, y = jnp.asarray(z), jnp.asarray(y)
  l0, a0 = kdef_loss(z, y, variant="kdef", consistency="mse")  # eager
  l1, a1 = _JIT_LOSS(z, y, variant="kdef", consistency="mse")
  np.testing.assert_allclose(float(l1), float(l0), rtol=1e-13)
  for key in a0:
    np.testing.assert_allclose(np.asarray(a1[key]), np.asarray(a0[key]), rtol=1e-13, atol=1e-16)
  np.testing.assert_allclose(float(l0), np_kdef(np.asarray(z), np.asarray(y))["loss"], rtol=1e-12)


def test_dtypes(x64):
  z, y = problem(2, 3)
  l64, _ = _JIT_LOSS(jnp.asarray(z, jnp.float64), jnp.asarray(y))
  l32, _ = _JIT_LOSS(jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.int32))
  assert l64.dtype == jnp.float64 and l32.dtype == jnp.float32
  np.testing.assert_allclose(float(l32), float(l64), rtol=1e-6)
  l16, aux16 = _JIT_LOSS(jnp.asarray(z, jnp.bfloat16), jnp.asarray(y))
  assert l16.dtype == jnp.float32 and aux16["teacher_prob"].dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(losses.teacher_logit(jnp.asarray(z))), z.mean(0), rtol=1e-15)


def test_invalid_arguments():
  z, y = jnp.zeros((2, 3)), jnp.zeros(3)
  with pytest.raises(ValueError, match=r"'nope'.*kdef"):
    kdef_loss(z, y, variant="nope")
  with pytest.raises(ValueError, match=r"'cosine'.*mse"):
    kdef_loss(z, y, consistency="cosine")
  with pytest.raises(ValueError, match=r"\(3,\)"):
    kdef_loss(jnp.zeros(3), y)
  with pytest.raises(ValueError, match="logits"):
    kdef_loss(jnp.zeros((2, 3, 1)), y)
  with pytest.raises(ValueError, match=r"\(3, 1\)"):
    kdef_loss(z, jnp.zeros((3, 1)))
  with pytest.raises(ValueError, match=r"\(4,\).*\(2, 3\)"):
    kdef_loss(z, jnp.zeros(4))
  with pytest.raises(ValueError, match="mask"):
    kdef_loss(z, y, mask=jnp.ones(4))
  with pytest.raises(ValueError, match="bad"):
    jax.jit(kdef_loss, static_argnames=("variant", "consistency"))(z, y, variant="bad")


def test_exports(x64):
  assert VARIANTS == ("kdef", "kd_only", "dml_only", "no_exam", "mean", "sum", "mean_prob", "concat",
                      "independent")
  assert losses.FUSIONS == ("mean_logit", "sum_logit", "mean_prob", "concat")
  assert CONSISTENCIES == ("mse", "l1", "huber", "bce", "kl")
  z, y = problem(2, 3)
  aux = _JIT_LOSS(jnp.asarray(z), jnp.asarray(y))[1]
  assert set(aux) == {"teacher_logit", "teacher_prob", "exam_scores", "lambda", "mu", "student_bce",
                      "teacher_bce_monitor", "label_bce", "teacher_bce", "kd", "dml"}


@pytest.mark.parametrize("kind", ["bce", "kl"])
def test_soft_label_consistency_logs_are_clamped_at_minus_100(kind, x64):
  """K=2, one row, y=1, students saturated at +150 and -150 (p_0 = 1, p_1 = e^-150 in float64).
  dml_only: dml = (1/K)·Σ_{k≠l} (1/K)·C_kl = (C_01 + C_10)/4 with
  C_01 = c(p_0, t=p_1) = -(t·log σ(150) + (1-t)·max(log σ(-150), -100)) ≈ 100 and
  C_10 = c(p_1, t=p_0=1) = -max(log σ(-150), -100) = 100  (unclamped: 150 each, dml = 75).
  label_bce = (bce(150, 1) + bce(-150, 1))/2 = (0 + 100)/2 = 50. KL adds t log t + (1-t) log(1-t) ≈ -1e-63."""
  z = jnp.asarray([[150.0], [-150.0]])
  y = jnp.asarray([1.0])
  loss, aux = kdef_loss(z, y, variant="dml_only", consistency=kind)
  np.testing.assert_allclose(float(aux["dml"]), 50.0, rtol=1e-12)
  np.testing.assert_allclose(float(aux["label_bce"]), 50.0, rtol=1e-12)
  np.testing.assert_allclose(float(loss), 100.0, rtol=1e-12)
  # the KD term too: teacher logit 0 -> t = 1/2; M_0 = -(1/2)·log σ(150) - (1/2)·max(-150, -100) ≈ 50 = M_1
  _, aux = kdef_loss(z, y, variant="kd_only", consistency=kind)
  kl_shift = 0.0 if kind == "bce" else 2 * 0.5 * math.log(0.5)  # + t log t + (1-t) log(1-t)
  np.testing.assert_allclose(float(aux["kd"]), 50.0 + kl_shift, rtol=1e-12)


@pytest.mark.parametrize("t", [0.0, 1.0])
def test_kl_consistency_at_a_certain_target_uses_0_log_0_as_0(t):
  """z = 0 (p = ½): KL(Bern(t)‖Bern(½)) = ln 2 for t ∈ {0, 1} (0·log 0 := 0), its gradient in z is p − t."""
  f = lambda z: losses._consistency(z, jax.nn.sigmoid(z), jnp.float32(t), "kl", 1.0)
  assert float(f(jnp.float32(0.0))) == pytest.approx(math.log(2), rel=1e-6)
  assert float(jax.grad(f)(jnp.float32(0.0))) == pytest.approx(0.5 - t, rel=1e-6)


def test_bad_shapes_and_a_nonpositive_huber_delta_are_errors_not_nan_or_a_wrong_loss():
  """API review: K = 0 or B = 0 gave NaN, huber_delta <= 0 silently dropped (0) or negated (< 0) the
  consistency terms, and ensemble_logit of [B] logits averaged the batch into a scalar."""
  from kdef_jax.losses import ensemble_logit

  z, y = jnp.array([[0.3, -1.2, 2.0], [0.1, -0.4, 1.1]]), jnp.array([1.0, 0.0, 1.0])
  for logits, labels in ((jnp.zeros((0, 3)), y), (jnp.zeros((2, 0)), jnp.zeros(0))):
    with pytest.raises(ValueError, match=r"logits must be \[K, B\] with K, B >= 1"):
      kdef_loss(logits, labels)
  for delta in (0.0, -1.0, np.float32(-1.0), jnp.array(-1.0), np.array(0.0)):  # numpy / jax scalars: a negative loss
    with pytest.raises(ValueError, match="huber_delta must be > 0"):
      kdef_loss(z, y, consistency="huber", huber_delta=delta)
  with pytest.raises(ValueError, match=r"huber_delta must be a scalar, got shape \(1,\)"):
    kdef_loss(z, y, consistency="huber", huber_delta=np.array([2.0]))
  traced = jax.jit(lambda d: kdef_loss(z, y, consistency="huber", huber_delta=d)[0])  # a traced delta is the caller's
  np.testing.assert_allclose(traced(2.0), kdef_loss(z, y, consistency="huber", huber_delta=2.0)[0], rtol=1e-6)
  for fusion in ("mean_logit", "sum_logit", "mean_prob", "concat"):
    with pytest.raises(ValueError, match=r"logits must be \[K, B\]"):
      ensemble_logit(jnp.array([1.0, 2.0, 3.0]), fusion)
  with pytest.raises(ValueError, match=r"\[K \+ 1, B\] for concat"):
    ensemble_logit(jnp.ones((1, 3)), "concat")
  assert ensemble_logit([[1.0, 2.0], [2.0, 3.0]]).tolist() == [1.5, 2.5]  # a list, as kdef_loss accepts


def test_a_huber_delta_that_is_not_a_number_and_complex_logits_are_errors():
  """API review: None or "0.5" failed deep inside as a TypeError that named no argument; complex logits
  made every result complex."""
  from kdef_jax.losses import ensemble_logit

  z, y = jnp.array([[0.3, -1.2, 2.0], [0.1, -0.4, 1.1]]), jnp.array([1.0, 0.0, 1.0])
  for delta in (None, "0.5", b"1"):
    with pytest.raises(ValueError, match=rf"huber_delta must be a number > 0, got {re.escape(repr(delta))}\."):
      kdef_loss(z, y, consistency="huber", huber_delta=delta)
  with pytest.raises(ValueError, match=r"logits must be real \(a float or int dtype\), got complex64"):
    kdef_loss(z.astype(jnp.complex64), y)
  with pytest.raises(ValueError, match=r"logits must be real"):
    ensemble_logit(z.astype(jnp.complex64))
  assert kdef_loss(jnp.zeros((2, 3), jnp.int32), y)[0] == pytest.approx(np.log(2.0))  # int logits: promoted to float32


def test_a_mask_list_under_jit_and_low_precision_ensemble_logits_in_float32():
  """jit(kdef_loss)(..., mask=[1., 1., 1.]) raised TracerArrayConversionError; ensemble_logit of bf16
  logits ran mean_prob's logsumexp in bf16 (0.4219 against 0.4199)."""
  from kdef_jax.losses import ensemble_logit

  z, y = jnp.array([[0.3, -1.2, 2.0], [0.1, -0.4, 1.1]]), jnp.array([1.0, 0.0, 1.0])
  jitted = jax.jit(kdef_loss, static_argnames=("variant", "consistency"))
  np.testing.assert_allclose(jitted(z, y, mask=[1.0, 1.0, 0.0])[0], kdef_loss(z[:, :2], y[:2])[0], rtol=1e-6)
  for fusion in ("mean_logit", "sum_logit", "mean_prob"):
    low = ensemble_logit(z.astype(jnp.bfloat16), fusion)
    assert low.dtype == jnp.float32
    np.testing.assert_allclose(low, ensemble_logit(z.astype(jnp.bfloat16).astype(jnp.float32), fusion), rtol=1e-6)
