"""The paper's Findings 2 and 3 across a K sweep: how far the students spread, and how far they sit from their ensemble.

    python experiments/findings.py --workdir runs/frappe_findings [more sweeps] --out experiments/results/frappe_findings.json

For every finished run ``<workdir>/<variant>_k<K>_seed<s>`` (experiments/scaling.py) this reloads the
best checkpoint, predicts the test split and, with p_k = σ(z_k) student k's probabilities and p the
ensemble's (the run's fusion: σ(mean_k z_k) for KDEF and ``mean``), computes

    Finding 2 (students decline and spread):  the K students' test AUCs, their mean, min, max and
              population standard deviation  std_k AUC(p_k);
    Finding 3 (students disagree with the ensemble):
              gap = AUC(p) − mean_k AUC(p_k)            (what the ensemble adds over its average student)
              D   = mean_k mean_i |p_k,i − p_i|          (a student's mean distance to the ensemble).

Writes JSON (per run and the per-(variant, K) means over seeds), a Markdown table and a PNG with
three panels against K: the students' AUC (mean, min-max band) beside the ensemble's, std_k AUC(p_k),
and D. Each run's recomputed ensemble test AUC must equal its results.json's, or the run is refused
(its data or checkpoint is not what it was trained and scored on).
"""

from __future__ import annotations

import itertools
import math
import statistics
import sys
import types
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdef_jax.metrics import auc, ensemble_prob64, sigmoid64  # noqa: E402
from kdef_jax.report import bar_disabled, pyplot, save_figure, tolerant_stdio  # noqa: E402
from run_seeds import analysis_main, finished_runs  # noqa: E402  (experiments/ is this script's folder)

SCALARS = ("student_auc_mean", "student_auc_min", "student_auc_max", "student_auc_std", "ensemble_auc",
           "auc_gap", "distance_to_ensemble")


def findings_metrics(labels, logits, fusion: str = "mean_logit") -> dict:
    """Findings 2-3 of one run from its test ``labels`` [N] and student ``logits`` [K, N] ([K + 1, N]
    with the concat head's row last), in float64; see the module docstring for the formulas."""
    z = np.asarray(logits, np.float64)
    p_ens = ensemble_prob64(z, fusion)
    p = sigmoid64(z[:-1] if fusion == "concat" else z)
    aucs = np.array([auc(labels, pk) for pk in p])
    ens = auc(labels, p_ens)
    dist = np.abs(p - p_ens).mean(axis=1)
    return {
        "student_auc": aucs.tolist(), "student_auc_mean": float(aucs.mean()), "student_auc_min": float(aucs.min()),
        "student_auc_max": float(aucs.max()), "student_auc_std": float(aucs.std()), "ensemble_auc": ens,
        "auc_gap": ens - float(aucs.mean()), "distance_per_student": dist.tolist(),
        "distance_to_ensemble": float(dist.mean()),
    }


def predict_test_split(workdir: Path):
    """(test labels [N], student logits [K(+1), N], fusion, results) of a finished run, predicted from its
    best checkpoint on the test split of the data its config.json names."""
    from kdef_jax.data.dataset import load_dataset
    from kdef_jax.export import load_run
    from kdef_jax.losses import fusion_of
    from kdef_jax.run_files import read_run_config
    from kdef_jax.steps import make_predict_step
    from kdef_jax.train import predict_logits

    config = read_run_config(workdir)
    model, variables, fmap, results = load_run(workdir)
    ds = load_dataset(config.data, log=lambda *a, **k: None)
    if list(ds.feature_map.vocab_sizes) != list(fmap.vocab_sizes) or "test" not in ds.splits:
        raise ValueError(f"{workdir}: the data its config.json names no longer matches its feature_map.json "
                         "(or has no test split); cannot re-predict it")
    state = types.SimpleNamespace(params=variables["params"], batch_stats=variables["batch_stats"])
    test = ds.splits["test"]
    logits = predict_logits(make_predict_step(model), state, test,
                            config.train.eval_batch_size or config.train.batch_size)
    return np.asarray(test.y), logits, fusion_of(config.loss.variant), results


