"""Tests for kdef_jax.losses: reference vectors, numpy re-derivations, stop-gradients, masking."""
import functools
import itertools
import json
import math
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdef_jax import losses
from kdef_jax.losses import CONSISTENCIES, VARIANTS, kdef_loss

sg = jax.lax.stop_gradient
TERMS = ("label_bce", "teacher_bce", "kd", "dml")


@pytest.fixture
def x64():
  """float64 for this test only (the context manager restores the previous setting)."""
  with jax.enable_x64(True):
    yield


def _ref_dir():
  env = os.environ.get("KDEF_REFERENCE_DIR")
  if env:
    return pathlib.Path(env)
  return pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference"


_VEC_PATH = _ref_dir() / "kdef-loss-vectors.json"
_CASES = json.loads(_VEC_PATH.read_text())["cases"] if _VEC_PATH.exists() else None


# ------------------------------------------------------------------------------------------------
# Independent numpy re-derivation (loops, torch-style BCE on probabilities, softmax over S_l - S_k).
# Targets (teacher, peers) are computed from `z_tgt`, so finite differences w.r.t. `z` with `z_tgt`
# held fixed give exactly the stop-gradient semantics.
# ------------------------------------------------------------------------------------------------
def _sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def _np_bce(q, y):  # torch BCELoss on probabilities, log clamped at -100, batch mean
  return float(np.mean(-(y * np.maximum(np.log(q), -100) + (1 - y) * np.maximum(np.log(1 - q), -100))))


def _np_c(p, t, kind, delta):
  d = p - t
  if kind == "mse":
    return d ** 2
  if kind == "l1":
    return np.abs(d)
  if kind == "huber":
    return np.where(np.abs(d) <= delta, 0.5 * d ** 2, delta * (np.abs(d) - 0.5 * delta))
  if kind == "bce":
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))
  if kind == "kl":
    return t * np.log(t / p) + (1 - t) * np.log((1 - t) / (1 - p))
  raise AssertionError(kind)


def np_kdef(z, y, variant="kdef", kind="mse", delta=1.0, z_tgt=None):
  z = np.asarray(z, np.float64)
  y = np.asarray(y, np.float64)
  z_tgt = z if z_tgt is None else z_tgt
  K, _ = z.shape
  p = _sig(z)
  y_t = _sig(z_tgt.mean(axis=0))  # KD target (detached)
  p_tgt = _sig(z_tgt)  # DML peer targets (detached)
  student_bce = np.array([_np_bce(p[k], y) for k in range(K)])
  teacher_bce = _np_bce(_sig(z.mean(axis=0)), y)
  S = np.array([np.mean(1 - np.abs(y - p[k])) for k in range(K)])
  M = np.array([np.mean(_np_c(p[k], y_t, kind, delta)) for k in range(K)])
  C = np.array([[np.mean(_np_c(p[k], p_tgt[l], kind, delta)) for l in range(K)] for k in range(K)])
  softmin = np.exp(-S) / np.sum(np.exp(-S))
  mu_exam = np.zeros((K, K))
  for k in range(K):
    others = [l for l in range(K) if l != k]
    if others:
      w = np.exp(S[others] - S[k])
      mu_exam[k, others] = w / w.sum()
  off = 1.0 - np.eye(K)
  lam, mu = {"kdef": (softmin, mu_exam), "kd_only": (softmin, 0 * off),
             "dml_only": (0 * S, off / K), "no_exam": (np.ones(K), off),
             "mean": (0 * S, 0 * off), "independent": (0 * S, 0 * off)}[variant]
  out = dict(
      label_bce=student_bce.mean() if variant in ("kdef", "dml_only", "no_exam", "independent") else 0.0,
      teacher_bce=teacher_bce if variant in ("kd_only", "mean") else 0.0,
      kd=float(np.sum(lam * M)),
      dml=float(sum(mu[k, l] * C[k, l] for k in range(K) for l in range(K) if l != k) / K),
      exam_scores=S, lam=lam, mu=mu, M=M, C=C, student_bce=student_bce, teacher_prob=y_t)
  out["loss"] = out["label_bce"] + out["teacher_bce"] + out["kd"] + out["dml"]
  return out


def np_fd_grad(z, y, variant, kind="mse", delta=1.0, h=1e-6):
  """Central differences of the numpy loss w.r.t. z with all detached targets held at z."""
  z = np.asarray(z, np.float64)
  g = np.zeros_like(z)
  for idx in np.ndindex(*z.shape):
    e = np.zeros_like(z)
    e[idx] = h
    g[idx] = (np_kdef(z + e, y, variant, kind, delta, z)["loss"]
              - np_kdef(z - e, y, variant, kind, delta, z)["loss"]) / (2 * h)
  return g


