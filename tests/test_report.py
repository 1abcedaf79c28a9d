"""report.summarize: the results table, the best student by validation AUC, the ensemble − best deltas."""
import pytest

from kdef_jax.report import summarize


def _m(auc, ll):
  return {"auc": auc, "logloss": ll}


def test_summarize_picks_the_best_student_by_validation_auc_and_diffs_its_test_row():
  val = {"teacher": _m(0.74, 0.50), "students": [_m(0.70, 0.52), _m(0.75, 0.49), _m(0.72, 0.51)]}
  test = {"teacher": _m(0.78, 0.40), "students": [_m(0.80, 0.41), _m(0.71, 0.45), _m(0.79, 0.43)]}
  names = ["mlp_0", "mlp_1", "mlp_2"]
  s = summarize(val, test, names)
  assert s["best_student"] == "mlp_1" and s["best_student_index"] == 1  # by test AUC it would be mlp_0
  assert s["ensemble_minus_best_student_test_auc"] == pytest.approx(0.78 - 0.71)  # +0.07
  assert s["ensemble_minus_best_student_test_logloss"] == pytest.approx(0.40 - 0.45)  # -0.05
  assert [r["model"] for r in s["rows"]] == ["ensemble", *names]
  assert s["rows"][2] == {"model": "mlp_1", "val_auc": 0.75, "val_logloss": 0.49, "test_auc": 0.71, "test_logloss": 0.45}
  no_test = summarize(val, None, names)
  assert no_test["best_student_index"] == 1 and "ensemble_minus_best_student_test_auc" not in no_test
