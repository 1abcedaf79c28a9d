"""KDEF ensemble loss (pure JAX): label BCE + exam-weighted KD + exam-weighted DML.

The default variant reproduces the authors' PyTorch code (EKTF.add_loss); see
``shared/reference/kdef-reference.md`` section 3. Notation: ``z`` = logits [K, B], ``p = sigmoid(z)``,
teacher logit ``z_t = mean_k z_k``, teacher probability ``y_t = sigmoid(z_t)`` (sigmoid of the mean
*logit*), ``sg`` = ``jax.lax.stop_gradient``, "mean" = (masked) mean over the batch. The ensemble
baselines ``"sum"``, ``"mean_prob"`` and ``"concat"`` form the ensemble (teacher) otherwise:
``ensemble_logit``.
"""
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

VARIANTS = ("kdef", "kd_only", "dml_only", "no_exam", "mean", "sum", "mean_prob", "concat", "independent")
CONSISTENCIES = ("mse", "l1", "huber", "bce", "kl")
# the variants with a distillation or mutual-learning term: the only ones ``consistency`` applies to
DISTILLING_VARIANTS = ("kdef", "kd_only", "dml_only", "no_exam")
# How the K students form the ensemble (the teacher): the logit mean (default), the logit sum
# (MLPs_sum, spec §7), the probability mean ("mean_prob": MLP_mean read as averaging probabilities) or
# a learned head over the students' last hidden layers ("concat": MLPs_concat, the logits' extra last row).
FUSIONS = ("mean_logit", "sum_logit", "mean_prob", "concat")
_LOG_CLAMP = -100.0


def fusion_of(variant: str) -> str:
  """The ensemble ``variant`` trains and predicts with: ``"sum"`` → ``"sum_logit"``, ``"mean_prob"`` →
  ``"mean_prob"``, ``"concat"`` → ``"concat"``, every other variant (KDEF's teacher σ(mean z)
  included) → ``"mean_logit"``."""
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; valid: {VARIANTS}.")
  return {"sum": "sum_logit", "mean_prob": "mean_prob", "concat": "concat"}.get(variant, "mean_logit")


def teacher_logit(logits: jax.Array) -> jax.Array:
  """Teacher logit ``z_t = mean_k z_k`` of ``logits`` [K, B] -> [B]."""
  return jnp.mean(logits, axis=0)


def _real(logits) -> jax.Array:
  """``logits`` as an array; complex ones are an error (they would make every result complex)."""
  logits = jnp.asarray(logits)
  if jnp.issubdtype(logits.dtype, jnp.complexfloating):
    raise ValueError(f"logits must be real (a float or int dtype), got {logits.dtype}.")
  return logits


def ensemble_logit(logits: jax.Array, fusion: str = "mean_logit") -> jax.Array:
  r"""The ensemble's logit [B] from student logits [K, B] ([K + 1, B] for ``"concat"``); its
  probability is ``sigmoid`` of it.

  * ``"mean_logit"``: ``mean_k z_k`` (KDEF's teacher, MLP_mean).
  * ``"sum_logit"``: ``sum_k z_k`` (MLPs_sum: the same ranking as the mean, K times as sharp).
  * ``"mean_prob"``: ``logit(mean_k sigmoid(z_k)) = LSE_k log sigmoid(z_k) - LSE_k log sigmoid(-z_k)``
    (the two ``log K`` cancel), finite for finite ``z`` however saturated the students are.
  * ``"concat"``: ``logits[-1]``, the row a model with the MLPs_concat head
    (``KDEFModel(concat_head=True)``) appends after its K students: ``w·[a_1; …; a_K] + b``.

  Computes in ``promote(dtype, float32)``, as :func:`kdef_loss` does: bfloat16 or float16 logits give a
  float32 logit (the mean over K students would round at 8 bits otherwise), float64 ones float64.
  """
  logits = _real(logits)
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  if logits.ndim != 2 or logits.shape[0] < (2 if fusion == "concat" else 1):
    raise ValueError(f"ensemble_logit({fusion!r}): logits must be [K, B] with K >= 1 ([K + 1, B] for concat), "
                     f"got shape {logits.shape}.")
  if fusion == "mean_logit":
    return teacher_logit(logits)
  if fusion == "sum_logit":
    return jnp.sum(logits, axis=0)
  if fusion == "mean_prob":
    lse = jax.nn.logsumexp
    return lse(jax.nn.log_sigmoid(logits), axis=0) - lse(jax.nn.log_sigmoid(-logits), axis=0)
  if fusion == "concat":
    return logits[-1]
  raise ValueError(f"Unknown fusion {fusion!r}; valid: {FUSIONS}.")


