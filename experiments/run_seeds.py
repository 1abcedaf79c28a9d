"""Run one config over several seeds (and setting groups) and summarise test AUC / logloss.

    python experiments/run_seeds.py --config configs/frappe.py --seeds 2024 2025 2026 \
        --setting kdef_k3 model.num_students=3 \
        --setting mlp_k1 model.num_students=1 loss.variant=independent \
        --workdir runs/frappe_seeds --out experiments/results/frappe_seeds.json

Each (setting, seed) trains with ``train_and_evaluate`` in its own workdir (an existing finished run
is reused, so an interrupted sweep resumes). The summary gives, per setting, the mean and the
per-seed values of the ensemble's and the best student's (chosen by validation AUC) test AUC and
logloss, epochs and wall time, and writes JSON plus a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdef_jax.config import load_config_file  # noqa: E402
from kdef_jax.train import train_and_evaluate  # noqa: E402


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    if text.startswith("(") or text.startswith("["):
        return tuple(_parse_value(t.strip()) for t in text.strip("()[]").split(",") if t.strip())
    return text


def apply_overrides(config: ml_collections.ConfigDict, items) -> None:
    for item in items:
        key, _, value = item.partition("=")
        node = config
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"unknown config key {key!r}")
        node[leaf] = _parse_value(value)


def _stats(vals: list) -> dict:
    return {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals), "values": vals}


_STATS = ("ensemble_test_auc", "ensemble_test_logloss", "best_student_test_auc", "best_student_test_logloss")


def summarize(runs: list) -> dict:
    ens_auc = [r["rows"][0]["test_auc"] for r in runs]
    ens_ll = [r["rows"][0]["test_logloss"] for r in runs]
    best = [r["rows"][1 + r["best_student_index"]] for r in runs]
    return {
        "seeds": [r["seed"] for r in runs],
        "ensemble_test_auc": _stats(ens_auc),
        "ensemble_test_logloss": _stats(ens_ll),
        "best_student_test_auc": _stats([b["test_auc"] for b in best]),
        "best_student_test_logloss": _stats([b["test_logloss"] for b in best]),
        "best_student": [b["model"] for b in best],
        "epochs": [r["epochs_run"] for r in runs],
        "wall_s": [r["wall_s"] for r in runs],
        "train_samples_per_s": [r["train_samples_per_s"] for r in runs],
    }


def merge_summaries(a: dict, b: dict) -> dict:
    """One :func:`summarize` of the runs behind ``a`` and ``b`` (one setting, disjoint seeds): the
    per-seed lists concatenated, mean / min / max recomputed from the per-seed values."""
    twice = sorted(set(a["seeds"]) & set(b["seeds"]))
    if twice:
        raise ValueError(f"seeds {twice} are in both summaries; merge only runs of other seeds")
    return {k: _stats(a[k]["values"] + b[k]["values"]) if k in _STATS else a[k] + b[k] for k in a}


def markdown(summary: dict) -> str:
    lines = [
        "| setting | seeds | ensemble test AUC (mean; per seed) | ensemble logloss | best student test AUC | "
        "best student logloss | epochs | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        per = " / ".join(f"{v:.4f}" for v in s["ensemble_test_auc"]["values"])
        lines.append(
            f"| {name} | {len(s['seeds'])} | **{s['ensemble_test_auc']['mean']:.4f}** ({per}) | "
            f"{s['ensemble_test_logloss']['mean']:.4f} | {s['best_student_test_auc']['mean']:.4f} | "
            f"{s['best_student_test_logloss']['mean']:.4f} | {', '.join(map(str, s['epochs']))} | "
            f"{statistics.fmean(s['wall_s']):.0f} |"
        )
    return "\n".join(lines)


def run_setting(config_path: str, name: str, overrides, seeds, workdir) -> list:
    """results.json of ``config_path`` + ``overrides`` for each seed, in ``<workdir>/<name>_seed<seed>``
    (a finished run there is reused, so an interrupted sweep resumes)."""
    runs = []
    for seed in seeds:
        wd = Path(workdir) / f"{name}_seed{seed}"
        if (wd / "results.json").exists():
            res = json.loads((wd / "results.json").read_text())
            print(f"[{name} seed {seed}] reusing {wd / 'results.json'}")
        else:
            config = load_config_file(config_path)
            apply_overrides(config, [*overrides, f"seed={seed}", "train.progress=False"])
            print(f"[{name} seed {seed}] training in {wd}", flush=True)
            res = train_and_evaluate(config, wd)
        runs.append(res)
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="configs/x.py[:arg]")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026])
    ap.add_argument("--setting", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
                    help="a named group of config overrides; repeat for several settings")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True, help="JSON summary path (a .md table is written beside it)")
    args = ap.parse_args()
    summary = {}
    for name, *overrides in args.setting:
        runs = run_setting(args.config, name, overrides, args.seeds, args.workdir)
        summary[name] = summarize(runs)
        summary[name]["overrides"] = overrides
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "summary": summary}, indent=1))
    table = markdown(summary)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
