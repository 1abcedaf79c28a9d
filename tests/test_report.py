"""report.summarize: the results table, the best student by validation AUC, the ensemble − best deltas."""
import json

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


def test_format_table_puts_each_number_under_its_column_and_marks_the_best_student():
    """P2: the cells follow the header's column order."""
    from kdef_jax.report import format_table, summarize

    def m(auc, ll):
        return {"auc": auc, "logloss": ll}

    val = {"teacher": m(0.71, 0.41), "students": [m(0.72, 0.42), m(0.73, 0.43)]}
    test = {"teacher": m(0.81, 0.51), "students": [m(0.82, 0.52), m(0.83, 0.53)]}
    lines = format_table(summarize(val, test, ["mlp_0", "mlp_1"])).splitlines()
    assert lines[0].split() == ["model", "val_auc", "val_logloss", "test_auc", "test_logloss"]
    assert lines[1].split() == ["ensemble", "0.710000", "0.410000", "0.810000", "0.510000"]
    assert lines[3].split() == ["mlp_1", "*", "0.730000", "0.430000", "0.830000", "0.530000"]
    assert lines[2].split()[0] == "mlp_0" and "*" not in lines[2]
    no_test = format_table(summarize(val, None, ["mlp_0", "mlp_1"])).splitlines()
    assert no_test[1].split() == ["ensemble", "0.710000", "0.410000", "-", "-"]


def test_jsonl_line_is_strict_json():
    """P5: metrics.jsonl lines hold null, never NaN (the AUC of a one-class split)."""
    from kdef_jax.report import jsonl_line

    line = jsonl_line({"epoch": 1, "val": {"auc": float("nan")}})
    assert line.endswith("\n") and json.loads(line, parse_constant=lambda c: pytest.fail(c)) == {"epoch": 1, "val": {"auc": None}}


def test_training_curves_tick_whole_epochs_and_mark_every_point(tmp_path, monkeypatch):
  pytest.importorskip("matplotlib")
  from kdef_jax import report

  figs = []
  monkeypatch.setattr(report, "save_figure", lambda fig, path, dpi=120: figs.append(fig))
  h = [{"epoch": 1, "val": {"teacher": {"auc": 0.9}, "students": [{"auc": 0.8}]}, "train": {"loss": 0.5}, "lr": 1e-3}]
  assert report.plot_history(h, ["mlp_0"], tmp_path / "c.png")
  auc, loss = figs[0].axes[:2]
  assert list(auc.get_xticks()) == [1] == list(loss.get_xticks())  # one epoch: one tick, not 0.96 ... 1.04
  assert all(line.get_marker() not in (None, "None", "") for line in auc.get_lines())  # a single epoch is visible