def _log_sigmoid(z: jax.Array) -> jax.Array:
  """``max(log sigmoid(z), -100)``: PyTorch's clamped log, but finite gradients everywhere."""
  return jnp.maximum(jax.nn.log_sigmoid(z), _LOG_CLAMP)


def _bce(z: jax.Array, y: jax.Array) -> jax.Array:
  """Elementwise BCE from a logit: ``-[y log s(z) + (1-y) log s(-z)]``, logs clamped at -100."""
  return -(y * _log_sigmoid(z) + (1.0 - y) * _log_sigmoid(-z))


def _xlogx(x: jax.Array) -> jax.Array:
  """``x log x`` with ``0 log 0 := 0`` (NaN-free value and gradient)."""
  pos = x > 0
  return jnp.where(pos, x * jnp.log(jnp.where(pos, x, 1.0)), 0.0)


def _consistency(z, p, t, kind: str, delta):
  """Elementwise consistency between a student (logit ``z``, prob ``p``) and a target prob ``t``.

  mse: (p-t)^2;  l1: |p-t| (subgradient 0 at 0, as torch);  huber: 0.5 d^2 if |d| <= delta else
  delta (|d| - delta/2);  bce: -(t log p + (1-t) log(1-p));  kl: KL(Bern(t) || Bern(p)).
  ``log p`` / ``log(1-p)`` come from ``log_sigmoid(+-z)`` clamped at -100. ``t`` should be detached.
  """
  d = p - t
  if kind == "mse":
    return d * d
  if kind == "l1":
    return d * jnp.sign(d)
  if kind == "huber":
    a = jnp.abs(d)
    return jnp.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))
  ce = -(t * _log_sigmoid(z) + (1.0 - t) * _log_sigmoid(-z))
  if kind == "bce":
    return ce
  return ce + _xlogx(t) + _xlogx(1.0 - t)  # "kl" = cross-entropy - entropy(t)


