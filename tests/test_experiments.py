"""experiments/: the seed runner and the K-scaling sweep (tiny synthetic runs)."""

import json
import os
import re
import sys
import types

import pytest

from conftest import REPO_ROOT
from kdef_jax.config import apply_overrides

sys.path.insert(0, str(REPO_ROOT / "experiments"))

import collapse  # noqa: E402
import findings  # noqa: E402
import sweep_records as records  # noqa: E402
import numpy as np  # noqa: E402
import run_seeds  # noqa: E402
import scaling  # noqa: E402

TINY = ["data.synthetic.num_train=1200", "data.synthetic.num_valid=400", "data.synthetic.num_test=400",
        "data.name=synthetic_exp", "model.hidden_units=(8,)", "train.num_epochs=1", "train.batch_size=400",
        "train.plot=False"]


def _summary(ens, best, epochs=(3, 4)):
    runs = [{"seed": s, "rows": [{"test_auc": e, "test_logloss": 0.5}, {"model": "mlp_0", "test_auc": b, "test_logloss": 0.6}],
             "best_student_index": 0, "epochs_run": n, "wall_s": 1.0, "train_samples_per_s": t}
            for s, e, b, n, t in zip((1, 2), ens, best, epochs, (1000.0, 3000.0))]
    return run_seeds.summarize(runs)


def test_summarize_and_markdown_by_hand():
    table = {"mean": {1: _summary((0.70, 0.72), (0.70, 0.72)), 4: _summary((0.71, 0.71), (0.60, 0.64))}}
    s = table["mean"][4]
    assert s["ensemble_test_auc"]["mean"] == pytest.approx(0.71)
    assert s["best_student_test_auc"] == {"mean": pytest.approx(0.62), "min": 0.60, "max": 0.64, "values": [0.60, 0.64]}
    md = scaling.markdown(table).splitlines()
    assert md[2] == "| mean | 1 | **0.7100** (0.7000 / 0.7200) | 0.7100 (0.7000 / 0.7200) | +0.0000 | 3, 4 | 2,000 |"
    assert md[3] == "| mean | 4 | **0.7100** (0.7100 / 0.7100) | 0.6200 (0.6000 / 0.6400) | +0.0900 | 3, 4 | 2,000 |"


def test_best_marks_bold_the_highest_as_shown_and_nothing_alone():
  assert run_seeds.best_marks([0.7, 0.8, 0.75]) == [False, True, False]
  assert run_seeds.best_marks([0.80001, 0.8, 0.7]) == [True, True, False]  # equal to 4 decimals: both
  assert run_seeds.best_marks([0.8]) == [False] and run_seeds.best_marks([]) == []


def test_scaling_table_bolds_each_variants_best_k_and_an_ablations_best_variant():
  table = {"mean": {1: _summary((0.72, 0.72), (0.7, 0.7)), 4: _summary((0.70, 0.70), (0.6, 0.6))},
           "kdef": {1: _summary((0.71, 0.71), (0.7, 0.7)), 4: _summary((0.73, 0.73), (0.7, 0.7))}}
  md = scaling.markdown(table).splitlines()
  assert [line.split(" | ")[2] for line in md[2:6]] == ["**0.7200** (0.7200 / 0.7200)", "0.7000 (0.7000 / 0.7000)",
                                                         "0.7100 (0.7100 / 0.7100)", "**0.7300** (0.7300 / 0.7300)"]
  assert md[-1] == "**bold**: each variant's highest mean ensemble test AUC over K."
  ablation = {"kdef": {4: _summary((0.73, 0.73), (0.7, 0.7))}, "mean": {4: _summary((0.70, 0.70), (0.6, 0.6))}}
  md = scaling.markdown(ablation).splitlines()
  assert md[2].startswith("| kdef | 4 | **0.7300** ") and md[3].startswith("| mean | 4 | 0.7000 ")
  assert md[-1] == "**bold**: the highest mean ensemble test AUC of the variants."
  assert "**" not in scaling.markdown({"kdef": {4: ablation["kdef"][4]}})  # one row: nothing is best


def test_apply_overrides_rejects_unknown_keys():
    from kdef_jax.config import base_config

    c = base_config()
    apply_overrides(c, ["model.hidden_units=(8,4)", "loss.variant=mean", "train.batch_size=64"])
    assert c.model.hidden_units == (8, 4) and c.loss.variant == "mean" and c.train.batch_size == 64
    with pytest.raises(KeyError, match="model.no_such_key"):
        apply_overrides(c, ["model.no_such_key=1"])


def test_scaling_sweep_trains_each_cell_once_and_reuses_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDEF_CACHE_DIR", str(tmp_path / "cache"))
    table = scaling.sweep(str(REPO_ROOT / "configs" / "default.py"), [1, 2], ["mean"], [7], tmp_path / "runs", TINY)
    for k in (1, 2):
        res = json.loads((tmp_path / "runs" / f"mean_k{k}_seed7" / "results.json").read_text())
        assert res["num_students"] == k and res["variant"] == "mean" and res["seed"] == 7
        assert table["mean"][k]["ensemble_test_auc"]["values"] == [res["rows"][0]["test_auc"]]
    capsys.readouterr()
    again = scaling.sweep(str(REPO_ROOT / "configs" / "default.py"), [1, 2], ["mean"], [7], tmp_path / "runs", TINY)
    assert capsys.readouterr().out.count("reusing") == 2 and again == table
    found = collapse.collect(tmp_path / "runs")  # the embedding-collapse analysis of the same runs
    assert list(found) == ["mean"] and list(found["mean"]) == [1, 2]
    r = found["mean"][2][0]
    assert r["seed"] == 7 and 1.0 <= r["mean_ia"] <= r["dim"]
    assert r["ensemble_test_auc"] == table["mean"][2]["ensemble_test_auc"]["values"][0]
    spread = findings.collect(tmp_path / "runs")  # Findings 2-3: the test split re-predicted from the checkpoints
    res = json.loads((tmp_path / "runs" / "mean_k2_seed7" / "results.json").read_text())
    cell = spread["mean"][2]
    assert [x["seed"] for x in cell["runs"]] == [7] and cell["runs"][0]["fusion"] == "mean_logit"
    assert cell["runs"][0]["student_auc"] == pytest.approx([row["test_auc"] for row in res["rows"][1:]], abs=1e-9)
    assert cell["mean"]["ensemble_auc"] == pytest.approx(res["rows"][0]["test_auc"], abs=1e-9)
    assert spread["mean"][1]["mean"]["student_auc_std"] == 0 and spread["mean"][1]["mean"]["distance_to_ensemble"] == 0
    pytest.importorskip("matplotlib")
    assert scaling.plot(table, tmp_path / "s.png", "t") and (tmp_path / "s.png").stat().st_size > 1000
    saved = []
    floor = max(table["mean"][k]["ensemble_test_auc"]["mean"] for k in (1, 2)) + 1e-3  # every mean below it
    with monkeypatch.context() as m:
        m.setattr(scaling, "save_figure", lambda fig, path: saved.append(fig))
        assert scaling.plot(table, tmp_path / "f.png", "t", ymin=floor)
    ens_ax = saved[0].axes[0]
    assert ens_ax.get_ylim()[0] == pytest.approx(floor)
    labels = sorted(t.get_text() for t in ens_ax.texts)  # each mean under the floor, drawn on it with its value
    assert labels == sorted(f"{table['mean'][k]['ensemble_test_auc']['mean']:.3f}" for k in (1, 2))
    saved.clear()
    with monkeypatch.context() as m:  # a variant swept to fewer Ks: the axis still ticks every K of the table
        m.setattr(scaling, "save_figure", lambda fig, path: saved.append(fig))
        assert scaling.plot({"mean": table["mean"], "sum": {1: table["mean"][1]}}, tmp_path / "g.png", "t")
    assert [t.get_text() for t in saved[0].axes[0].get_xticklabels()] == ["1", "2"]
    ablation = {v: {2: table["mean"][2]} for v in ("kdef", "mean")}  # one K: variants side by side
    assert scaling.plot(ablation, tmp_path / "a.png", "t") and (tmp_path / "a.png").stat().st_size > 1000
    assert collapse.plot(found, tmp_path / "c.png") and (tmp_path / "c.png").stat().st_size > 1000
    assert findings.plot(spread, tmp_path / "f2.png") and (tmp_path / "f2.png").stat().st_size > 1000
    with pytest.raises(ValueError, match=r"mean K=1 seed 7 is in two of the workdirs"):
        findings.collect(tmp_path / "runs", tmp_path / "runs")
    with pytest.raises(ValueError, match=r"--variants kdef: no finished runs of it under"):
        findings.collect(tmp_path / "runs", variants=["mean", "kdef"])
    res["rows"][0]["test_auc"] += 0.01  # a run whose checkpoint no longer gives its logged numbers is refused
    (tmp_path / "runs" / "mean_k2_seed7" / "results.json").write_text(json.dumps(res))
    with pytest.raises(ValueError, match=r"mean_k2_seed7: re-predicted ensemble test AUC .* in its results\.json"):
        findings.collect(tmp_path / "runs")