def analyse_run(workdir: Path) -> dict:
    labels, logits, fusion, results = predict_test_split(workdir)
    out = findings_metrics(labels, logits, fusion)
    logged = results["rows"][0]["test_auc"]
    if logged is None or math.isnan(logged) or math.isnan(out["ensemble_auc"]):
        raise ValueError(f"{workdir}: no ensemble test AUC (results.json: {logged}, re-predicted: "
                         f"{out['ensemble_auc']}): a one-class test split or NaN predictions; findings need both")
    if abs(out["ensemble_auc"] - logged) > 1e-6:
        raise ValueError(f"{workdir}: re-predicted ensemble test AUC {out['ensemble_auc']:.6f} != {logged:.6f} in its "
                         "results.json; the data or checkpoint is not the one the run was scored on")
    return out | {"fusion": fusion}


def collect(*workdirs, variants=None) -> dict:
    """{variant: {K: {"runs": [per-seed analyse_run], "mean": {scalar: mean over seeds}}}} over the
    finished runs under ``workdirs`` (run_seeds.finished_runs: joined, only ``variants`` when given)."""
    runs = finished_runs(*workdirs, variants=variants)
    total = sum(len(f) for ks in runs.values() for f in ks.values())
    bar = tqdm(total=total, desc="re-predicting test", unit="run", disable=bar_disabled(total > 0))
    out = {}
    for v, ks in runs.items():
        out[v] = {}
        for k, found in ks.items():
            rs = []
            for seed, path in found:
                bar.set_postfix_str(path.name)
                rs.append(analyse_run(path) | {"seed": seed, "run": str(path)})
                bar.update()
            out[v][k] = {"runs": rs, "mean": {s: statistics.fmean(r[s] for r in rs) for s in SCALARS}}
    bar.close()
    return out


def markdown(found: dict) -> str:
    lines = ["| variant | K | seeds | students' test AUC: mean (min-max) | std_k AUC | ensemble AUC | "
             "ensemble − mean student | mean abs(p_k − p) |", "|---|---:|---:|---|---:|---:|---:|---:|"]
    for v, ks in found.items():
        for k, cell in ks.items():
            m = cell["mean"]
            lines.append(f"| {v} | {k} | {len(cell['runs'])} | {m['student_auc_mean']:.4f} ({m['student_auc_min']:.4f}-"
                         f"{m['student_auc_max']:.4f}) | {m['student_auc_std']:.4f} | {m['ensemble_auc']:.4f} | "
                         f"{m['auc_gap']:+.4f} | {m['distance_to_ensemble']:.4f} |")
    return "\n".join(lines)


def plot(found: dict, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colours = dict(zip(found, itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])))
    every_k = sorted({k for ks in found.values() for k in ks})
    for v, ks in found.items():
        x, m = list(ks), [cell["mean"] for cell in ks.values()]
        c = colours[v]
        axes[0].plot(x, [r["student_auc_mean"] for r in m], marker="o", color=c, label=f"{v} students (mean)")
        axes[0].fill_between(x, [r["student_auc_min"] for r in m], [r["student_auc_max"] for r in m], color=c, alpha=0.15)
        axes[0].plot(x, [r["ensemble_auc"] for r in m], ls="--", color=c, label=f"{v} ensemble")
        axes[1].plot(x, [r["student_auc_std"] for r in m], marker="o", color=c, label=v)
        axes[2].plot(x, [r["distance_to_ensemble"] for r in m], marker="o", color=c, label=v)
    titles = ("students' test AUC (band: min-max over students)", "std of the students' test AUC (Finding 2)",
              "mean |p_k − p_ensemble| on test (Finding 3)")
    for a, t in zip(axes, titles):
        a.set_xscale("log", base=2)
        a.set_xticks(every_k, [str(k) for k in every_k])
        a.set_xlabel("students K")
        a.set_title(t, fontsize=9)
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    save_figure(fig, path)
    return True


def main():
    analysis_main(__doc__, collect, markdown, plot, "findings.py")


if __name__ == "__main__":
    tolerant_stdio()
    main()