def kdef_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    variant: str = "kdef",
    consistency: str = "mse",
    mask: Optional[jax.Array] = None,
    huber_delta: Any = 1.0,
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  r"""KDEF loss over K student logits.

  With ``BCE_k = mean_i bce(z_k, y)``, ``S_k = mean_i (1 - |y_i - p_k,i|)`` (exam score, *not*
  detached), ``M_k = mean_i c(p_k, sg(y_t))`` and ``C_kl = mean_i c(p_k, sg(p_l))``:

  * ``"kdef"`` (authors' code, default): ``(1/K) sum_k BCE_k + sum_k lam_k M_k
    + (1/K) sum_k sum_{l!=k} mu_kl C_kl`` with ``lam = softmax(-S)`` (softmin) and
    ``mu_k. = softmax_{l!=k}(S_l)`` (zero diagonal); both differentiable. No teacher BCE.
  * ``"kd_only"`` (paper Eq. 6): ``bce(z_t, y) + sum_k lam_k M_k``.
  * ``"dml_only"`` (paper Eq. 7): ``(1/K) sum_k BCE_k + (1/K) sum_k sum_{l!=k} (1/K) C_kl``.
  * ``"no_exam"`` ("w/o EM"): as kdef with ``lam_k = 1``, ``mu_kl = 1`` (l != k).
  * ``"mean"`` ("w/o all", MLP_mean): ``bce(z_t, y)``.
  * ``"sum"`` (MLPs_sum): ``bce(z_t, y)`` with ``z_t = sum_k z_k``.
  * ``"mean_prob"`` (MLP_mean averaging probabilities): ``bce(z_t, y)`` with
    ``sigmoid(z_t) = mean_k p_k`` (``ensemble_logit``).
  * ``"concat"`` (MLPs_concat): ``bce(z_t, y)`` with ``z_t`` the head's logit, the last of the K + 1
    rows of ``logits``; the K student rows are reported (``student_bce``) but get no gradient.
  * ``"independent"``: ``(1/K) sum_k BCE_k``.

  BCE choice: ``bce(z, y) = -[y max(log_sigmoid(z), -100) + (1-y) max(log_sigmoid(-z), -100)]``.
  This equals PyTorch ``BCELoss(sigmoid(z), y)`` (log clamped at -100) wherever sigmoid(z) is not
  saturated in floating point, and unlike ``log(sigmoid(z))`` it has finite gradients everywhere.
  Consistency terms and exam scores use probabilities. K = 1: no DML (mu = [[0]]), lam = [1].

  Args:
    logits: [K, B] raw student logits ([K + 1, B] for ``"concat"``: the head's logit last). Math runs
      in ``promote(dtype, float32)``.
    labels: [B] in {0, 1} (not checked here, so that it can be jitted; the data pipeline checks).
    variant: one of ``VARIANTS`` (static under jit).
    consistency: one of ``CONSISTENCIES`` (static under jit).
    mask: optional [B] row weights, 1 = keep and 0 = padding (the training loop's mask). Every batch
      mean becomes ``sum(mask x) / sum(mask)`` (0 if the mask is all zero), so a weight w counts its row
      w times (a weighted mean); rows of weight <= 0 (or NaN) count as padding and get zero gradient.
    huber_delta: Huber threshold (torch ``HuberLoss`` default 1.0).

  Returns:
    ``(loss, aux)``; aux holds ``teacher_logit`` [B] (``ensemble_logit(z, fusion_of(variant))``),
    ``teacher_prob`` [B], ``exam_scores`` [K],
    ``lambda`` [K] and ``mu`` [K, K] (weights used, zeros where unused), ``student_bce`` [K],
    ``teacher_bce_monitor`` and the terms ``label_bce``, ``teacher_bce``, ``kd``, ``dml`` with
    ``loss == label_bce + teacher_bce + kd + dml``.
  """
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; valid: {VARIANTS}.")
  if consistency not in CONSISTENCIES:
    raise ValueError(f"Unknown consistency {consistency!r}; valid: {CONSISTENCIES}.")
  logits = _real(logits)
  labels = jnp.asarray(labels)
  if logits.ndim != 2 or 0 in logits.shape:
    raise ValueError(f"logits must be [K, B] with K, B >= 1, got shape {logits.shape}.")
  if jnp.ndim(huber_delta) != 0:
    raise ValueError(f"huber_delta must be a scalar, got shape {jnp.shape(huber_delta)}.")
  not_a_number = ValueError(f"huber_delta must be a number > 0, got {huber_delta!r}.")
  if isinstance(huber_delta, (str, bytes)):  # float("0.5") would pass, then fail deep inside as a TypeError
    raise not_a_number
  try:  # a concrete value of any kind (np.float32, a 0-d array); a traced one is the caller's to check
    delta = float(huber_delta)
  except jax.errors.ConcretizationTypeError:
    delta = None
  except (TypeError, ValueError):  # None
    raise not_a_number from None
  if delta is not None and not delta > 0:
    raise ValueError(f"huber_delta must be > 0, got {huber_delta!r}.")
  if labels.ndim != 1 or labels.shape[0] != logits.shape[1]:
    raise ValueError(f"labels must be [B] matching logits [K, B]; got labels {labels.shape}, "
                     f"logits {logits.shape}.")
  if mask is not None:
    mask = jnp.asarray(mask)  # (a list of tracers under jit has no shape of its own)
  if mask is not None and mask.shape != labels.shape:
    raise ValueError(f"mask must be [B] = {labels.shape}, got {jnp.shape(mask)}.")
  fusion = fusion_of(variant)
  if fusion == "concat" and logits.shape[0] < 2:
    raise ValueError(f"variant 'concat' needs [K + 1, B] logits (K students, then the concat head's logit); "
                     f"got shape {logits.shape}.")
  K = logits.shape[0] - 1 if fusion == "concat" else logits.shape[0]
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  z = logits.astype(dtype)
  y = labels.astype(dtype)

  if mask is None:
    bmean = lambda x: jnp.mean(x, axis=-1)
  else:
    m = jnp.asarray(mask).astype(dtype)
    keep = m > 0
    m = jnp.where(keep, m, 0.0)  # a negative or NaN weight is padding, in the sums and the count alike
    z = jnp.where(keep, z, 0.0)  # neutralise garbage padding (NaN/inf) and zero its gradient
    y = jnp.where(keep, y, 0.0)
    msum = jnp.sum(m)
    denom = jnp.where(msum > 0, msum, 1.0)
    bmean = lambda x: jnp.sum(jnp.where(keep, x * m, 0.0), axis=-1) / denom

  zt = ensemble_logit(z, fusion)
  z = z[:K]  # the students (without the concat head's row)
  p = jax.nn.sigmoid(z)
  yt = jax.nn.sigmoid(zt)
  student_bce = bmean(_bce(z, y[None]))  # [K]
  teacher_bce = bmean(_bce(zt, y))  # scalar
  scores = bmean(1.0 - jnp.abs(y[None] - p))  # [K], not detached
  zero = jnp.zeros((), dtype)
  off_diag = 1.0 - jnp.eye(K, dtype=dtype)

  # Per-variant weights. lam: KD weights; mu: DML weights (zero diagonal); None = term unused.
  lam = mu = None
  if variant in ("kdef", "kd_only"):
    lam = jax.nn.softmax(-scores)
  elif variant == "no_exam":
    lam = jnp.ones((K,), dtype)
  if K > 1:  # static: with one student there are no peers, so no DML (and no empty softmax)
    if variant == "kdef":
      e = jnp.exp(scores - jnp.max(scores))[None, :] * off_diag  # softmax_{l!=k}(S_l)
      mu = e / jnp.sum(e, axis=1, keepdims=True)
    elif variant == "dml_only":
      mu = off_diag / K
    elif variant == "no_exam":
      mu = off_diag

  kd = dml = zero
  if lam is not None:
    M = bmean(_consistency(z, p, jax.lax.stop_gradient(yt)[None], consistency, huber_delta))
    kd = jnp.sum(lam * M)
  if mu is not None:
    C = bmean(_consistency(z[:, None], p[:, None], jax.lax.stop_gradient(p)[None],
                           consistency, huber_delta))  # [K, K]: C[k, l] = c(p_k, sg(p_l))
    dml = jnp.sum(mu * C) / K
  label_bce = jnp.mean(student_bce) if variant in ("kdef", "dml_only", "no_exam",
                                                   "independent") else zero
  teacher_term = teacher_bce if variant in ("kd_only", "mean", "sum", "mean_prob", "concat") else zero
  loss = label_bce + teacher_term + kd + dml
  aux = {
      "teacher_logit": zt,
      "teacher_prob": yt,
      "exam_scores": scores,
      "lambda": lam if lam is not None else jnp.zeros((K,), dtype),
      "mu": mu if mu is not None else jnp.zeros((K, K), dtype),
      "student_bce": student_bce,
      "teacher_bce_monitor": teacher_bce,
      "label_bce": label_bce,
      "teacher_bce": teacher_term,
      "kd": kd,
      "dml": dml,
  }
  return loss, aux