def test_findings_metrics_by_hand():
    import math

    def s(x):
        return 1 / (1 + math.exp(-x))

    labels = np.array([1, 0, 1, 0])
    z = np.array([[1.0, -1.0, 0.5, 0.0],    # every positive above every negative: AUC 1
                  [-1.0, 1.0, 0.0, 0.5]])   # every positive below: AUC 0
    m = findings.findings_metrics(labels, z)  # ensemble σ(mean z) = σ([0, 0, .25, .25]): AUC (.5 + 0 + 1 + .5)/4
    d = (2 * (s(1) - s(0)) + (s(0.5) - s(0.25)) + (s(0.25) - s(0))) / 4  # each student's mean |p_k - p|
    assert m["student_auc"] == [1.0, 0.0] and m["ensemble_auc"] == 0.5
    assert (m["student_auc_mean"], m["student_auc_min"], m["student_auc_max"], m["student_auc_std"]) == (0.5, 0.0, 1.0, 0.5)
    assert m["auc_gap"] == 0.0
    assert m["distance_per_student"] == pytest.approx([d, d]) and m["distance_to_ensemble"] == pytest.approx(d)
    head = np.concatenate([z, [[3.0, -3.0, 3.0, -3.0]]])  # concat: the head's row is the ensemble, not a student
    m = findings.findings_metrics(labels, head, "concat")
    assert m["student_auc"] == [1.0, 0.0] and m["ensemble_auc"] == 1.0 and m["auc_gap"] == 0.5
    p = np.array([[s(v) for v in row] for row in z])
    m = findings.findings_metrics(labels, z, "mean_prob")  # ensemble mean_k σ(z_k)
    assert m["distance_to_ensemble"] == pytest.approx(np.abs(p - p.mean(axis=0)).mean())