def _problem(K, B, seed=0):
  rng = np.random.default_rng(seed + 10 * K + B)
  z = rng.uniform(-3, 3, size=(K, B))
  y = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0][:B])
  return z, y


ALL = tuple(itertools.product(VARIANTS, CONSISTENCIES))


@functools.partial(jax.jit, static_argnames=("combos", "grad"))
def _combos(z, y, mask, delta, combos, grad):
  if grad:
    fn = jax.value_and_grad(kdef_loss, has_aux=True)
  else:
    fn = lambda *a, **kw: (kdef_loss(*a, **kw), None)
  return {f"{v}/{c}": fn(z, y, variant=v, consistency=c, mask=mask, huber_delta=delta)
          for v, c in combos}


def run_combos(z, y, mask=None, delta=1.0, combos=ALL, grad=True):
  """{"variant/consistency": ((loss, aux), grad or None)} as numpy; one XLA compile per shape
  (CPU compile time dominates this file, so many configurations share one jitted program)."""
  out = _combos(jnp.asarray(z), jnp.asarray(y), None if mask is None else jnp.asarray(mask),
                delta, combos=combos, grad=grad)
  return jax.device_get(out)


@functools.lru_cache(maxsize=None)
def _cached_problem_results(K, B, delta):  # only called from x64 tests
  z, y = _problem(K, B)
  return run_combos(z, y, delta=delta, grad=K == 3)  # gradients: K=3 only (compile time)


# ------------------------------------------------------------------------------------------------
# 1. Reference vectors (authors' code, float64).
# ------------------------------------------------------------------------------------------------
_VG_JIT = jax.jit(jax.value_and_grad(kdef_loss, has_aux=True), static_argnames=("variant", "consistency"))


@pytest.mark.parametrize("idx", range(len(_CASES)) if _CASES else [None])
def test_reference_vectors(idx, x64):
  if _CASES is None:
    pytest.skip(f"reference vectors not found at {_VEC_PATH}; set KDEF_REFERENCE_DIR")
  case = _CASES[idx]
  z = jnp.asarray(case["logits"], jnp.float64)
  y = jnp.asarray(case["labels"], jnp.float64)
  (loss, aux), g = _VG_JIT(z, y)
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
# 2. Hand-computed values.
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
  z, y = _problem(K, B)
  ref = np_kdef(z, y, variant, kind, delta)
  (loss, aux), g = _cached_problem_results(K, B, delta)[f"{variant}/{kind}"]
  tol = dict(rtol=1e-11, atol=1e-13)
  np.testing.assert_allclose(float(loss), ref["loss"], **tol)
  for t in TERMS:
    np.testing.assert_allclose(float(aux[t]), ref[t], **tol)
  np.testing.assert_allclose(float(loss), sum(float(aux[t]) for t in TERMS), **tol)
  np.testing.assert_allclose(np.asarray(aux["exam_scores"]), ref["exam_scores"], **tol)
  np.testing.assert_allclose(np.asarray(aux["lambda"]), ref["lam"], **tol)
  np.testing.assert_allclose(np.asarray(aux["mu"]), ref["mu"], **tol)
  np.testing.assert_allclose(np.asarray(aux["student_bce"]), ref["student_bce"], **tol)
  np.testing.assert_allclose(float(aux["teacher_bce_monitor"]), _np_bce(_sig(z.mean(0)), y), **tol)
  np.testing.assert_allclose(np.asarray(aux["teacher_prob"]), ref["teacher_prob"], **tol)
  np.testing.assert_allclose(np.asarray(aux["teacher_logit"]), z.mean(0), **tol)
  if g is not None:  # K=3
    np.testing.assert_allclose(np.asarray(g), np_fd_grad(z, y, variant, kind, delta), rtol=0, atol=2e-8)


def test_variants_differ(x64):
  res = _cached_problem_results(3, 3, 1.0)
  vals = {v: float(res[f"{v}/mse"][0][0]) for v in VARIANTS}
  assert len({round(v, 12) for v in vals.values()}) == len(VARIANTS), vals


# ------------------------------------------------------------------------------------------------
# 3. Stop-gradient points and differentiable weights (mse, analytic numpy gradients).
# ------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("variant",))
def _term_jacobians(z, y, variant):
  def terms(zz):
    loss, aux = kdef_loss(zz, y, variant=variant)
    return {"loss": loss, "kd": aux["kd"], "dml": aux["dml"], "exam_scores": aux["exam_scores"]}
  return jax.device_get(jax.jacrev(terms)(z))


