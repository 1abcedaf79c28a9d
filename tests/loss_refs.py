"""The numpy re-derivation of the KDEF loss the loss tests compare against, and their shared runs.

Loops over students, torch-style BCE on probabilities, the peers' softmax over S_l − S_k. Targets
(teacher, peers) come from ``z_tgt``, so finite differences w.r.t. ``z`` with ``z_tgt`` held fixed give
exactly the stop-gradient semantics."""
import functools
import itertools
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


VEC_PATH = _ref_dir() / "kdef-loss-vectors.json"
CASES = json.loads(VEC_PATH.read_text())["cases"] if VEC_PATH.exists() else None


# ------------------------------------------------------------------------------------------------
# Independent numpy re-derivation (loops, torch-style BCE on probabilities, softmax over S_l - S_k).
# Targets (teacher, peers) are computed from `z_tgt`, so finite differences w.r.t. `z` with `z_tgt`
# held fixed give exactly the stop-gradient semantics.
# ------------------------------------------------------------------------------------------------
def sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_bce(q, y):  # torch BCELoss on probabilities, log clamped at -100, batch mean
  return float(np.mean(-(y * np.maximum(np.log(q), -100) + (1 - y) * np.maximum(np.log(1 - q), -100))))


def np_consistency(p, t, kind, delta):
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


def np_ensemble_prob(z, variant):
  """The ensemble's probability by hand: mean of the K probabilities (mean_prob), σ of the logit sum
  (sum), else σ of the logit mean."""
  if variant == "mean_prob":
    return sum(sig(z[k]) for k in range(len(z))) / len(z)
  return sig(sum(z[k] for k in range(len(z))) / (1 if variant == "sum" else len(z)))


def np_kdef(z, y, variant="kdef", kind="mse", delta=1.0, z_tgt=None):
  """``concat``: the last row of ``z`` is the concat head's logit, the K rows before it the students."""
  z = np.asarray(z, np.float64)
  y = np.asarray(y, np.float64)
  z_tgt = z if z_tgt is None else z_tgt
  if variant == "concat":
    y_t, teacher_bce = sig(z_tgt[-1]), np_bce(sig(z[-1]), y)
    z, z_tgt = z[:-1], z_tgt[:-1]
  else:
    y_t = np_ensemble_prob(z_tgt, variant)  # KD target (detached)
    teacher_bce = np_bce(np_ensemble_prob(z, variant), y)
  K, _ = z.shape
  p = sig(z)
  p_tgt = sig(z_tgt)  # DML peer targets (detached)
  student_bce = np.array([np_bce(p[k], y) for k in range(K)])
  S = np.array([np.mean(1 - np.abs(y - p[k])) for k in range(K)])
  M = np.array([np.mean(np_consistency(p[k], y_t, kind, delta)) for k in range(K)])
  C = np.array([[np.mean(np_consistency(p[k], p_tgt[l], kind, delta)) for l in range(K)] for k in range(K)])
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
             "mean": (0 * S, 0 * off), "sum": (0 * S, 0 * off), "mean_prob": (0 * S, 0 * off),
             "concat": (0 * S, 0 * off), "independent": (0 * S, 0 * off)}[variant]
  out = dict(
      label_bce=student_bce.mean() if variant in ("kdef", "dml_only", "no_exam", "independent") else 0.0,
      teacher_bce=teacher_bce if variant in ("kd_only", "mean", "sum", "mean_prob", "concat") else 0.0,
      kd=float(np.sum(lam * M)),
      dml=float(sum(mu[k, l] * C[k, l] for k in range(K) for l in range(K) if l != k) / K),
      exam_scores=S, lam=lam, mu=mu, M=M, C=C, student_bce=student_bce, teacher_prob=y_t,
      teacher_bce_monitor=teacher_bce)
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


def problem(K, B, seed=0):
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
  if len(z) == 1:  # concat needs a student and the head's row
    combos = tuple(c for c in combos if c[0] != "concat")
  out = _combos(jnp.asarray(z), jnp.asarray(y), None if mask is None else jnp.asarray(mask),
                delta, combos=combos, grad=grad)
  return jax.device_get(out)


VG_JIT = jax.jit(jax.value_and_grad(kdef_loss, has_aux=True), static_argnames=("variant", "consistency"))


@functools.lru_cache(maxsize=None)
def cached_problem_results(K, B, delta):  # only called from x64 tests
  z, y = problem(K, B)
  return run_combos(z, y, delta=delta, grad=K == 3)  # gradients: K=3 only (compile time)
