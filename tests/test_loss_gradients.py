"""kdef_jax.losses: the stop-gradient points (the teacher and the peers are detached targets; the
examination weights λ, μ carry gradient through S) and masking of padded rows."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdef_jax.losses import VARIANTS, kdef_loss
from loss_refs import VG_JIT, cached_problem_results, np_kdef, problem, run_combos, sg, sig, x64  # noqa: F401 (x64: a fixture)


# ------------------------------------------------------------------------------------------------
# Stop-gradient points and differentiable weights (mse, analytic numpy gradients).
# ------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("variant",))
def _term_jacobians(z, y, variant):
  def terms(zz):
    loss, aux = kdef_loss(zz, y, variant=variant)
    return {"loss": loss, "kd": aux["kd"], "dml": aux["dml"], "exam_scores": aux["exam_scores"]}
  return jax.device_get(jax.jacrev(terms)(z))


def _setup(K=3, B=4):
  z, y = problem(K, B, seed=3)
  ref = np_kdef(z, y)
  p = sig(z)
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
  z, y = problem(3, 4, seed=3)
  K, B = z.shape
  p = sig(z)
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
  (loss, _), _ = VG_JIT(jnp.asarray(z), yj)
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
# Masking.
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
  z, y = problem(3, 3)
  zp, yp, mask = _padded(z, y)
  key = f"{variant}/{kind}"
  (l0, a0), g0 = cached_problem_results(3, 3, 1.0)[key]
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
  z, y = problem(3, 3)
  zp, yp, _ = _padded(z, y)
  for key, ((loss, aux), g) in run_combos(zp, yp, np.zeros(6), combos=_MASK_COMBOS).items():
    assert float(loss) == 0.0, key
    assert all(np.all(np.isfinite(np.asarray(v))) for v in aux.values()), key
    assert np.all(np.asarray(g) == 0.0), key


def test_a_row_weight_counts_its_row_that_many_times_and_a_negative_or_nan_weight_is_padding(x64):
  """mask = [2, 1, 1, ...]: the loss and the gradient of the row-0 logits equal those of a batch that holds
  row 0 twice (summed over both copies); weights -1 and NaN are padding, like 0."""
  z, y = problem(3, 3)
  zp, yp, _ = _padded(z, y)
  weights = np.array([2.0, 1.0, 1.0, -1.0, np.nan, 0.0])
  dup_z, dup_y = np.concatenate([z[:, :1], z], axis=1), np.concatenate([y[:1], y])
  got, want = run_combos(zp, yp, weights, combos=_MASK_COMBOS), run_combos(dup_z, dup_y, None, combos=_MASK_COMBOS)
  for key in want:
    (l1, _), g1 = got[key]
    (l0, _), g0 = want[key]
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-12, err_msg=key)
    g0 = np.asarray(g0)
    np.testing.assert_allclose(np.asarray(g1)[:, :3], np.concatenate([g0[:, :1] + g0[:, 1:2], g0[:, 2:]], axis=1),
                               rtol=1e-10, atol=1e-15, err_msg=key)
    assert np.all(np.asarray(g1)[:, 3:] == 0.0), key