def _setup(K=3, B=4):
  z, y = _problem(K, B, seed=3)
  ref = np_kdef(z, y)
  p = _sig(z)
  dS_dz = (2 * y - 1) / B * p * (1 - p)  # [K, B]: dS_k/dz_k,i
  jac = _term_jacobians(jnp.asarray(z), jnp.asarray(y), "kdef")
  return z, y, ref, p, dS_dz, jac


def test_kd_target_is_detached(x64):
  z, y, ref, p, dS_dz, jac = _setup()
  K, B = z.shape
  lam, M, yt = ref["lam"], ref["M"], ref["teacher_prob"]
  direct = lam[:, None] * 2 * (p - yt) / B * p * (1 - p)  # y_t treated as a constant
  via_lambda = (-lam * (M - np.sum(lam * M)))[:, None] * dS_dz  # dL_KD/dS_j * dS_j/dz_j
  expected = direct + via_lambda
  # If the teacher were not detached: extra path through y_t = sigmoid(mean_k z_k).
  through_teacher = -np.sum(lam[:, None] * 2 * (p - yt) / B, axis=0) * yt * (1 - yt) / K
  got = np.asarray(jac["kd"])
  np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)
  assert np.abs(through_teacher).max() > 1e-4  # the test would notice a missing stop_gradient

  @jax.jit
  @jax.grad
  def kd_no_sg(zz):  # identity instead of sg on the teacher
    pp = jax.nn.sigmoid(zz)
    S = jnp.mean(1 - jnp.abs(jnp.asarray(y) - pp), axis=1)
    return jnp.sum(jax.nn.softmax(-S) * jnp.mean((pp - jax.nn.sigmoid(zz.mean(0))) ** 2, axis=1))

  g_no_sg = np.asarray(kd_no_sg(jnp.asarray(z)))
  np.testing.assert_allclose(g_no_sg, expected + through_teacher[None], rtol=1e-9, atol=1e-13)
  assert np.abs(g_no_sg - got).max() > 1e-4


def test_dml_peer_target_is_detached(x64):
  z, y = _problem(3, 4, seed=3)
  K, B = z.shape
  p = _sig(z)
  # dml_only: mu = 1/K constant, so z_l gets gradient from D_l only (its own row), never from D_k.
  own = np.zeros_like(z)
  for l in range(K):
    for m in range(K):
      if m != l:
        own[l] += (1 / K) * (1 / K) * 2 * (p[l] - p[m]) / B * p[l] * (1 - p[l])
  got = np.asarray(_term_jacobians(jnp.asarray(z), jnp.asarray(y), "dml_only")["dml"])
  np.testing.assert_allclose(got, own, rtol=1e-10, atol=1e-14)
  # Without sg, D_k (k != l) would add the same amount again (mse is symmetric): gradient doubles.
  assert np.abs(got - 2 * own).max() > 1e-4


def test_exam_weights_carry_gradient(x64):
  """Gradient of kdef minus gradient with lambda, mu detached == analytic weight gradient."""
  z, y, ref, p, dS_dz, jac = _setup()
  K, B = z.shape
  yj = jnp.asarray(y)

  def kdef_detached_weights(zz):
    pp = jax.nn.sigmoid(zz)
    yt = jax.nn.sigmoid(zz.mean(0))
    S = jnp.mean(1 - jnp.abs(yj - pp), axis=1)
    l_lab = jnp.mean(-(yj * jax.nn.log_sigmoid(zz) + (1 - yj) * jax.nn.log_sigmoid(-zz)))
    lam = sg(jax.nn.softmax(-S))
    kd = jnp.sum(lam * jnp.mean((pp - sg(yt)) ** 2, axis=1))
    dml = 0.0
    for k in range(K):
      others = [l for l in range(K) if l != k]
      mu = sg(jax.nn.softmax(S[jnp.array(others)]))
      for w, l in zip(mu, others):
        dml = dml + w * jnp.mean((pp[k] - sg(pp[l])) ** 2)
    return l_lab + kd + dml / K

  value, g_det = jax.jit(jax.value_and_grad(kdef_detached_weights))(jnp.asarray(z))
  (loss, _), _ = _VG_JIT(jnp.asarray(z), yj)
  np.testing.assert_allclose(float(value), float(loss), rtol=1e-13)
  g_full, g_det = np.asarray(jac["loss"]), np.asarray(g_det)
  lam, M, mu, C = ref["lam"], ref["M"], ref["mu"], ref["C"]
  D = np.sum(mu * C, axis=1)  # D_k (mu has a zero diagonal)
  dKD_dS = -lam * (M - np.sum(lam * M))
  dDML_dS = np.array([sum(mu[k, j] * (C[k, j] - D[k]) for k in range(K) if k != j) / K
                      for j in range(K)])
  weight_grad = (dKD_dS + dDML_dS)[:, None] * dS_dz
  assert np.abs(g_full - g_det).max() > 1e-6
  np.testing.assert_allclose(g_full - g_det, weight_grad, rtol=1e-8, atol=1e-15)


