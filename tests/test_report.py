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


# Cases mutation testing of report.py found unpinned (2026-12-07).


def test_format_table_right_aligns_every_cell_and_signs_both_deltas():
    """Each cell right-aligned in 14 characters (a left-aligning mutant survived); the last line gives
    both test deltas with their sign (mutants: no '+', the AUC delta printed as the logloss delta)."""
    from kdef_jax.report import format_table, summarize

    val = {"teacher": _m(0.74, 0.50), "students": [_m(0.70, 0.52), _m(0.75, 0.49)]}
    test = {"teacher": _m(0.78, 0.40), "students": [_m(0.80, 0.41), _m(0.71, 0.45)]}
    lines = format_table(summarize(val, test, ["mlp_0", "mlp_1"])).splitlines()
    cell = "{:>14}".format
    assert lines[0] == "  ".join(map(cell, ["model", "val_auc", "val_logloss", "test_auc", "test_logloss"]))
    assert lines[1] == "  ".join(map(cell, ["ensemble", "0.740000", "0.500000", "0.780000", "0.400000"]))
    assert lines[3] == "  ".join(map(cell, ["mlp_1 *", "0.750000", "0.490000", "0.710000", "0.450000"]))
    assert lines[4] == "* best student by validation AUC: mlp_1"
    assert lines[5] == "ensemble − best student (test): AUC +0.070000, logloss -0.050000"


def test_host_cpu_without_cpuinfo_has_no_cpu_count():
    """logical_cpus is None (unknown), not 0, when nothing lists a processor."""
    from kdef_jax.report import host_cpu

    cpu = host_cpu("")
    assert cpu["logical_cpus"] is None and cpu["isa"] == [] and "family" not in cpu


def _curves(monkeypatch, tmp_path, epochs, names=("mlp_0", "mlp_1")):
    pytest.importorskip("matplotlib")
    from kdef_jax import report

    figs = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path, dpi=120: figs.append(fig))
    history = [{"epoch": e, "val": {"teacher": {"auc": 0.7 + e / 1000},
                                    "students": [{"auc": 0.6 + k / 10 + e / 1000} for k in range(len(names))]},
                "train": {"loss": 1.0 / e}, "lr": 1e-3 / e} for e in epochs]
    assert report.plot_history(history, list(names), tmp_path / "c.png")
    return figs[0], history


def test_training_curves_plot_each_students_own_auc_and_the_learning_rate(monkeypatch, tmp_path):
    fig, history = _curves(monkeypatch, tmp_path, [1, 2, 3])
    auc, loss, lr = fig.axes
    got = {line.get_label(): list(line.get_ydata()) for line in auc.get_lines()}
    assert got["mlp_1"] == [h["val"]["students"][1]["auc"] for h in history]  # not student 0's curve
    assert got["ensemble (teacher)"] == [h["val"]["teacher"]["auc"] for h in history]
    assert list(loss.get_lines()[0].get_ydata()) == [1.0, 0.5, 1 / 3]
    assert list(lr.get_lines()[0].get_ydata()) == [1e-3, 1e-3 / 2, 1e-3 / 3]


def test_training_curves_one_epoch_is_centred_and_fifteen_epochs_are_all_ticked(monkeypatch, tmp_path):
    fig, _ = _curves(monkeypatch, tmp_path, [1])
    for ax in fig.axes[:2]:
        assert tuple(ax.get_xlim()) == (0, 2)
    fig, _ = _curves(monkeypatch, tmp_path, list(range(1, 16)))
    for ax in fig.axes[:2]:
        assert list(ax.get_xticks()) == list(range(1, 16))


def test_a_student_without_a_validation_auc_is_never_the_best():
  """max() keeps a NaN first (no comparison with it is true): a diverged student 0 must not be chosen."""
  nan = float("nan")
  val = {"teacher": _m(0.8, 0.4), "students": [_m(nan, nan), _m(0.79, 0.4)]}
  out = summarize(val, val, ["mlp_0", "mlp_1"])
  assert (out["best_student"], out["best_student_index"]) == ("mlp_1", 1)


def test_tolerant_stdio_prints_what_the_console_cannot_encode_as_escapes(monkeypatch):
  import io
  import sys

  from kdef_jax.report import tolerant_stdio

  out, err = (io.TextIOWrapper(io.BytesIO(), encoding="ascii") for _ in range(2))
  monkeypatch.setattr(sys, "stdout", out)
  monkeypatch.setattr(sys, "stderr", err)
  tolerant_stdio()
  print("ensemble − best student ×2")
  print("λ", file=sys.stderr)
  for stream, want in ((out, b"ensemble \\u2212 best student \\xd72\n"), (err, b"\\u03bb\n")):
    stream.flush()
    assert stream.buffer.getvalue() == want


def test_training_curves_of_many_students_colour_them_by_index_and_mark_the_best_epoch(monkeypatch, tmp_path):
    """K=32: the default colour cycle repeated every 10 students and a 32-entry legend covered the plot."""
    from kdef_jax import report

    names = [f"mlp_{k}" for k in range(32)]
    figs = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path, dpi=120: figs.append(fig))
    history = [{"epoch": e, "val": {"teacher": {"auc": 0.7 + e / 100}, "students": [{"auc": 0.6 + k / 1000} for k in range(32)]},
                "train": {"loss": 1.0 / e}, "lr": 1e-3} for e in (1, 2, 3)]
    pytest.importorskip("matplotlib")
    assert report.plot_history(history, names, tmp_path / "c.png", best_epoch=2, title="frappe: kdef, K=32")
    fig = figs[0]
    auc = fig.axes[0]
    students = [ln for ln in auc.get_lines() if ln.get_label() in names]
    assert len(students) == 32 and len({ln.get_color() for ln in students}) == 32  # no colour repeats
    assert [t.get_text() for t in auc.get_legend().get_texts()] == ["ensemble (teacher)", "32 students (colour: index)"]
    assert any(ax.get_ylabel() == "student index" for ax in fig.axes)  # the colour bar says what colour means
    best = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == "best epoch 2"]
    assert len(best) == 2 and all(list(ln.get_xdata()) == [2, 2] for ln in best)
    assert fig._suptitle.get_text() == "frappe: kdef, K=32"



def test_software_names_the_versions_and_the_checkout_commit(tmp_path):
    """The code a run was made with: package versions, and the git commit of the source with "+dirty"
    when a tracked file is changed; None outside a git checkout."""
    import shutil
    import subprocess

    import jax

    from kdef_jax.report import software

    outside = software(tmp_path)
    assert outside["jax"] == jax.__version__ and outside["python"] and outside["commit"] is None
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "f.py").write_text("a = 1\n")
    git("add", "f.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert software(tmp_path)["commit"] == head
    (tmp_path / "new.txt").write_text("untracked files do not count\n")
    assert software(tmp_path)["commit"] == head
    (tmp_path / "f.py").write_text("a = 2\n")
    assert software(tmp_path)["commit"] == head + "+dirty"