def test_information_abundance_by_hand():
    ia, s = collapse.information_abundance(np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    assert ia == pytest.approx(4.0 / 3.0) and s.tolist() == pytest.approx([1.0, 1.0 / 3.0])
    assert collapse.information_abundance(np.outer([1.0, 2.0, 3.0], [1.0, -1.0, 2.0]))[0] == pytest.approx(1.0)
    assert collapse.information_abundance(np.eye(4) * 5)[0] == pytest.approx(4.0)  # full rank, flat spectrum


def test_table_abundance_skips_pad_rows_and_small_fields():
    # Two fields of 3 and 2 rows; only fields with >= min_rows rows count.
    field0 = np.array([[9.0, 9.0], [2.0, 0.0], [0.0, 1.0]])  # PAD row 0 is huge here: it must be left out
    table = np.concatenate([field0, np.ones((2, 2))])
    out = collapse.table_abundance(table, (3, 2), min_rows=3)
    assert list(out) == [0] and out[0][0] == pytest.approx(1.5)  # σ of [[2,0],[0,1]] = (2, 1)


def test_scaling_merge_joins_seeds_and_refuses_mismatches(tmp_path):
    def sweep_json(name, seeds, ens, config="configs/x.py"):
        def runs(v):
            return [{"seed": s, "rows": [{"test_auc": e + v, "test_logloss": 0.5},
                                         {"model": "mlp_0", "test_auc": e, "test_logloss": 0.6}],
                     "best_student_index": 0, "epochs_run": 3, "wall_s": 1.0, "train_samples_per_s": 10.0}
                    for s, e in zip(seeds, ens)]

        p = tmp_path / name
        table = {"kdef": {"16": run_seeds.summarize(runs(0.01))}, "mean": {"16": run_seeds.summarize(runs(0.0))}}
        p.write_text(json.dumps({"config": config, "overrides": [], "seeds": seeds, "table": table}))
        return p

    a, b = sweep_json("a.json", [1, 2], [0.70, 0.72]), sweep_json("b.json", [3], [0.80])
    rec = scaling.merge([a, b])
    assert rec["seeds"] == [1, 2, 3] and rec["merged_from"] == [str(a), str(b)]
    kdef = rec["table"]["kdef"]["16"]
    assert kdef["seeds"] == [1, 2, 3] and kdef["epochs"] == [3, 3, 3]
    assert kdef["ensemble_test_auc"]["values"] == pytest.approx([0.71, 0.73, 0.81])
    assert kdef["ensemble_test_auc"]["mean"] == pytest.approx(0.75)  # (0.71 + 0.73 + 0.81) / 3
    assert kdef["best_student_test_auc"]["min"] == 0.70 and kdef["best_student_test_auc"]["max"] == 0.80
    assert kdef["student_test_auc"]["mlp_0"]["values"] == [0.70, 0.72, 0.80]
    old = json.loads(b.read_text())  # a record written before summaries had each student's AUC: merged without it
    del old["table"]["kdef"]["16"]["student_test_auc"], old["table"]["mean"]["16"]["student_test_auc"]
    b.write_text(json.dumps(old))
    assert "student_test_auc" not in scaling.merge([a, b])["table"]["kdef"]["16"]
    with pytest.raises(ValueError, match=r"b\.json: seeds \[3\] are in both"):
        scaling.merge([a, b, b])
    (tmp_path / "e.json").write_text(json.dumps({"config": "configs/x.py", "summary": {}}))  # a run_seeds record
    with pytest.raises(ValueError, match=r"e\.json: not a scaling.py record"):
        scaling.merge([a, tmp_path / "e.json"])
    (tmp_path / "f.json").write_text('{"config": ')
    with pytest.raises(ValueError, match=r"f\.json: not valid JSON"):
        scaling.merge([a, tmp_path / "f.json"])
    with pytest.raises(ValueError, match=r"c\.json: config"):
        scaling.merge([a, sweep_json("c.json", [4], [0.8], config="configs/y.py")])
    d = sweep_json("d.json", [5], [0.8])
    rec_d = json.loads(d.read_text())
    del rec_d["table"]["mean"]
    d.write_text(json.dumps(rec_d))
    with pytest.raises(ValueError, match=r"d\.json: variants and Ks \{'kdef': \['16'\]\} are neither"):
        scaling.merge([a, d])
    # other variants over the same seeds: rows added; then a seed of every variant joins them all
    s = sweep_json("s.json", [1, 2], [0.60, 0.62])
    rec_s = json.loads(s.read_text())
    rec_s["table"] = {"sum": rec_s["table"]["mean"], "concat": rec_s["table"]["kdef"]}
    s.write_text(json.dumps(rec_s))
    rec = scaling.merge([a, s])
    assert list(rec["table"]) == ["kdef", "mean", "sum", "concat"] and rec["seeds"] == [1, 2]
    assert rec["table"]["sum"]["16"]["ensemble_test_auc"]["values"] == pytest.approx([0.60, 0.62])
    assert rec["table"]["kdef"] == json.loads(a.read_text())["table"]["kdef"]
    with pytest.raises(ValueError, match=r"s\.json: variants and Ks .* neither .* seeds \[1, 2, 3\]"):
        scaling.merge([a, b, s])  # other variants must come over the seeds joined so far
    with pytest.raises(ValueError, match=r"b\.json: variants and Ks"):
        scaling.merge([a, s, b])  # a seed added later needs every variant joined so far
    rec_s["seeds"] = [2, 1]  # the same seeds, another order: its per-seed values would be listed under the wrong seed
    s.write_text(json.dumps(rec_s))
    with pytest.raises(ValueError, match=r"s\.json: the seeds \[2, 1\] in another order than \[1, 2\]"):
        scaling.merge([a, s])


def test_scaling_merge_refuses_the_sweep_flags_it_would_ignore(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(sys, "argv", ["scaling", "--merge", str(tmp_path / "a.json"), "--ks", "4", "--seeds", "9",
                                    "--out", str(tmp_path / "m.json")])
  with pytest.raises(SystemExit):
    scaling.main()
  assert "--merge trains nothing and joins records as they are: --ks --seeds would be ignored" in capsys.readouterr().err


def _with_best_student(res: dict, val: dict | None = None) -> dict:
  """Validation AUCs (``val[model]``, else the test AUC) and the student a run picks on them, as results.json has."""
  for r in res["rows"]:
    r["val_auc"] = (val or {}).get(r["model"], r["test_auc"])
  students = res["rows"][1:] or res["rows"]
  res["best_student"] = max(students, key=lambda r: r["val_auc"])["model"]
  return res


def _results(auc_by_model: dict, epochs=5, best=4):
  return _with_best_student({"rows": [{"model": m, "test_auc": a, "test_logloss": 0.3} for m, a in auc_by_model.items()],
                             "epochs_run": epochs, "best_epoch": best, "wall_s": 10.0,
                             "num_students": max(1, len(auc_by_model) - 1)})


def _latest_run(folder, res):
  """A finished run of latest_table's settings: its results and the config.json the table checks."""
  import latest_table

  setting, _, seed = folder.name.rpartition("_seed")
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "results.json").write_text(json.dumps(res))
  (folder / "config.json").write_text(latest_table.expected_config(setting, int(seed)).to_json())


def test_latest_table_names_missing_runs_and_tabulates_the_seeds_given(tmp_path, monkeypatch, capsys):
  import latest_table

  wd = tmp_path / "runs"
  for name, res in {"latest_seed2025": _results({"ensemble": 0.95, "ipnn": 0.94, "final": 0.93, "ecn": 0.92}),
                    "ipnn_alone_seed2025": _results({"ensemble": 0.91}), "final_alone_seed2025": _results({"ensemble": 0.90}),
                    "ecn_alone_seed2025": _results({"ensemble": 0.89})}.items():
    _latest_run(wd / name, res)
  out = tmp_path / "t.json"
  monkeypatch.setattr(sys, "argv", ["latest_table", "--workdir", str(wd), "--out", str(out)])
  with pytest.raises(SystemExit, match=r"8 run\(s\) missing .*latest_seed2024/results.json"):
    latest_table.main()
  assert not out.exists()
  monkeypatch.setattr(sys, "argv", ["latest_table", "--workdir", str(wd), "--out", str(out), "--seeds", "2025"])
  latest_table.main()
  t = json.loads(out.read_text())
  assert t["seeds"] == [2025] and t["mean"]["ensemble"] == 0.95 and t["mean"]["ecn_alone"] == 0.89
  assert t["reference_mean"]["ensemble"] == latest_table.REFERENCE["ensemble"][1]  # seed 2025's reference run
  printed = capsys.readouterr().out
  assert "| 2025 | **0.9500** (0.95456) |" in printed
  assert "wall time per run 10 s (machine not recorded; the reference" in printed  # results.json without device/cpu
  kept = (wd / "latest_seed2025" / "results.json").read_text()
  for bad, message in [(wd / "latest_seed2025" / "results.json", "is inside the run folder"),
                       (tmp_path / "u.md", "give a .json path")]:
    monkeypatch.setattr(sys, "argv", ["latest_table", "--workdir", str(wd), "--out", str(bad), "--seeds", "2025"])
    with pytest.raises(SystemExit):
      latest_table.main()
    assert message in capsys.readouterr().err
  assert (wd / "latest_seed2025" / "results.json").read_text() == kept and not (tmp_path / "u.md").exists()
  monkeypatch.setattr(sys, "argv", ["latest_table", "--workdir", str(wd), "--out", str(out), "--seeds", "2025"])
  (wd / "ecn_alone_seed2025" / "results.json").write_text(json.dumps(_results({"ensemble": 0.9, "mlp_0": 0.8, "mlp_1": 0.8})))
  with pytest.raises(SystemExit):  # a K=2 run where the table expects ECN alone
    latest_table.main()
  assert "ecn_alone_seed2025/results.json: 2 students; a ecn_alone run has one" in capsys.readouterr().err
  (wd / "latest_seed2025" / "results.json").write_text('{"rows": [{"model": "ens')
  with pytest.raises(SystemExit):
    latest_table.main()
  assert "latest_seed2025/results.json: not valid JSON" in capsys.readouterr().err


def test_latest_table_says_when_its_workdir_is_missing(tmp_path, monkeypatch, capsys):
  import latest_table

  monkeypatch.setattr(sys, "argv", ["latest_table", "--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "t.json")])
  with pytest.raises(SystemExit):
    latest_table.main()
  assert f"--workdir {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err


def test_sweep_progress_counts_runs_and_estimates_from_the_trained_ones():
  p = run_seeds.SweepProgress(4)
  assert p.start() == "run 1/4" and p.left() == ""  # nothing trained yet: no estimate
  p.trained_one(90.0)
  assert p.start() == "run 2/4" and p.left() == ", at most about 3 min left"  # 2 more after this one × 90 s
  p.trained_one(30.0)
  assert p.start() == "run 3/4" and p.left() == ", at most about 1 min left"  # 1 more × mean 60 s
  assert p.start() == "run 4/4" and p.left() == ""  # the last run


@pytest.mark.parametrize("error,code,said", [
  (FileNotFoundError("data directory /nonexistent does not exist"), 2,
   "error: FileNotFoundError: data directory /nonexistent does not exist"),
  (KeyboardInterrupt(), 130, "interrupted in"),
])
def test_a_failed_sweep_run_is_one_message_naming_the_run(tmp_path, monkeypatch, capsys, error, code, said):
  def fail(config, wd):
    raise error

  def exit_raises(code):  # exit_interrupted's os._exit, kept inside pytest
    raise SystemExit(code)

  monkeypatch.setattr(run_seeds, "train_and_evaluate", fail)
  monkeypatch.setattr(os, "_exit", exit_raises)
  plan = [(7, tmp_path / "a_seed7", types.SimpleNamespace(resume=False))]
  with pytest.raises(SystemExit) as e:
    run_seeds.run_planned("a", plan)
  assert e.value.code == code
  err = capsys.readouterr().err
  assert "[run 1/1] [a seed 7] " in err and said in err and "Traceback" not in err
  assert "the same command again: finished runs are reused and the interrupted one resumes" in err
  assert code == 130 or "run_seeds.py: error: FileNotFoundError" in err


@pytest.mark.parametrize("module", [run_seeds, scaling])
def test_a_ctrl_c_between_two_sweep_runs_is_one_line_and_status_130(tmp_path, monkeypatch, capsys, module):
  """Outside a run (here: while a finished run's results.json is read back to be reused) a Ctrl-C ended the
  sweep with Python's traceback; the sweeps' entry point makes it the line a Ctrl-C inside a run gives."""
  def ctrl_c(path):
    raise KeyboardInterrupt

  (tmp_path / "a_seed7").mkdir()
  (tmp_path / "a_seed7" / "results.json").write_text("{}")
  monkeypatch.setattr(run_seeds, "read_json", ctrl_c)
  monkeypatch.setattr(os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
  plan = [(7, tmp_path / "a_seed7", types.SimpleNamespace(resume=False))]
  prog = f"{module.__name__}.py"
  with pytest.raises(SystemExit) as e:
    run_seeds.cli(lambda: run_seeds.run_planned("a", plan), prog)
  assert e.value.code == 130
  assert capsys.readouterr().err == (f"\n{prog}: interrupted; run the same command again: finished runs are reused "
                                     f"and the interrupted one resumes\n")
  assert f'cli(main, "{prog}")' in (REPO_ROOT / "experiments" / prog).read_text()  # the command goes through it


def _run_seeds(monkeypatch, *args):
  monkeypatch.setattr(sys, "argv", ["run_seeds", "--config", str(REPO_ROOT / "configs" / "default.py"), *args])
  run_seeds.main()


def test_run_seeds_refuses_another_configs_run_and_resumes_a_cut_short_one(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("KDEF_CACHE_DIR", str(tmp_path / "cache"))
  wd, out = tmp_path / "runs", tmp_path / "s.json"
  _run_seeds(monkeypatch, "--seeds", "7", "--setting", "a", "model.num_students=2", *TINY, "--workdir", str(wd), "--out", str(out))
  first = json.loads(out.read_text())["summary"]["a"]
  with pytest.raises(SystemExit):  # the same setting name with other overrides: the old numbers would pass as new
    _run_seeds(monkeypatch, "--seeds", "7", "--setting", "a", "model.num_students=3", *TINY, "--workdir", str(wd),
               "--out", str(out))
  err = capsys.readouterr().err
  assert f"{wd / 'a_seed7'} holds a run of another config (model.num_students 2 (there) vs 3 (this setting))" in err
  (wd / "a_seed7" / "results.json").unlink()  # cut short after its last epoch was saved
  _run_seeds(monkeypatch, "--seeds", "7", "--setting", "a", "model.num_students=2", *TINY, "--workdir", str(wd), "--out", str(out))
  said = capsys.readouterr().out
  assert f"[a seed 7] resuming in {wd / 'a_seed7'}" in said and "resumed from epoch 1" in said
  assert json.loads(out.read_text())["summary"]["a"]["ensemble_test_auc"] == first["ensemble_test_auc"]


def test_a_run_older_than_a_key_counts_as_that_keys_default(tmp_path):
  """A finished run whose config.json predates loss.consistency ran the default (mse): reused for mse,
  refused for l1 (its numbers would pass as l1's)."""
  config = str(REPO_ROOT / "configs" / "default.py")
  (old,) = run_seeds.plan_setting(config, "kdef_k3", ["model.num_students=3"], [7], tmp_path)
  written = json.loads(old[2].to_json())
  del written["loss"]["consistency"]
  old[1].mkdir()
  (old[1] / "config.json").write_text(json.dumps(written))
  (old[1] / "results.json").write_text("{}")
  assert run_seeds.plan_setting(config, "kdef_k3", ["model.num_students=3", "loss.consistency=mse"], [7], tmp_path)
  with pytest.raises(ValueError, match=r"holds a run of another config \(loss.consistency 'mse' \(there\) vs 'l1'"):
    run_seeds.plan_setting(config, "kdef_k3", ["model.num_students=3", "loss.consistency=l1"], [7], tmp_path)


def test_an_analysis_refuses_a_run_folder_whose_name_is_not_its_config(tmp_path):
  config = str(REPO_ROOT / "configs" / "default.py")
  for name, overrides in [("kdef_k3", ["model.num_students=3"]), ("mean_k4", ["model.num_students=2", "loss.variant=mean"]),
                          ("kdef_k2", ["model.students=mlp:1,ecn:1"])]:
    (run,) = run_seeds.plan_setting(config, name, overrides, [7], tmp_path)
    run[1].mkdir()
    (run[1] / "config.json").write_text(run[2].to_json())
    (run[1] / "results.json").write_text("{}")
  with pytest.raises(ValueError, match=r"mean_k4_seed7: the name says mean K=4 seed 7, its config.json students 2;"):
    run_seeds.finished_runs(tmp_path)
  assert set(run_seeds.finished_runs(tmp_path, variants=["kdef"])["kdef"]) == {2, 3}  # ecn:1,mlp:1 is K=2


@pytest.mark.parametrize("args,message", [
    (["--seeds", "7", "7", "--setting", "a"], "--seeds: 7 given more than once"),
    (["--seeds", "7", "--setting", "a", "--setting", "a", "model.num_students=2"], "--setting names: a given more than once"),
    (["--seeds", "7", "--setting", "a", "--out", "OUT.md"], "give a .json path"),
    (["--seeds", "7", "--setting", "a", "--out", str(REPO_ROOT / "configs" / "default.py")], "give a .json path"),  # was overwritten
    (["--seeds", "7", "--setting", "a", "--out", "RUNS/a_seed7/results.json"], "is inside the run folder"),
    (["--seeds", "7", "--setting", "a", "--setting", "b", "model.nope=1"], "setting 'b': unknown config key 'model.nope'"),
    (["--seeds", "7", "--setting", "a", "seed=3"], "setting 'a': seed=3: the seeds come from --seeds"),
    (["--seeds", "7", "--setting", "train.num_epochs=1"],  # the NAME left out: was a setting of that name, unchanged
     "--setting train.num_epochs=1: a setting starts with its NAME, then its KEY=VALUE overrides"),
    (["--seeds", "7", "--setting", "a/b"], "--setting 'a/b': a setting's name names its run folders"),
    (["--seeds", "7", "--setting", "a", "--workdir", "FILE"], "--workdir FILE: a file, not a folder"),
    (["--seeds", "7", "--setting", "a", "--out", "FILE/s.json"], "FILE is a file, not a folder"),
    (["--seeds", "7", "--setting", "a", "--out", "DIRMD.json"], "DIRMD.md, written beside it, is a directory"),
])
def test_run_seeds_argument_errors_come_before_any_training(tmp_path, monkeypatch, capsys, args, message):
  runs = tmp_path / "runs"
  (tmp_path / "FILE").write_text("")
  (tmp_path / "DIRMD.md").mkdir()
  args = [a.replace("OUT", str(tmp_path / "s")).replace("RUNS", str(runs)).replace("FILE", str(tmp_path / "FILE"))
          .replace("DIRMD", str(tmp_path / "DIRMD")) for a in args]
  if "--out" not in args:
    args += ["--out", str(tmp_path / "s.json")]
  if "--workdir" not in args:
    args += ["--workdir", str(runs)]
  with pytest.raises(SystemExit):
    _run_seeds(monkeypatch, *args)
  assert message.replace("FILE", str(tmp_path / "FILE")) in capsys.readouterr().err
  assert not runs.exists()


@pytest.mark.parametrize("args,message", [
    (["--set", "model.num_students=3"], "--set model.num_students=3: scaling.py sweeps"),
    (["--ks", "1", "1"], "--ks: 1 given more than once"),
    (["--set", "seed=5"], "seed=5: the seeds come from --seeds"),
    (["--variants", "mean", "bogus"], "config loss.variant"),
    (["--out", str(REPO_ROOT / "configs" / "default.py")], "give a .json path"),  # the config was overwritten
])
def test_scaling_refuses_what_would_mislabel_its_table(tmp_path, monkeypatch, capsys, args, message):
  monkeypatch.setattr(sys, "argv", ["scaling", "--config", str(REPO_ROOT / "configs" / "default.py"), "--seeds", "7",
                                    "--workdir", str(tmp_path / "runs"), "--out", str(tmp_path / "s.json"), *args])
  with pytest.raises(SystemExit):
    scaling.main()
  assert message in capsys.readouterr().err
  assert not (tmp_path / "runs").exists()


def test_scaling_sweeps_k_students_of_the_kind_model_student_names(tmp_path):
  plans = scaling.plan_sweep(str(REPO_ROOT / "configs" / "default.py"), [1, 4], ["kdef"], [7], tmp_path / "runs",
                             ["model.student=final"])
  configs = {k: plan[0][2].model for (_, k), plan in plans.items()}
  assert {k: (m.student, m.num_students) for k, m in configs.items()} == {1: ("final", 1), 4: ("final", 4)}
  with pytest.raises(ValueError, match=r"sets model.students='ipnn:1,final:1,ecn:1', which fixes the students"):
    scaling.plan_sweep(str(REPO_ROOT / "configs" / "kdef_latest_frappe.py"), [2], ["kdef"], [7], tmp_path / "runs")


def test_scaling_merge_never_writes_over_an_input(tmp_path, monkeypatch, capsys):
  a = tmp_path / "a.json"
  a.write_text("{}")
  monkeypatch.setattr(sys, "argv", ["scaling", "--merge", str(a), str(tmp_path / "b.json"), "--out", str(a)])
  with pytest.raises(SystemExit):
    scaling.main()
  assert f"would overwrite the input {a}" in capsys.readouterr().err and a.read_text() == "{}"


def test_overrides_are_parsed_as_their_fields_type():
  from kdef_jax.config import base_config

  c = base_config()
  apply_overrides(c, ["data.name=123", "optim.learning_rate=1", "train.progress=True", "model.hidden_units=(8,)"])
  assert c.data.name == "123" and c.optim.learning_rate == 1.0 and isinstance(c.optim.learning_rate, float)
  assert c.train.progress is True and c.model.hidden_units == (8,)
  apply_overrides(c, ["train.progress=false", "data.verify_cache=FALSE", "train.plot=true"])  # any case, as absl reads them
  assert c.train.progress is False and c.data.verify_cache is False and c.train.plot is True
  for item, message in [("train.progress=yes", "train.progress='yes': expected True or False"),
                        ("model.hidden_units=8", "model.hidden_units='8': expected a tuple"),
                        ("train.batch_size=1e3", "train.batch_size='1e3': expected an integer"),
                        ("optim.learning_rate=fast", "optim.learning_rate='fast': expected a number"),
                        ("model.num_students", "'model.num_students': an override is KEY=VALUE"),
                        ("model=3", "'model=3': model is a group of settings; override one of them")]:
    with pytest.raises(ValueError, match=re.escape(message)):
      apply_overrides(c, [item])
  with pytest.raises(KeyError, match="unknown config key 'nope.x'"):
    apply_overrides(c, ["nope.x=1"])


def test_write_outputs_leaves_no_earlier_plot_beside_new_numbers(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.with_suffix(".png").write_bytes(b"an earlier run's plot")
    run_seeds.write_outputs(out, {"a": 1}, "| t |", lambda png: False)  # as without matplotlib
    assert json.loads(out.read_text()) == {"a": 1} and out.with_suffix(".md").read_text() == "| t |\n"
    assert not out.with_suffix(".png").exists() and "matplotlib is not installed" in capsys.readouterr().out
    drawn = []
    run_seeds.write_outputs(out, {"a": 2}, "| t |", lambda png: drawn.append(png) or True)
    assert drawn == [out.with_suffix(".png")]


@pytest.mark.parametrize("script", [findings, collapse])
def test_sweep_analyses_refuse_an_out_inside_a_run_folder(tmp_path, monkeypatch, capsys, script):
    run = tmp_path / "runs" / "mean_k2_seed7"
    run.mkdir(parents=True)
    (run / "results.json").write_text('{"rows": []}')
    monkeypatch.setattr(sys, "argv", ["x", "--workdir", str(tmp_path / "runs"), "--out", str(run / "results.json")])
    with pytest.raises(SystemExit):
        script.main()
    assert "is inside the run folder" in capsys.readouterr().err
    assert (run / "results.json").read_text() == '{"rows": []}' and not (run / "results.md").exists()


@pytest.mark.parametrize("script", [findings, collapse])
@pytest.mark.parametrize("args,message", [
    (["--variants", "kdef", "kdef"], "--variants: kdef given more than once"),
    (["--out", "OUT.md"], "give a .json path"),
    (["--variants", "kdef"], "--variants kdef: no finished runs of it under"),
])
def test_sweep_analyses_refuse_bad_arguments_before_any_work(tmp_path, monkeypatch, capsys, script, args, message):
    (tmp_path / "runs").mkdir()
    args = [a.replace("OUT", str(tmp_path / "r")) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "r.json")]
    monkeypatch.setattr(sys, "argv", ["x", "--workdir", str(tmp_path / "runs"), *args, *out])
    with pytest.raises(SystemExit):
        script.main()
    assert message in capsys.readouterr().err and not (tmp_path / "r.json").exists()
    monkeypatch.setattr(sys, "argv", ["x", "--workdir", str(tmp_path / "runs"), "--out", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit, match="no finished <variant>_k<K>_seed<s> runs under"):
        script.main()
    monkeypatch.setattr(sys, "argv", ["x", "--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit):
        script.main()
    assert f"--workdir {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err


def test_dataset_summary_names_a_missing_dataset_before_any_config_trains(tmp_path, monkeypatch, capsys):
  import dataset_summary

  monkeypatch.setenv("KDEF_DATA_DIR", str(tmp_path / "data"))
  monkeypatch.setattr(dataset_summary, "train_and_evaluate", lambda *a, **k: pytest.fail("trained before the check"))
  monkeypatch.setattr(sys, "argv", ["x", "--configs", "configs/default.py", "configs/avazu.py", "--out", str(tmp_path / "d.json")])
  with pytest.raises(SystemExit):
    dataset_summary.main()
  assert f"configs/avazu.py: data directory {tmp_path / 'data' / 'avazu'} does not exist" in capsys.readouterr().err
  monkeypatch.setattr(sys, "argv", ["x", "--configs", "configs/default.py", "configs/default.py", "--out", str(tmp_path / "d.json")])
  with pytest.raises(SystemExit):
    dataset_summary.main()
  assert "--configs: configs/default.py given more than once" in capsys.readouterr().err


def test_dataset_summary_compiles_the_kernels_before_timing_the_first_preprocessing(tmp_path, monkeypatch):
  import dataset_summary

  events = []
  monkeypatch.setattr(dataset_summary.columnar, "available", lambda parser: True)
  monkeypatch.setattr(dataset_summary.columnar, "warm_up", lambda parser: events.append(f"warm {parser}"))
  real_load = dataset_summary.load_dataset
  monkeypatch.setattr(dataset_summary, "load_dataset", lambda *a, **k: events.append("load") or real_load(*a, **k))
  monkeypatch.setattr(dataset_summary, "train_and_evaluate", lambda *a, **k: {"rows": [{"test_auc": 0.5}]})
  monkeypatch.setattr(sys, "argv", ["x", "--configs", "configs/default.py", "--out", str(tmp_path / "d.json")])
  dataset_summary.main()
  assert events == ["warm native", "warm columnar", "load"]
  (row,) = json.loads((tmp_path / "d.json").read_text())
  assert row["kernel_warm_up_s"] >= 0 and row["preprocess_s"] >= 0 and row["one_epoch_test_auc"] == 0.5


@pytest.mark.parametrize("ks", [[4], [2, 4]], ids=["ablation", "k_sweep"])
def test_scaling_plot_draws_no_best_student_of_a_variant_whose_students_are_untrained(tmp_path, monkeypatch, ks):
  pytest.importorskip("matplotlib")
  st = lambda m: {"mean": m, "min": m - 0.01, "max": m + 0.01, "values": [m - 0.01, m + 0.01]}  # noqa: E731
  table = {v: {k: {"ensemble_test_auc": st(0.9), "best_student_test_auc": st(0.5 if v == "concat" else 0.8)} for k in ks}
           for v in ("kdef", "concat")}
  figs = []
  monkeypatch.setattr(scaling, "save_figure", lambda fig, path: figs.append(fig))
  assert scaling.plot(table, tmp_path / "p.png", "t")
  ensemble, best = figs[0].axes
  values = lambda ax: {y for line in ax.get_lines() for y in line.get_ydata()}  # noqa: E731
  assert 0.9 in values(ensemble) and 0.8 in values(best) and not {0.5, 0.49, 0.51} & values(best)


def test_scaling_sorts_the_ks_however_they_were_typed(tmp_path, monkeypatch):
  swept, plot = [], scaling.plot

  def sweep(config, ks, variants, seeds, workdir, extra=(), plans=None):  # no training: a table in the order asked
    swept.append(list(ks))
    return {v: {k: _summary((0.7 + k / 100, 0.7), (0.6, 0.6)) for k in ks} for v in variants}

  monkeypatch.setattr(scaling, "sweep", sweep)
  monkeypatch.setattr(scaling, "plot", lambda *a, **k: False)
  out = tmp_path / "s.json"
  monkeypatch.setattr(sys, "argv", ["scaling", "--config", str(REPO_ROOT / "configs" / "default.py"), "--ks", "4", "1",
                                    "2", "--variants", "mean", "--seeds", "1", "2", "--workdir", str(tmp_path / "runs"),
                                    "--out", str(out)])
  scaling.main()
  assert swept == [[1, 2, 4]] and list(json.loads(out.read_text())["table"]["mean"]) == ["1", "2", "4"]
  assert [r.split(" | ")[1] for r in out.with_suffix(".md").read_text().splitlines()[2:5]] == ["1", "2", "4"]
  typed = json.loads(out.read_text())  # a record written before the Ks were sorted, merged with a sorted one
  typed["table"] = {v: {k: cells[k] for k in ("4", "1", "2")} for v, cells in typed["table"].items()}
  later = {**json.loads(out.read_text()), "seeds": [3]}
  later["table"] = {v: {k: c | {"seeds": [3]} for k, c in cells.items()} for v, cells in later["table"].items()}
  (tmp_path / "a.json").write_text(json.dumps(typed))
  (tmp_path / "b.json").write_text(json.dumps(later))
  monkeypatch.setattr(sys, "argv", ["scaling", "--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                                    "--out", str(tmp_path / "m.json")])
  scaling.main()
  assert [r.split(" | ")[1] for r in (tmp_path / "m.md").read_text().splitlines()[2:5]] == ["1", "2", "4"]
  pytest.importorskip("matplotlib")
  figs = []
  monkeypatch.setattr(scaling, "save_figure", lambda fig, path: figs.append(fig))
  assert plot({"mean": {k: _summary((0.7 + k / 100, 0.7), (0.6, 0.6)) for k in (4, 1, 2)}}, tmp_path / "p.png", "t")
  (line,) = [ln for ln in figs[0].axes[0].get_lines() if len(ln.get_xdata()) == 3]
  assert list(line.get_xdata()) == [1, 2, 4]  # joined in K's order, not the table's
  band = figs[0].axes[0].collections[0].get_paths()[0].vertices[:, 0]
  assert list(band[1:4]) == [1, 2, 4]  # the min-max band's lower edge, left to right


def test_scaling_ablation_plot_keeps_to_its_ymin(tmp_path, monkeypatch):
  pytest.importorskip("matplotlib")
  st = lambda m: {"mean": m, "min": m - 0.01, "max": m + 0.01, "values": [m - 0.01, m + 0.01]}  # noqa: E731
  table = {v: {16: {"ensemble_test_auc": st(m), "best_student_test_auc": st(m - 0.05)}} for v, m in (("kdef", 0.97), ("mean", 0.6))}
  figs = []
  monkeypatch.setattr(scaling, "save_figure", lambda fig, path: figs.append(fig))
  assert scaling.plot(table, tmp_path / "p.png", "t", ymin=0.9)
  for ax, collapsed in zip(figs[0].axes, ("0.600", "0.550")):
    assert ax.get_ylim()[0] == pytest.approx(0.9)
    assert [t.get_text() for t in ax.texts] == [collapsed]  # the mean under the floor, drawn on it with its value


def test_experiments_name_a_missing_config_or_merge_file_without_a_traceback(tmp_path, monkeypatch, capsys):
  import dataset_summary

  for script, argv, message in [
      (scaling, ["--merge", str(tmp_path / "nope.json"), "--out", str(tmp_path / "m.json")], f"--merge: no such file {tmp_path / 'nope.json'}"),
      (run_seeds, ["--config", "configs/nope.py", "--seeds", "1", "--setting", "a", "--workdir", str(tmp_path / "w"),
                   "--out", str(tmp_path / "x.json")], "--config configs/nope.py: config file 'configs/nope.py' not found"),
      (dataset_summary, ["--configs", "configs/frappe.py:nope", "--out", str(tmp_path / "x.json")], "unknown argument 'nope'"),
      (run_seeds, ["--config", str(REPO_ROOT / "configs" / "kdef_latest_frappe.py"), "--seeds", "1", "--setting", "k6",
                   "model.num_students=6", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "x.json")],
       "setting 'k6': config model.num_students=6 is not read")]:
    monkeypatch.setattr(sys, "argv", ["x", *argv])
    with pytest.raises(SystemExit):
      script.main()
    assert message in capsys.readouterr().err


def test_scaling_table_says_n_a_for_runs_without_a_timed_step():
  st = {"mean": 0.9, "min": 0.9, "max": 0.9, "values": [0.9]}
  row = {"ensemble_test_auc": st, "best_student_test_auc": st, "epochs": [1], "train_samples_per_s": [None]}
  assert scaling.markdown({"kdef": {2: row}}).endswith("| 1 | n/a |")
  row["train_samples_per_s"] = [float("nan"), 100.0, 300.0]
  assert scaling.markdown({"kdef": {2: row}}).endswith("| 1 | 200 |")


def test_a_summary_with_a_run_of_no_timed_step_is_strict_json(tmp_path):
  out = tmp_path / "s.json"
  run_seeds.write_outputs(out, {"a": {"train_samples_per_s": [float("nan"), 10.0]}}, "| t |")
  assert json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}")) == {
      "a": {"train_samples_per_s": [None, 10.0]}}


# The analyses' numbers by hand: cases mutation testing of experiments/ found unpinned (2026-12-06).


def test_findings_collect_means_every_seed_and_tabulates_them(tmp_path, monkeypatch):
  runs = {"kdef": {2: [(1, tmp_path / "kdef_k2_seed1"), (2, tmp_path / "kdef_k2_seed2")]}}
  monkeypatch.setattr(findings, "finished_runs", lambda *w, variants=None: runs)
  x_of = {"kdef_k2_seed1": 0.6, "kdef_k2_seed2": 0.8}

  def analyse(path):
    x = x_of[path.name]
    return {"student_auc_mean": x, "student_auc_min": x - 0.1, "student_auc_max": x + 0.1, "student_auc_std": x / 10,
            "ensemble_auc": x + 0.05, "auc_gap": 0.05, "distance_to_ensemble": x / 100}

  monkeypatch.setattr(findings, "analyse_run", analyse)
  found = findings.collect(tmp_path)
  cell = found["kdef"][2]
  assert [r["seed"] for r in cell["runs"]] == [1, 2]
  assert cell["mean"] == pytest.approx({"student_auc_mean": 0.7, "student_auc_min": 0.6, "student_auc_max": 0.8,
                                        "student_auc_std": 0.07, "ensemble_auc": 0.75, "auc_gap": 0.05,
                                        "distance_to_ensemble": 0.007})
  md = findings.markdown(found).splitlines()
  assert md[2] == "| kdef | 2 | 2 | 0.7000 (0.6000-0.8000) | 0.0700 | 0.7500 | +0.0500 | 0.0070 |"


def test_information_abundance_of_an_all_zero_table_is_zero():
  ia, s = collapse.information_abundance(np.zeros((4, 2)))
  assert ia == 0.0 and s.tolist() == [0.0, 0.0]


def _collapse_run(monkeypatch, auc_of_run):
  """A fake kdef_jax.export.load_run: fields a, b, c of 5, 3, 6 rows (PAD row first), embedding dim 2."""
  import kdef_jax.export

  a = [[50.0, 50.0], [2.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]  # σ without PAD (2, 1): IA 1.5
  b = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]                            # 3 rows < 2·dim: left out
  c = [[70.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]  # σ (1, 1): IA 2
  table = np.array(a + b + c)
  fmap = types.SimpleNamespace(vocab_sizes=(5, 3, 6), fields=[types.SimpleNamespace(name=n) for n in "abc"])
  monkeypatch.setattr(kdef_jax.export, "load_run", lambda wd: (
      None, {"params": {"embedding": {"table": table}}}, fmap,
      {"rows": [{"test_auc": auc_of_run[wd.name]}, {"model": "mlp_0", "test_auc": 0.5}]}))


def test_collapse_run_keeps_fields_of_two_dim_rows_and_means_their_abundance(tmp_path, monkeypatch):
  _collapse_run(monkeypatch, {"kdef_k2_seed1": 0.8, "kdef_k2_seed2": 0.9})
  r = collapse.analyse_run(tmp_path / "kdef_k2_seed1")
  assert list(r["fields"]) == ["a", "c"] and r["dim"] == 2 and r["ensemble_test_auc"] == 0.8
  assert r["fields"]["a"]["ia"] == pytest.approx(1.5) and r["fields"]["a"]["rows"] == 4
  assert r["fields"]["c"]["ia"] == pytest.approx(2.0) and r["fields"]["c"]["rows"] == 5
  assert r["fields"]["a"]["spectrum"] == pytest.approx([1.0, 0.5])
  assert r["mean_ia"] == pytest.approx(1.75)
  monkeypatch.setattr(collapse, "finished_runs", lambda *w, variants=None: {
      "kdef": {2: [(1, tmp_path / "kdef_k2_seed1"), (2, tmp_path / "kdef_k2_seed2")]}})
  found = collapse.collect(tmp_path)
  assert [r["seed"] for r in found["kdef"][2]] == [1, 2]
  assert collapse.markdown(found).splitlines()[2] == "| kdef | 2 | 1.750 (1.750 / 1.750) | 0.8500 |"  # nothing to compare


def test_collapse_table_means_the_seeds_ia():
  found = {"mean": {4: [{"mean_ia": 2.0, "ensemble_test_auc": 0.7}, {"mean_ia": 3.0, "ensemble_test_auc": 0.8}]}}
  assert collapse.markdown(found).splitlines()[2] == "| mean | 4 | 2.500 (2.000 / 3.000) | 0.7500 |"
  found = {"kdef": {2: [{"mean_ia": 2.0, "ensemble_test_auc": None}]}}  # a run without a test split
  assert collapse.markdown(found).splitlines()[2] == "| kdef | 2 | 2.000 (2.000) | n/a |"
  found = {"mean": {2: [{"mean_ia": 1.0, "ensemble_test_auc": 0.7}], 4: [{"mean_ia": 1.5, "ensemble_test_auc": 0.7}]},
           "kdef": {2: [{"mean_ia": 2.0, "ensemble_test_auc": 0.8}], 4: [{"mean_ia": 1.2, "ensemble_test_auc": 0.8}]}}
  md = collapse.markdown(found).splitlines()  # bold: the least collapsed variant at each K
  assert [line.split(" | ")[2] for line in md[2:6]] == ["1.000 (1.000)", "**1.500** (1.500)", "**2.000** (2.000)",
                                                         "1.200 (1.200)"]
  assert md[-1] == "**bold**: the highest mean IA (the least collapsed embedding tables) of the variants at each K."


def test_run_seeds_summary_and_its_table_by_hand():
  runs = [{"seed": s, "rows": [{"model": "ensemble", "test_auc": e, "test_logloss": le},
                               {"model": "mlp_0", "test_auc": 0.5, "test_logloss": 0.9},
                               {"model": "mlp_1", "test_auc": b, "test_logloss": lb}],
           "best_student_index": 1, "epochs_run": n, "wall_s": w, "train_samples_per_s": 1.0}
          for s, e, le, b, lb, n, w in [(1, 0.8, 0.4, 0.7, 0.5, 3, 10.0), (2, 0.9, 0.3, 0.6, 0.6, 4, 20.0)]]
  s = run_seeds.summarize(runs)
  assert s["seeds"] == [1, 2] and s["best_student"] == ["mlp_1", "mlp_1"]
  assert s["ensemble_test_logloss"] == {"mean": pytest.approx(0.35), "min": 0.3, "max": 0.4, "values": [0.4, 0.3]}
  assert s["best_student_test_logloss"]["values"] == [0.5, 0.6]
  assert s["student_test_auc"] == {"mlp_0": {"mean": 0.5, "min": 0.5, "max": 0.5, "values": [0.5, 0.5]},
                                   "mlp_1": {"mean": pytest.approx(0.65), "min": 0.6, "max": 0.7, "values": [0.7, 0.6]}}
  md = run_seeds.markdown({"kdef_k2": s}).splitlines()
  assert md[2] == "| kdef_k2 | 2 | 0.8500 (0.8000 / 0.9000) | 0.3500 | 0.6500 | 0.5500 | 3, 4 | 15 | mlp_0 0.5000, mlp_1 0.6500 |"
  md = run_seeds.markdown({"a": s, "b": s | {"ensemble_test_auc": {**s["ensemble_test_auc"], "mean": 0.84}}}).splitlines()
  assert md[2].startswith("| a | 2 | **0.8500** ") and md[3].startswith("| b | 2 | 0.8400 ")
  assert md[-1] == "**bold**: the highest mean ensemble test AUC of the settings."
  older = {k: v for k, v in s.items() if k != "student_test_auc"}  # a summary written before the key existed
  assert run_seeds.markdown({"old": older}).splitlines()[2].endswith("| 3, 4 | 15 | - |")


def test_finished_runs_orders_ks_and_seeds_numerically_and_variants_as_asked(tmp_path):
  for name in ["mean_k16_seed7", "mean_k2_seed7", "mean_k2_seed1000", "mean_k2_seed999", "kdef_k2_seed7"]:
    (tmp_path / name).mkdir()
    (tmp_path / name / "results.json").write_text("{}")
  (tmp_path / "mean_k4_seed7").mkdir()  # cut short: no results.json, not a finished run
  found = run_seeds.finished_runs(tmp_path)
  assert list(found["mean"]) == [2, 16]
  assert found["mean"][2] == [(7, tmp_path / "mean_k2_seed7"), (999, tmp_path / "mean_k2_seed999"),
                              (1000, tmp_path / "mean_k2_seed1000")]
  assert list(run_seeds.finished_runs(tmp_path, variants=["mean", "kdef"])) == ["mean", "kdef"]


def test_finished_runs_warns_of_each_unfinished_run_it_leaves_out(tmp_path, monkeypatch, capsys):
  for name in ["mean_k2_seed1", "mean_k2_seed2", "mean_k2_seed3", "kdef_k4_seed1", "other/mean_k2_seed3"]:
    (tmp_path / name).mkdir(parents=True)
  for name in ["mean_k2_seed1", "other/mean_k2_seed3"]:
    (tmp_path / name / "results.json").write_text("{}")
  found = run_seeds.finished_runs(tmp_path)
  assert found == {"mean": {2: [(1, tmp_path / "mean_k2_seed1")]}}  # the cell as before, over the finished run only
  err = capsys.readouterr().err.splitlines()
  assert err == [f"[runs] warning: unfinished run(s) left out (no results.json): {tmp_path / 'kdef_k4_seed1'}; so kdef K=4 "
                 "has no finished run and is left out of the table",
                 f"[runs] warning: unfinished run(s) left out (no results.json): {tmp_path / 'mean_k2_seed2'}, "
                 f"{tmp_path / 'mean_k2_seed3'}; so mean K=2 averages over 1 seed(s), not 3"]
  run_seeds.finished_runs(tmp_path, tmp_path / "other")  # seed 3 finished in the other sweep: only seed 2 is missing
  assert capsys.readouterr().err.count("mean_k2_seed2; so mean K=2 averages over 2 seed(s), not 3") == 1
  run_seeds.finished_runs(tmp_path, variants=["mean"], warn=False)
  assert capsys.readouterr().err == ""
  monkeypatch.setattr(findings, "analyse_run", lambda d: {s: 0.5 for s in findings.SCALARS})
  monkeypatch.setattr(findings, "plot", lambda found, png: False)
  monkeypatch.setattr(sys, "argv", ["findings", "--workdir", str(tmp_path), "--variants", "mean",
                                    "--out", str(tmp_path / "f.json")])
  findings.main()  # an analysis says it once, of the variants asked only
  err = capsys.readouterr().err
  assert err.count("[runs] warning:") == 1 and "mean K=2 averages over 1 seed(s), not 3" in err


def test_an_analysis_refuses_a_run_folder_of_another_seed_or_variant(tmp_path):
  (run,) = run_seeds.plan_setting(str(REPO_ROOT / "configs" / "default.py"), "x", ["model.num_students=3"], [7], tmp_path)
  for name, says in [("kdef_k3_seed8", "seed 7"), ("mean_k3_seed7", "loss.variant 'kdef'")]:
    wd = tmp_path / name / name
    wd.mkdir(parents=True)
    (wd / "config.json").write_text(run[2].to_json())
    (wd / "results.json").write_text("{}")
    with pytest.raises(ValueError, match=f"{name}: the name says .* its config.json {says}; rename"):
      run_seeds.finished_runs(tmp_path / name)


def test_scaling_merge_refuses_other_overrides(tmp_path):
  def record(name, seed, overrides):
    runs = [{"seed": seed, "rows": [{"test_auc": 0.8, "test_logloss": 0.5}, {"model": "mlp_0", "test_auc": 0.7, "test_logloss": 0.6}],
             "best_student_index": 0, "epochs_run": 3, "wall_s": 1.0, "train_samples_per_s": 10.0}]
    p = tmp_path / name
    p.write_text(json.dumps({"config": "configs/x.py", "overrides": overrides, "seeds": [seed],
                             "table": {"kdef": {"2": run_seeds.summarize(runs)}}}))
    return p

  a, b = record("a.json", 1, ["model.student=final"]), record("b.json", 2, [])
  with pytest.raises(ValueError, match=r"b\.json: overrides \[\] is not"):
    scaling.merge([a, b])


def _latest_results(aucs: dict, epochs: int, num_students: int, val: dict | None = None):
  return _with_best_student(
      {"rows": [{"model": m, "test_auc": a, "test_logloss": 0.1 * (i + 1)} for i, (m, a) in enumerate(aucs.items())],
       "epochs_run": epochs, "best_epoch": epochs - 1, "wall_s": 10.0 * epochs, "num_students": num_students}, val)


def test_latest_table_means_the_seeds_and_reads_each_students_own_row(tmp_path):
  import latest_table

  def write(name, res):
    _latest_run(tmp_path / name, res)

  for seed, base, epochs in [(2024, 0.95, 5), (2026, 0.93, 7)]:
    write(f"latest_seed{seed}", _latest_results({"ensemble": base, "ipnn": base - 0.01, "final": base - 0.02,
                                                 "ecn": base - 0.03}, epochs, 3))
    for j, s in enumerate(latest_table.STUDENTS):
      write(f"{s}_alone_seed{seed}", _latest_results({"ensemble": base - 0.04 - 0.01 * j}, epochs + 1 + j, 1))
  t = latest_table.collect(tmp_path, (2024, 2026))
  r = t["per_seed"][1]
  assert (r["seed"], r["ensemble"], r["ensemble_test_logloss"], r["epochs"]) == (2026, 0.93, 0.1, 7)
  assert (r["ipnn"], r["final"], r["ecn"]) == pytest.approx((0.92, 0.91, 0.90))
  assert (r["ipnn_alone"], r["ecn_alone"], r["ipnn_alone_epochs"], r["ecn_alone_epochs"]) == pytest.approx((0.89, 0.87, 8, 10))
  assert r["reference"]["ensemble"] == latest_table.REFERENCE["ensemble"][2]
  assert t["mean"] == pytest.approx({"ensemble": 0.94, "ipnn": 0.93, "final": 0.92, "ecn": 0.91,
                                     "ipnn_alone": 0.90, "final_alone": 0.89, "ecn_alone": 0.88,
                                     "best_inside": 0.93, "best_alone": 0.90})
  ref = (latest_table.REFERENCE["ensemble"][0] + latest_table.REFERENCE["ensemble"][2]) / 2
  assert t["reference_mean"]["ensemble"] == pytest.approx(ref)
  assert t["target"]["ensemble_mean_at_least"] == pytest.approx(ref - 0.001, abs=6e-5)
  md = latest_table.markdown(t)
  assert ("ensemble − best student trained alone: +0.0400; ensemble − best student inside it: +0.0100 (each seed's "
          "best chosen on validation AUC, inside / alone: 2024: ipnn / ipnn, 2026: ipnn / ipnn)") in md
  twice = _latest_results({"ensemble": 0.95, "ipnn": 0.94, "final": 0.93, "ecn": 0.92}, 5, 3)
  twice["rows"].insert(2, dict(twice["rows"][1], test_auc=0.5))  # two 'ipnn' rows: which one is it?
  write("latest_seed2024", twice)
  with pytest.raises(ValueError, match=r"latest_seed2024/results.json: no 'ipnn' row with a test AUC"):
    latest_table.collect(tmp_path, (2024,))


def test_latest_table_refuses_a_run_of_other_settings_than_the_reference(tmp_path, monkeypatch, capsys):
  import latest_table

  for setting in latest_table.SETTINGS:
    _latest_run(tmp_path / f"{setting}_seed2024", _latest_results(
        {"ensemble": 0.95, "ipnn": 0.94, "final": 0.93, "ecn": 0.92} if setting == "latest" else {"ensemble": 0.9}, 5,
        3 if setting == "latest" else 1))
  c = json.loads((tmp_path / "final_alone_seed2024" / "config.json").read_text())
  c["data"]["data_dir"], c["data"]["engine"], c["train"]["progress"] = "/elsewhere", "python", True  # may differ
  (tmp_path / "final_alone_seed2024" / "config.json").write_text(json.dumps(c))
  assert latest_table.collect(tmp_path, (2024,))["per_seed"][0]["final_alone"] == 0.9
  c["train"]["batch_size"], c["optim"]["embedding_l2"] = 2048, 0.0  # would change the numbers
  (tmp_path / "final_alone_seed2024" / "config.json").write_text(json.dumps(c))
  out = tmp_path / "t.json"
  monkeypatch.setattr(sys, "argv", ["latest_table", "--workdir", str(tmp_path), "--out", str(out), "--seeds", "2024"])
  with pytest.raises(SystemExit):
    latest_table.main()
  assert ("final_alone_seed2024/config.json: not the reference's final_alone settings (optim.embedding_l2 0.0 (run) vs "
          "0.01 (reference), train.batch_size 2048 (run) vs 4096 (reference))") in capsys.readouterr().err
  assert not out.exists()
  _latest_run(tmp_path / "final_alone_seed2024", _latest_results({"ensemble": 0.9}, 5, 1))
  (tmp_path / "ecn_alone_seed2024" / "config.json").unlink()
  with pytest.raises(ValueError, match="ecn_alone_seed2024: no config.json"):
    latest_table.collect(tmp_path, (2024,))
  _latest_run(tmp_path / "ecn_alone_seed2024", _latest_results({"ensemble": 0.9}, 5, 1))
  (tmp_path / "latest_seed2024" / "config.json").write_text(latest_table.expected_config("latest", 2025).to_json())
  with pytest.raises(ValueError, match=r"latest_seed2024/config.json: not the reference's latest settings \(seed 2025 \(run\) vs 2024"):
    latest_table.collect(tmp_path, (2024,))


def test_latest_table_bolds_each_rows_highest_auc_not_always_the_ensembles(tmp_path):
  import latest_table

  for seed, ecn_alone in [(2024, 0.99), (2025, 0.93)]:  # 2024: ECN alone beats the ensemble; 2025: it does not
    _latest_run(tmp_path / f"latest_seed{seed}", _latest_results({"ensemble": 0.95, "ipnn": 0.94, "final": 0.93,
                                                                 "ecn": 0.92}, 5, 3))
    for s in latest_table.STUDENTS:
      _latest_run(tmp_path / f"{s}_alone_seed{seed}", _latest_results({"ensemble": ecn_alone if s == "ecn" else 0.9}, 5, 1))
  md = latest_table.markdown(latest_table.collect(tmp_path, (2024, 2025))).splitlines()
  rows = {line.split(" | ")[0]: line for line in md if line.startswith(("| 2024", "| 2025", "| **mean**"))}
  assert rows["| 2024"].startswith("| 2024 | 0.9500 (0.95384) |") and "| **0.9900** | 5 (4) |" in rows["| 2024"]
  assert rows["| 2025"].startswith("| 2025 | **0.9500** (0.95456) |") and rows["| 2025"].count("**") == 2
  assert rows["| **mean**"].startswith("| **mean** | 0.9500 (") and rows["| **mean**"].endswith("| **0.9600** | |")
  assert "**bold**: each row's highest test AUC (the reference's, in parentheses, not counted)." in md


def test_findings_metrics_score_the_runs_own_fusion():
  labels = np.array([1, 0])
  z = np.array([[5.0, 0.8], [-3.0, 0.8]])  # σ(mean z) ranks the positive first, mean σ(z) the negative
  assert findings.findings_metrics(labels, z)["ensemble_auc"] == 1.0
  m = findings.findings_metrics(labels, z, "mean_prob")
  assert m["ensemble_auc"] == 0.0 and m["student_auc"] == [1.0, 0.0] and m["auc_gap"] == -0.5


def test_scaling_merge_refuses_a_record_without_its_seeds(tmp_path):
  (tmp_path / "a.json").write_text(json.dumps({"config": "configs/x.py", "overrides": [], "seeds": [1], "table": {}}))
  (tmp_path / "b.json").write_text(json.dumps({"config": "configs/x.py", "overrides": [], "table": {}}))
  with pytest.raises(ValueError, match=r"b\.json: not a scaling.py record"):
    scaling.merge([tmp_path / "a.json", tmp_path / "b.json"])


def test_findings_distance_is_the_mean_over_three_unequal_students():
  z = np.array([[2.0, -1.0, 0.3], [0.0, 0.5, -2.0], [-1.0, 3.0, 1.0]])
  m = findings.findings_metrics(np.array([1, 0, 1]), z)
  gap = np.abs(1 / (1 + np.exp(-z)) - 1 / (1 + np.exp(-z.mean(axis=0)))).mean(axis=1)
  assert m["distance_per_student"] == pytest.approx(gap.tolist()) and m["distance_to_ensemble"] == pytest.approx(gap.mean())


def test_latest_table_best_students_are_the_ones_chosen_on_validation_not_test(tmp_path):
  """The run's best student (validation AUC) inside, and the alone run of highest validation AUC: here ECN
  and FINAL, though IPNN is the best on test both times."""
  import latest_table

  _latest_run(tmp_path / "latest_seed2024", _latest_results({"ensemble": 0.95, "ipnn": 0.94, "final": 0.93, "ecn": 0.92},
                                                             5, 3, val={"ecn": 0.99}))
  for s, auc in zip(latest_table.STUDENTS, (0.91, 0.90, 0.89)):
    _latest_run(tmp_path / f"{s}_alone_seed2024", _latest_results({"ensemble": auc}, 5, 1,
                                                                  val={"ensemble": 0.99} if s == "final" else None))
  t = latest_table.collect(tmp_path, (2024,))
  r = t["per_seed"][0]
  assert (r["best_student"], r["best_inside"], r["best_alone_student"], r["best_alone"]) == ("ecn", 0.92, "final", 0.90)
  md = latest_table.markdown(t)
  assert "ensemble − best student trained alone: +0.0500; ensemble − best student inside it: +0.0300" in md
  assert "2024: ecn / final" in md


def _seed_run(seed, ens_auc):
  return {"seed": seed, "rows": [{"model": "ensemble", "test_auc": ens_auc, "test_logloss": 0.5},
                                 {"model": "mlp", "test_auc": 0.6, "test_logloss": 0.6}],
          "best_student_index": 0, "epochs_run": 3, "wall_s": 1.0, "train_samples_per_s": 10.0}


@pytest.mark.parametrize("aucs", [(0.7, float("nan")), (float("nan"), 0.7), (0.7, None)])
def test_run_seeds_summary_over_a_seed_without_an_auc_is_nan_in_any_seed_order(aucs):
  """A fresh run's NaN AUC (one-class test split) reads back from results.json as null: mean, min and max
  are all NaN either way (min/max over a NaN would depend on the seeds' order), the values kept as NaN."""
  import math

  s = run_seeds.summarize([_seed_run(i, a) for i, a in enumerate(aucs)])["ensemble_test_auc"]
  assert all(math.isnan(s[k]) for k in ("mean", "min", "max"))
  assert [math.isnan(v) for v in s["values"]] == [a is None or a != a for a in aucs]


def test_findings_refuses_a_run_without_an_ensemble_test_auc(tmp_path, monkeypatch):
  labels, logits = np.array([0, 1, 0, 1], np.float64), np.zeros((2, 4), np.float32)
  for logged in (None, float("nan")):
    monkeypatch.setattr(findings, "predict_test_split",
                        lambda wd: (labels, logits, "mean_logit", {"rows": [{"model": "ensemble", "test_auc": logged}]}))
    with pytest.raises(ValueError, match="no ensemble test AUC"):
      findings.analyse_run(tmp_path)


def test_an_ablation_plot_needs_one_k_shared_by_every_variant(tmp_path, monkeypatch):
  """Variants at different Ks merged over the same seeds are plotted against K, not as an ablation
  labelled with the last variant's K."""
  cell = run_seeds.summarize([_seed_run(1, 0.95)])
  assert scaling.is_ablation({"kdef": {4: cell}, "mean": {4: cell}})
  assert not scaling.is_ablation({"kdef": {4: cell}, "mean": {16: cell}})
  for name, v, k in (("a", "kdef", "4"), ("b", "mean", "16")):
    (tmp_path / f"{name}.json").write_text(json.dumps({"config": "c", "overrides": [], "seeds": [1], "table": {v: {k: cell}}}))
  rec = scaling.merge([tmp_path / "a.json", tmp_path / "b.json"])
  figs = []
  monkeypatch.setattr(scaling, "save_figure", lambda fig, path: figs.append(fig))
  scaling.plot({v: {int(k): s for k, s in rows.items()} for v, rows in rec["table"].items()}, tmp_path / "x.png", "t")
  labels = " ".join(ax.get_xlabel() for ax in figs[0].axes)
  assert "K=16" not in labels and "K=4" not in labels


@pytest.mark.parametrize("overrides,has_test", [
  (["data.files.test="], False),
  ([], True),
  (["data.split=random", "data.files.valid=", "data.files.test=", "data.split_fractions=(0.8,0.2,0)"], False),
  (["data.split=random", "data.files.valid=", "data.files.test=", "data.split_fractions=(0.8,0.1,0.1)"], True),
])
def test_a_setting_without_a_test_split_is_refused_before_any_training(tmp_path, overrides, has_test):
  """run_seeds and scaling summarise test metrics: a config without test rows was trained in full, then
  failed with a traceback."""
  config = str(REPO_ROOT / "configs" / "criteo.py") + ":sample"
  if has_test:
    assert run_seeds.plan_setting(config, "a", overrides, [7], tmp_path)
  else:
    with pytest.raises(ValueError, match=r"setting 'a': its data has no test split"):
      run_seeds.plan_setting(config, "a", overrides, [7], tmp_path)


@pytest.mark.parametrize("script", [findings, collapse])
def test_sweep_analyses_name_a_run_without_its_checkpoints_in_one_line(tmp_path, monkeypatch, capsys, script):
  """A finished run whose checkpoints were deleted (to save disk) was a FileNotFoundError traceback."""
  import kdef_jax.export
  from kdef_jax.config import base_config

  run = tmp_path / "runs" / "mean_k2_seed7"
  run.mkdir(parents=True)
  (run / "config.json").write_text(base_config().to_json())

  def finished(*workdirs, variants=None, warn=True):
    return {"mean": {2: [(7, run)]}}

  def no_checkpoint(workdir, checkpoint="best"):
    raise FileNotFoundError(f"no best checkpoint under {workdir}/checkpoints/best")

  for module in (run_seeds, script):
    monkeypatch.setattr(module, "finished_runs", finished)
  monkeypatch.setattr(kdef_jax.export, "load_run", no_checkpoint)
  monkeypatch.setattr(sys, "argv", ["x", "--workdir", str(tmp_path / "runs"), "--out", str(tmp_path / "r.json")])
  with pytest.raises(SystemExit) as e:
    script.main()
  assert e.value.code == 2
  assert f"error: no best checkpoint under {run}/checkpoints/best" in capsys.readouterr().err


def test_a_reused_run_made_by_other_code_is_named_in_the_log_line():
    now = {"kdef-jax": "0.1.0", "jax": "0.10.2", "commit": "abc"}
    assert run_seeds.other_code({"software": dict(now)}, now) == ""
    assert run_seeds.other_code({"software": {**now, "commit": "old"}}, now) == " (warning: made by other code: commit old → abc)"
    assert "made before runs recorded their code version" in run_seeds.other_code({}, now)


def test_a_summary_records_which_code_made_its_runs_and_a_merge_keeps_them_all():
  v1, v2 = {"jax": "0.10.2", "commit": "aaa"}, {"jax": "0.10.2", "commit": "bbb"}
  a = run_seeds.summarize([{**_seed_run(1, 0.7), "software": v1}, {**_seed_run(2, 0.7), "software": v1}])
  b = run_seeds.summarize([{**_seed_run(3, 0.7), "software": v2}, _seed_run(4, 0.7)])  # seed 4: before the record
  assert a["software"] == [v1] and b["software"] == [v2, None]
  assert run_seeds.merge_summaries(a, b)["software"] == [v1, v2, None]
  old = {k: v for k, v in a.items() if k != "software"}  # a summary written before it was recorded: unknown
  assert run_seeds.merge_summaries(old, b)["software"] == [None, v2]


def test_mixed_code_names_what_differs_between_the_versions():
  v1, v2 = {"jax": "0.10.2", "commit": "aaa"}, {"jax": "0.10.2", "commit": "bbb"}
  assert run_seeds.mixed_code([v1]) == "" and run_seeds.mixed_code([None]) == ""
  assert run_seeds.mixed_code([v1, v2]) == "warning: runs made by 2 versions of the code: commit aaa / bbb"
  assert run_seeds.mixed_code([v1, None]) == ("warning: runs made by 2 versions of the code: runs made before "
                                              "they recorded their code version")


def test_scaling_merge_of_sweeps_made_by_other_code_says_so(tmp_path, monkeypatch, capsys):
  def record(name, seeds, commit):
    runs = [{**_seed_run(s, 0.7), "software": {"jax": "0.10.2", "commit": commit}} for s in seeds]
    p = tmp_path / name
    p.write_text(json.dumps({"config": "configs/x.py", "overrides": [], "seeds": seeds,
                             "table": {"kdef": {"2": run_seeds.summarize(runs)}}}))
    return p

  a, b, c = record("a.json", [1], "aaa"), record("b.json", [2], "aaa"), record("c.json", [3], "bbb")
  for inputs, commits in (([a, b], ["aaa"]), ([a, c], ["aaa", "bbb"])):
    monkeypatch.setattr(sys, "argv", ["scaling.py", "--merge", *map(str, inputs), "--out", str(tmp_path / "m.json")])
    scaling.main()
    err = capsys.readouterr().err
    assert ("scaling.py: warning: runs made by 2 versions of the code: commit aaa / bbb" in err) == (len(commits) == 2), err
    software = json.loads((tmp_path / "m.json").read_text())["table"]["kdef"]["2"]["software"]
    assert software == [{"jax": "0.10.2", "commit": c} for c in commits]


@pytest.mark.parametrize("name,kind", [
    ("frappe_scaling", "scaling.py"), ("frappe_finding1_k64", "scaling.py"), ("frappe_collapse", "collapse.py"),
    ("frappe_findings_k16", "findings.py"), ("frappe_k3_vs_k1", "run_seeds.py"), ("frappe_kdef_latest", "latest_table.py"),
    ("datasets_real", "dataset_summary.py"), ("step_parity_frappe_k3", "step_parity.py"),
    ("criteo_shape_throughput", None),  # collected by hand (benchmarks/README.md)
])
def test_each_scripts_record_is_told_by_its_shape(name, kind):
  assert records.record_kind(json.loads((REPO_ROOT / "experiments" / "results" / f"{name}.json").read_text())) == kind


def test_every_committed_record_but_the_hand_collected_one_is_some_scripts():
  files = sorted((REPO_ROOT / "experiments" / "results").glob("*.json"))
  unknown = [p.name for p in files if records.record_kind(json.loads(p.read_text())) is None]
  assert len(files) > 40 and unknown == ["criteo_shape_throughput.json"]


def test_out_replaces_only_an_earlier_record_of_the_same_script(tmp_path, monkeypatch, capsys):
  """An --out that holds another script's record, or a file that is no record, is refused before any work
  and left as it was; an earlier record of the same script, or an empty file, is replaced."""
  results = REPO_ROOT / "experiments" / "results"
  findings_record = (results / "frappe_findings_k16.json").read_text()
  for text, says in [(findings_record, "holds a record of experiments/findings.py"),
                     ('{"name": "kdef-jax"}', "holds a file that is no record of experiments/scaling.py"),
                     ("not json", "holds a file that is no record of experiments/scaling.py"),
                     (b"\xff\xfe".decode("latin-1"), "holds a file that is no record of experiments/scaling.py")]:
    out = tmp_path / "out.json"
    out.write_text(text, encoding="latin-1")
    monkeypatch.setattr(sys, "argv", ["scaling", "--merge", str(results / "frappe_scaling.json"), "--out", str(out)])
    with pytest.raises(SystemExit):
      scaling.main()
    err = capsys.readouterr().err
    assert f"--out {out} {says}, which this would replace; give another path (or remove that file first)" in err
    assert out.read_text(encoding="latin-1") == text and not out.with_suffix(".md").exists()
  for earlier in ((results / "ml100k_scaling.json").read_text(), "", " \n"):
    out.write_text(earlier)
    scaling.main()
    assert json.loads(out.read_text())["merged_from"] == [str(results / "frappe_scaling.json")]
  with pytest.raises(ValueError, match="holds a record of experiments/scaling.py"):
    run_seeds.check_out(out, kind="findings.py")
  with pytest.raises(ValueError, match="holds a record of experiments/scaling.py"):
    records.check_replaceable(out, "step_parity.py")
  monkeypatch.setattr(type(out), "read_text", lambda self, *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
  with pytest.raises(ValueError, match=r"--out .*out.json: cannot be read \(Permission denied\), so whether it is a record of "
                                       r"experiments/scaling.py is not known; give another path"):
    records.check_replaceable(out, "scaling.py")
