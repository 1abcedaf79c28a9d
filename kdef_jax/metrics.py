"""Evaluation metrics in float64 on the host, as the reference (sklearn) computes them.

* ``auc``: exact ROC AUC. With r_i the average rank of score i (ties share the mean rank),
  AUC = (Σ_{i: y_i=1} r_i − P(P+1)/2) / (P·N). Average ranks give exactly the trapezoid rule for
  tied scores, i.e. ``sklearn.metrics.roc_auc_score``.
* ``logloss``: −mean[y log p + (1−y) log(1−p)] with p clipped to [1e-7, 1 − 1e-7]
  (``sklearn.metrics.log_loss(eps=1e-7)`` as in FuxiCTR).
"""

from __future__ import annotations

import numpy as np

LOGLOSS_EPS = 1e-7


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of ``scores`` with ties replaced by their mean rank (float64)."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    # Boundaries of runs of equal scores in sorted order.
    new_run = np.empty(s.shape[0], dtype=bool)
    new_run[0] = True
    np.not_equal(s[1:], s[:-1], out=new_run[1:])
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], s.shape[0])  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(s.shape[0], dtype=np.float64)
    ranks[order] = mean_rank[run_id]
    return ranks


def _labelled(who: str, labels, values, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, values) as flat float64 arrays; a ValueError naming ``who`` for shapes that differ other
    than in axes of size 1 (a column [N, 1] pairs with [N]; [5, 10] with [10, 5] would pair the wrong
    elements) or a label other than 0 and 1 (NaN included)."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if [d for d in y.shape if d != 1] != [d for d in p.shape if d != 1]:
        raise ValueError(f"{who}: labels {y.shape} and {what} {p.shape} differ in shape")
    y, p = y.reshape(-1), p.reshape(-1)
    bad = (y != 0) & (y != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{who}: labels must be 0 or 1, got {y[i]!r} at index {i}")
    return y, p


def auc(labels, scores) -> float:
    """Exact ROC AUC (ties by trapezoid) of labels in {0, 1} and scores of the same shape. NaN if only
    one class is present or any score is NaN (sklearn raises there; a NaN ranked as a number would
    give a meaningless AUC)."""
    return _auc(*_labelled("auc", labels, scores, "scores"))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """:func:`auc` of flat float64 arrays whose labels are checked."""
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0 or np.isnan(p).any():
        return float("nan")
    ranks = _average_ranks(p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels, probs, eps: float = LOGLOSS_EPS) -> float:
    """Mean binary cross-entropy in float64 of labels in {0, 1} and probabilities of the same shape,
    clipped to [eps, 1 − eps]."""
    return _logloss(*_labelled("logloss", labels, probs, "probs"), eps)


def _logloss(y: np.ndarray, p: np.ndarray, eps: float = LOGLOSS_EPS) -> float:
    """:func:`logloss` of flat float64 arrays whose labels are checked."""
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def sigmoid64(logits) -> np.ndarray:
    """Numerically stable float64 sigmoid."""
    z = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def ensemble_prob64(logits, fusion: str = "mean_logit") -> np.ndarray:
    """The ensemble's probability [N] from student logits [K, N] in float64 (``kdef_jax.losses.FUSIONS``):
    σ(mean_k z_k), σ(Σ_k z_k), mean_k σ(z_k), or for "concat" σ of the last of [K + 1, N] rows (the
    MLPs_concat head's logit)."""
    z = np.asarray(logits)  # float64 row by row below: no float64 copy of all [K, N] (K=64: 2× the logits)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"ensemble_prob64: logits must be [K, N] with K >= 1, got shape {z.shape}")
    if fusion == "mean_logit":
        return sigmoid64(np.mean(z, axis=0, dtype=np.float64))
    if fusion == "sum_logit":
        return sigmoid64(np.sum(z, axis=0, dtype=np.float64))
    if fusion == "mean_prob":
        acc = np.zeros(z.shape[1:], np.float64)
        for row in z:
            acc += sigmoid64(row)
        return acc / z.shape[0]
    if fusion == "concat":
        return sigmoid64(z[-1])
    raise ValueError(f"Unknown fusion {fusion!r}; valid: mean_logit, sum_logit, mean_prob, concat")


def ensemble_metrics(labels, logits, fusion: str = "mean_logit") -> dict:
    """AUC and logloss of the teacher (the ensemble, by default σ of the mean logit) and of every student.

    Args:
      labels: [N] in {0, 1}.
      logits: [K, N] raw student logits ([K + 1, N] for "concat": the head's logit last).
      fusion: how the students form the ensemble (``ensemble_prob64``).
    Returns:
      {"teacher": {"auc", "logloss"}, "students": [{"auc", "logloss"}, ...]}.
    """
    z = np.asarray(logits)  # each student's row becomes float64 in sigmoid64, one at a time
    teacher_p = ensemble_prob64(z, fusion)
    y, teacher_p = _labelled("ensemble_metrics", labels, teacher_p, "logits' rows")  # once, not per student
    if fusion == "concat":
        z = z[:-1]
    students = []
    for k in range(z.shape[0]):
        p = sigmoid64(z[k])
        students.append({"auc": _auc(y, p), "logloss": _logloss(y, p)})
    return {"teacher": {"auc": _auc(y, teacher_p), "logloss": _logloss(y, teacher_p)}, "students": students}