def test_exam_scores_not_detached(x64):
  z, y, _, _, dS_dz, jac = _setup()
  K, B = z.shape
  got = np.asarray(jac["exam_scores"])  # [K, K, B]
  expected = np.zeros((K, K, B))
  for k in range(K):
    expected[k, k] = dS_dz[k]
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-16)
  assert np.abs(got).max() > 1e-3


# ------------------------------------------------------------------------------------------------
# 4. Masking.
# ------------------------------------------------------------------------------------------------
# every variant (mse), plus the log-based consistency (all consistencies share the masked mean)
_MASK_COMBOS = tuple((v, "mse") for v in VARIANTS) + (("kdef", "kl"),)


def _padded(z, y):
  K = z.shape[0]
  garbage = np.array([np.nan, 1e4, -np.inf])
  zp = np.concatenate([z, np.tile(garbage, (K, 1))], axis=1)
  yp = np.concatenate([y, np.array([7.0, np.nan, -1.0])])
  mask = np.concatenate([np.ones_like(y), np.zeros(3)])
  return zp, yp, mask


@pytest.mark.parametrize("variant,kind", _MASK_COMBOS)
def test_mask_equals_unpadded(variant, kind, x64):
  z, y = _problem(3, 3)
  zp, yp, mask = _padded(z, y)
  key = f"{variant}/{kind}"
  (l0, a0), g0 = _cached_problem_results(3, 3, 1.0)[key]
  (l1, a1), g1 = run_combos(zp, yp, mask, combos=_MASK_COMBOS)[key]
  B = z.shape[1]
  tol = dict(rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(float(l1), float(l0), **tol)
  for name in a0:
    a, b = np.asarray(a0[name]), np.asarray(a1[name])
    if name in ("teacher_prob", "teacher_logit"):
      b = b[..., :B]
    np.testing.assert_allclose(b, a, err_msg=name, **tol)
  np.testing.assert_allclose(np.asarray(g1)[:, :B], np.asarray(g0), **tol)
  assert np.all(np.asarray(g1)[:, B:] == 0.0)


def test_all_zero_mask_is_finite(x64):
  z, y = _problem(3, 3)
  zp, yp, _ = _padded(z, y)
  for key, ((loss, aux), g) in run_combos(zp, yp, np.zeros(6), combos=_MASK_COMBOS).items():
    assert float(loss) == 0.0, key
    assert all(np.all(np.isfinite(np.asarray(v))) for v in aux.values()), key
    assert np.all(np.asarray(g) == 0.0), key


# ------------------------------------------------------------------------------------------------
# 5. K=1 and extreme logits.
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", CONSISTENCIES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_single_student(variant, kind, x64):
  z = np.array([[0.7, -1.2, 2.5, -0.1]])
  y = np.array([1.0, 0.0, 0.0, 1.0])
  p = _sig(z[0])
  plain = _np_bce(p, y)
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
# 6. jit, dtypes, argument validation.
# ------------------------------------------------------------------------------------------------
_JIT_LOSS = jax.jit(kdef_loss, static_argnames=("variant", "consistency"))  # the documented usage


def test_jit_matches_eager(x64):
  z, y = _problem(2, 3)
  z, y = jnp.asarray(z), jnp.asarray(y)
  l0, a0 = kdef_loss(z, y, variant="kdef", consistency="mse")  # eager
  l1, a1 = _JIT_LOSS(z, y, variant="kdef", consistency="mse")
  np.testing.assert_allclose(float(l1), float(l0), rtol=1e-13)
  for key in a0:
    np.testing.assert_allclose(np.asarray(a1[key]), np.asarray(a0[key]), rtol=1e-13, atol=1e-16)
  np.testing.assert_allclose(float(l0), np_kdef(np.asarray(z), np.asarray(y))["loss"], rtol=1e-12)


def test_dtypes(x64):
  z, y = _problem(2, 3)
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
  assert VARIANTS == ("kdef", "kd_only", "dml_only", "no_exam", "mean", "independent")
  assert CONSISTENCIES == ("mse", "l1", "huber", "bce", "kl")
  z, y = _problem(2, 3)
  aux = _JIT_LOSS(jnp.asarray(z), jnp.asarray(y))[1]
  assert set(aux) == {"teacher_logit", "teacher_prob", "exam_scores", "lambda", "mu", "student_bce",
                      "teacher_bce_monitor", "label_bce", "teacher_bce", "kd", "dml"}
