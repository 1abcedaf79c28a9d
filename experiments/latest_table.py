"""KDEF_Latest on Frappe: ensemble and per-student test AUC, vs each student trained alone, vs the reference.

Reads the runs of experiments/run_seeds.py (``<workdir>/<setting>_seed<seed>/results.json``) for the
settings ``latest`` (IPNN + FINAL + ECN, KDEF loss) and ``<kind>_alone`` (one student, variant
"independent", same hyperparameters), and writes JSON plus a Markdown table:

    python experiments/run_seeds.py --config configs/kdef_latest_frappe.py --workdir runs/frappe_latest \
        --setting latest --setting ipnn_alone model.students=ipnn:1 loss.variant=independent \
        --setting final_alone model.students=final:1 loss.variant=independent \
        --setting ecn_alone model.students=ecn:1 loss.variant=independent \
        --out runs/frappe_latest/summary.json
    python experiments/latest_table.py --workdir runs/frappe_latest --out experiments/results/frappe_kdef_latest.json

Reference: the authors' PyTorch EKTF_L on the same split and settings, seeds 2024-2026
(shared/reference/bench/reference-perf.md §5.4; students' AUCs are the 6-decimal log values, 4 shown).
Each run's config.json must be configs/kdef_latest_frappe.py with its setting's overrides and its seed
(the keys that cannot change a result, such as data paths, the engine or the progress bar, may differ):
a run of other settings is an error naming the keys, not a row set beside the reference's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdef_jax.config import apply_overrides, load_config_file  # noqa: E402
from kdef_jax.report import tolerant_stdio  # noqa: E402
from kdef_jax.run_files import read_json  # noqa: E402
from run_seeds import best_marks, bold_if, check_out, run_config_changes, write_outputs  # noqa: E402  (experiments/ is this script's folder)

STUDENTS = ("ipnn", "final", "ecn")
SEEDS = (2024, 2025, 2026)
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "kdef_latest_frappe.py"
SETTINGS = {"latest": (), **{f"{s}_alone": (f"model.students={s}:1", "loss.variant=independent") for s in STUDENTS}}
# config keys that cannot change a run's numbers: where the data and cache live, which engine parsed it,
# batching of evaluation, progress output, the device layout
OPERATIONAL = ("resume", "data.data_dir", "data.cache_dir", "data.engine", "train.eval_batch_size", "train.log_every",
               "train.prefetch", "train.progress", "train.plot", "mesh.", "distributed.")
REFERENCE = {  # test AUC, EKTF_L, Frappe mod10, batch 4096, emb L2 0.01, [400]x3, dropouts 0.1/0.1/0.3, 2 cross layers
    "ensemble": (0.95384, 0.95456, 0.95385),
    "ipnn": (0.9521, 0.9531, 0.9527),
    "final": (0.9493, 0.9515, 0.9512),
    "ecn": (0.9450, 0.9481, 0.9411),
}


def _auc(res: dict, model: str, path: Path) -> float:
    rows = [r for r in res.get("rows", []) if r.get("model") == model and r.get("test_auc") is not None]
    if len(rows) != 1:
        raise ValueError(f"{path}: no {model!r} row with a test AUC (is it a run of this setting?)")
    return rows[0]["test_auc"]


def _val_auc(res: dict, path: Path) -> float:
    """The ensemble row's validation AUC (a K=1 run: its one student's)."""
    val = res["rows"][0].get("val_auc")
    if val is None:
        raise ValueError(f"{path}: no validation AUC in its ensemble row")
    return val


def expected_config(setting: str, seed: int):
    """The config a ``<setting>_seed<seed>`` run of the table must have used."""
    config = load_config_file(str(CONFIG))
    apply_overrides(config, [*SETTINGS[setting], f"seed={seed}"])
    return config


def check_settings(run: Path, setting: str, seed: int) -> None:
    """A ValueError naming every result-changing key where ``run``'s config.json is not the reference's."""
    if not (run / "config.json").is_file():
        raise ValueError(f"{run}: no config.json, so its settings cannot be checked against the reference's")
    changes = run_config_changes(run, expected_config(setting, seed))
    changes = {k: v for k, v in changes.items() if not k.startswith(OPERATIONAL)}
    if changes:
        diff = ", ".join(f"{k} {a!r} (run) vs {b!r} (reference)" for k, (a, b) in sorted(changes.items()))
        raise ValueError(f"{run / 'config.json'}: not the reference's {setting} settings ({diff}); "
                         f"the table compares runs of {CONFIG.name} only")


def run_names(seeds=SEEDS) -> list:
    """The run folders the table reads: ``<setting>_seed<seed>``."""
    return [f"{setting}_seed{seed}" for seed in seeds for setting in SETTINGS]


def missing_runs(workdir: Path, seeds=SEEDS) -> list:
    """The ``results.json`` files the table needs that ``workdir`` lacks."""
    return [str(workdir / r / "results.json") for r in run_names(seeds) if not (workdir / r / "results.json").is_file()]


def collect(workdir: Path, seeds=SEEDS) -> dict:
    per_seed = []
    for seed in seeds:  # every run's settings first: no half-read table over a wrong run
        for setting in SETTINGS:
            check_settings(workdir / f"{setting}_seed{seed}", setting, seed)
    for seed in seeds:
        i = SEEDS.index(seed)
        path = workdir / f"latest_seed{seed}" / "results.json"
        latest = read_json(path)
        row = {"seed": seed, "epochs": latest["epochs_run"], "best_epoch": latest["best_epoch"], "wall_s": latest["wall_s"],
               "ensemble": _auc(latest, "ensemble", path), "ensemble_test_logloss": latest["rows"][0]["test_logloss"],
               "reference": {k: v[i] for k, v in REFERENCE.items()},
               "best_student": latest["best_student"],  # chosen on validation AUC by the run itself
               "machine": _machine(latest)}
        row["best_inside"] = _auc(latest, latest["best_student"], path)
        alone_val = {}
        for s in STUDENTS:
            alone_path = workdir / f"{s}_alone_seed{seed}" / "results.json"
            alone = read_json(alone_path)
            if alone.get("num_students") != 1:
                raise ValueError(f"{alone_path}: {alone.get('num_students')} students; a {s}_alone run has one")
            row[s] = _auc(latest, s, path)
            row[f"{s}_alone"] = _auc(alone, "ensemble", alone_path)  # K=1: the ensemble row is the student
            row[f"{s}_alone_epochs"] = alone["epochs_run"]
            alone_val[s] = _val_auc(alone, alone_path)
        row["best_alone_student"] = max(STUDENTS, key=alone_val.get)  # the alone run of highest validation AUC
        row["best_alone"] = row[f"{row['best_alone_student']}_alone"]
        per_seed.append(row)
    keys = ["ensemble", "best_inside", "best_alone", *STUDENTS, *(f"{s}_alone" for s in STUDENTS)]
    mean = {k: statistics.fmean(r[k] for r in per_seed) for k in keys}
    ref_mean = {k: statistics.fmean(v[SEEDS.index(seed)] for seed in seeds) for k, v in REFERENCE.items()}
    return {"dataset": "frappe_mod10", "config": "configs/kdef_latest_frappe.py", "seeds": list(seeds),
            "per_seed": per_seed, "mean": mean, "reference_mean": ref_mean,
            "target": {"ensemble_mean_at_least": round(ref_mean["ensemble"] - 0.001, 4)}}


def _machine(results: dict) -> str:
    """Where a run trained, as its results.json records it: e.g. "cpu, AMD EPYC, 2 logical CPUs"."""
    cpu = results.get("cpu") or {}
    parts = [results.get("device", "").split(":")[0], cpu.get("model"),
             f"{cpu['logical_cpus']} logical CPUs" if cpu.get("logical_cpus") else None]
    return ", ".join(p for p in parts if p) or "machine not recorded"


COLUMNS = ("ensemble", *STUDENTS, *(f"{s}_alone" for s in STUDENTS))  # the table's AUC columns, in order


def _auc_cells(r: dict) -> dict:
    """{column: the row's AUC to 4 decimals}, the row's highest bold (ties all bold)."""
    return {k: bold_if(flag, f"{r[k]:.4f}") for k, flag in zip(COLUMNS, best_marks([r[k] for k in COLUMNS]))}


def markdown(t: dict) -> str:
    """One row per seed and their mean; bold: each row's highest test AUC (the reference's not counted)."""
    f = "{:.4f}".format
    lines = [
        "KDEF_Latest (IPNN + FINAL + ECN) on Frappe (mod10 split), test AUC. \"in ensemble\": the student "
        "inside the KDEF_Latest run; \"alone\": the same student trained by itself (K=1, loss variant "
        "\"independent\", same hyperparameters). ref = the authors' PyTorch EKTF_L, same split and settings.",
        "",
        "| seed | ensemble (ref) | IPNN in ensemble (ref) | FINAL in ensemble (ref) | ECN in ensemble (ref) "
        "| IPNN alone | FINAL alone | ECN alone | epochs (best) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in t["per_seed"]:
        ref, c = r["reference"], _auc_cells(r)
        lines.append(
            f"| {r['seed']} | {c['ensemble']} ({ref['ensemble']:.5f}) | {c['ipnn']} ({f(ref['ipnn'])}) | "
            f"{c['final']} ({f(ref['final'])}) | {c['ecn']} ({f(ref['ecn'])}) | {c['ipnn_alone']} | "
            f"{c['final_alone']} | {c['ecn_alone']} | {r['epochs']} ({r['best_epoch']}) |"
        )
    m, rm = t["mean"], t["reference_mean"]
    c = _auc_cells(m)
    lines.append(
        f"| **mean** | {c['ensemble']} ({rm['ensemble']:.5f}) | {c['ipnn']} ({f(rm['ipnn'])}) | "
        f"{c['final']} ({f(rm['final'])}) | {c['ecn']} ({f(rm['ecn'])}) | {c['ipnn_alone']} | "
        f"{c['final_alone']} | {c['ecn_alone']} | |"
    )
    # each seed's best student chosen on validation AUC, as everywhere else
    chosen = ", ".join(f"{r['seed']}: {r['best_student']} / {r['best_alone_student']}" for r in t["per_seed"])
    gaps = (f"ensemble − best student trained alone: {m['ensemble'] - m['best_alone']:+.4f}; ensemble − best "
            f"student inside it: {m['ensemble'] - m['best_inside']:+.4f} (each seed's best chosen on validation "
            f"AUC, inside / alone: {chosen})")
    machines = " / ".join(dict.fromkeys(r.get("machine", "machine not recorded") for r in t["per_seed"]))
    lines += [
        "",
        "**bold**: each row's highest test AUC (the reference's, in parentheses, not counted).",
        "",
        f"Ensemble mean {f(m['ensemble'])} vs reference {f(rm['ensemble'])} (target ≥ "
        f"{t['target']['ensemble_mean_at_least']}); {gaps}. KDEF_Latest wall time per run "
        f"{statistics.fmean(r['wall_s'] for r in t['per_seed']):.0f} s ({machines}; the reference: 92-131 s train, "
        "2 CPU threads).",
        "",
        "Reproduce: the two commands in experiments/latest_table.py's docstring (run_seeds.py with the settings "
        "latest / ipnn_alone / final_alone / ecn_alone on configs/kdef_latest_frappe.py, then this table).",
    ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True, help="JSON path (a .md table is written beside it)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), choices=SEEDS,
                    help="the seeds to tabulate (the reference was run with 2024-2026; its means follow the choice)")
    args = ap.parse_args()
    if len(set(args.seeds)) < len(args.seeds):
        ap.error(f"--seeds {' '.join(map(str, args.seeds))}: a seed given twice would count twice in the means")
    try:
        out = check_out(args.out, [Path(args.workdir) / r for r in run_names(args.seeds)], kind="latest_table.py")
    except ValueError as e:
        ap.error(str(e))
    if not Path(args.workdir).is_dir():
        ap.error(f"--workdir {args.workdir}: {'a file, not a folder' if Path(args.workdir).exists() else 'no such folder'} "
                 f"(the run_seeds.py --workdir of this script's docstring)")
    missing = missing_runs(Path(args.workdir), args.seeds)
    if missing:
        raise SystemExit(f"latest_table: {len(missing)} run(s) missing (run experiments/run_seeds.py as in this "
                         f"script's docstring, or pass --seeds): " + ", ".join(missing))
    try:
        table = collect(Path(args.workdir), tuple(args.seeds))
    except ValueError as e:
        ap.error(str(e))
    write_outputs(out, table, markdown(table))


if __name__ == "__main__":
    tolerant_stdio()
    main()
