"""Scaling the number of students K: a plain ensemble against KDEF (the paper's Finding 1 / Table II).

    python experiments/scaling.py --config configs/frappe.py --ks 1 2 4 8 --variants mean kdef \
        --seeds 2024 2025 --workdir runs/frappe_scaling --out experiments/results/frappe_scaling.json

For every variant v (``loss.variant``: "mean" = one BCE on σ(mean_k z_k), the paper's MLP_mean /
"w/o all"; "sum", "mean_prob", "concat" = the other ensembles of spec §7 and §9.3; "kdef" = the full
loss; any of kdef_jax.losses.VARIANTS) and every K, trains
``config`` with ``model.num_students=K`` over the seeds (experiments/run_seeds.py; finished runs in
``<workdir>/<v>_k<K>_seed<s>`` are reused). Writes JSON, a Markdown table and a PNG with two
panels against K: the ensemble's test AUC and the best student's (chosen by validation AUC), each
line the mean over seeds with the per-seed min-max as a band. The collapse the paper reports is the
"mean" curve of the best student falling as K grows while the ensemble does not gain.

    python experiments/scaling.py --merge A.json B.json --out AB.json

joins sweeps of the same config and overrides into one record, table and plot, training nothing: the
same variants and Ks over other seeds (a seed run later, in another workdir), or other variants over
the same seeds (a baseline swept later).

The K students are ``model.student`` (default "mlp"): ``--set model.student=final`` sweeps K FINAL
students instead, any registered kind (the paper's Table II rows for other backbones).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_seeds import (SweepProgress, best_marks, bold_if, check_out, check_unique, cli, distinct, merge_summaries,  # noqa: E402
                       mixed_code, plan_setting, run_planned, summarize, write_outputs)

from kdef_jax.config import apply_overrides, load_config_file  # noqa: E402
from kdef_jax.report import pyplot, save_figure  # noqa: E402
from kdef_jax.run_files import read_json  # noqa: E402


SWEPT = ("model.num_students", "loss.variant", "model.students")  # what the sweep sets; --set may not
# variants whose students' own outputs are never trained (MLPs_concat trains only its head): no best-student curve
UNTRAINED_STUDENTS = ("concat",)


def plan_sweep(config: str, ks, variants, seeds, workdir, extra=()) -> dict:
    """{(variant, K): run_seeds.plan_setting(...)}: every run's config built and validated up front."""
    swept = [o for o in extra if o.partition("=")[0] in SWEPT]
    if swept:
        raise ValueError(f"--set {' '.join(swept)}: scaling.py sweeps {', '.join(SWEPT[:2])} itself")
    try:
        base = load_config_file(config)
        apply_overrides(base, extra)
    except FileNotFoundError as e:
        raise ValueError(f"--config {config}: {e}") from None
    except (ValueError, TypeError) as e:
        raise ValueError(f"--set: {e}") from None
    students = base.model.students
    if students:  # checked first: each K's model.num_students below would not be read
        raise ValueError(f"{config} sets model.students={students!r}, which fixes the students: "
                         "scaling.py sweeps K students of one kind (model.student × model.num_students)")
    return {(v, k): plan_setting(config, f"{v}_k{k}", [f"model.num_students={k}", f"loss.variant={v}", *extra],
                                 seeds, workdir) for v in variants for k in ks}


def sweep(config: str, ks, variants, seeds, workdir, extra=(), plans=None) -> dict:
    """{variant: {K: run_seeds.summarize(...)}} for every (variant, K)."""
    plans = plans or plan_sweep(config, ks, variants, seeds, workdir, extra)
    out, progress = {}, SweepProgress(sum(len(plan) for plan in plans.values()))
    for (v, k), plan in plans.items():
        out.setdefault(v, {})[k] = summarize(run_planned(f"{v}_k{k}", plan, progress, "scaling.py"))
    return out


def merge(paths) -> dict:
    """The record of one sweep from the JSON records of sweeps of the same config and overrides, each
    joined to those before it in one of two ways: the same variants and Ks over disjoint seeds (e.g. a
    seed added later: every cell's per-seed values joined, in the order of ``paths``), or other
    variants over the same seeds (e.g. a baseline swept later: its rows added to the table)."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise ValueError(f"--merge: no such file {', '.join(missing)}")
    records = [read_json(Path(p)) for p in paths]
    for p, r in zip(paths, records):
        if not isinstance(r, dict) or not {"config", "overrides", "seeds", "table"} <= set(r):
            raise ValueError(f"{p}: not a scaling.py record (it needs config, overrides, seeds and table)")
    first = records[0]
    table, seeds = dict(first["table"]), list(first["seeds"])
    for p, r in zip(paths[1:], records[1:]):
        for key in ("config", "overrides"):
            if r[key] != first[key]:
                raise ValueError(f"{p}: {key} {r[key]!r} is not {paths[0]}'s {first[key]!r}")
        got = {v: list(rows) for v, rows in r["table"].items()}
        if not set(got) & set(table) and r["seeds"] != seeds and sorted(r["seeds"]) == sorted(seeds):
            raise ValueError(f"{p}: the seeds {r['seeds']} in another order than {seeds}: every cell lists its "
                             f"per-seed values in its sweep's --seeds order; sweep with --seeds {' '.join(map(str, seeds))}")
        if not set(got) & set(table) and r["seeds"] == seeds:  # other variants, the same seeds
            table.update(r["table"])
            continue
        if {v: sorted(rows, key=int) for v, rows in got.items()} != {v: sorted(rows, key=int) for v, rows in table.items()}:
            raise ValueError(f"{p}: variants and Ks {got} are neither those joined so far (to add seeds) nor other "
                             f"variants over their seeds {seeds}")
        try:
            table = {v: {k: merge_summaries(s, r["table"][v][k]) for k, s in rows.items()} for v, rows in table.items()}
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
        seeds += r["seeds"]
    return {"config": first["config"], "overrides": first["overrides"], "seeds": seeds, "table": table,
            "merged_from": [str(p) for p in paths]}


def markdown(table: dict) -> str:
    """One row per variant and K. Bold: in an ablation (one K), the variant with the highest mean
    ensemble test AUC; over several Ks, each variant's best K (where its scaling curve peaks)."""
    cells = [(v, k, s["ensemble_test_auc"]["mean"]) for v, rows in table.items() for k, s in rows.items()]
    ablation = is_ablation(table)
    groups = {}
    for v, k, auc in cells:
        groups.setdefault(k if ablation else v, []).append(((v, k), auc))
    best = {key: flag for g in groups.values() for (key, _), flag in zip(g, best_marks([a for _, a in g]))}
    lines = ["| variant | K | ensemble test AUC (mean; per seed) | best student test AUC (mean; per seed) | "
             "ensemble − best student | epochs | train samples/s |", "|---|---:|---|---|---:|---|---:|"]
    for v, rows in table.items():
        for k, s in rows.items():
            e, b = s["ensemble_test_auc"], s["best_student_test_auc"]
            per = lambda x: " / ".join(f"{t:.4f}" for t in x["values"])  # noqa: E731
            lines.append(f"| {v} | {k} | {bold_if(best[v, k], format(e['mean'], '.4f'))} ({per(e)}) | {b['mean']:.4f} ({per(b)}) | "
                         f"{e['mean'] - b['mean']:+.4f} | {', '.join(map(str, s['epochs']))} | "
                         f"{_mean_speed(s['train_samples_per_s'])} |")
    if any(best.values()):
        lines += ["", "**bold**: " + ("the highest mean ensemble test AUC of the variants." if ablation else
                                      "each variant's highest mean ensemble test AUC over K.")]
    return "\n".join(lines)


def _mean_speed(values: list) -> str:
    """The mean of the runs' train samples/s; a run of one step an epoch has none (NaN, or null in JSON)."""
    known = [x for x in values if x is not None and math.isfinite(x)]
    return f"{statistics.fmean(known):,.0f}" if known else "n/a"


def is_ablation(table: dict) -> bool:
    """One K for every variant: the variants are compared side by side, not against K."""
    return len({k for rows in table.values() for k in rows}) == 1


def drawn(variant: str, key: str) -> bool:
    """Whether a panel of ``key`` shows ``variant``: no best-student point for ``UNTRAINED_STUDENTS``."""
    return not (key == "best_student_test_auc" and variant in UNTRAINED_STUDENTS)


def _on_floor(ax, x, mean: float, ymin: float, color) -> None:
    """A mean below the axes' floor ``ymin``: a ▼ on the floor at ``x``, labelled with its value."""
    ax.plot([x], [ymin], marker="v", markersize=9, color=color)
    ax.annotate(f"{mean:.3f}", (x, ymin), textcoords="offset points", xytext=(4, 6), fontsize=7, color=color)


def plot(table: dict, path: Path, title: str, ymin: float | None = None) -> bool:
    """Two panels (ensemble, best student) of test AUC against K (ascending), or side by side for one K;
    False when matplotlib is missing. ``ymin``: the axes' floor; a mean below it is drawn on the floor as
    ▼ labelled with its value (a collapsed variant then leaves the others readable). ``UNTRAINED_STUDENTS``
    get no best-student curve."""
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4), sharey=True)
    single_k = is_ablation(table)
    every_k = sorted({int(k) for rows in table.values() for k in rows})  # variants may stop at different Ks
    for ax, key, name in zip(axes, ("ensemble_test_auc", "best_student_test_auc"), ("ensemble", "best student")):
        if single_k:
            for i, (v, rows) in enumerate(table.items()):
                if not drawn(v, key):
                    ax.plot([], [])  # keep each variant's colour and place the same in both panels
                    continue
                (st,) = (r[key] for r in rows.values())
                bar = ax.errorbar([i], [st["mean"]], yerr=[[st["mean"] - st["min"]], [st["max"] - st["mean"]]], fmt="o",
                                  capsize=4, label=v)
                ax.plot([i] * len(st["values"]), st["values"], "x", color="grey", alpha=0.7)  # one per seed
                if ymin is not None and st["mean"] < ymin:
                    _on_floor(ax, i, st["mean"], ymin, bar.lines[0].get_color())
            if ymin is not None:
                ax.set_ylim(bottom=ymin)
            ax.set_xticks(range(len(table)), list(table), rotation=20)
            ax.set_xlabel(f"loss.variant at K={next(iter(rows))} (bar: seeds' min-max, x: each seed)")
            ax.set_title(f"{name} test AUC")
            ax.grid(alpha=0.3)
            continue
        for v, rows in table.items():
            if not drawn(v, key):
                ax.plot([], [])  # keep each variant's colour the same in both panels
                continue
            ks = sorted(rows)  # a line joins the Ks in order, however they were typed
            mean = [rows[k][key]["mean"] for k in ks]
            shown = mean if ymin is None else [max(m, ymin) for m in mean]
            (line,) = ax.plot(ks, shown, marker="o", label=v)
            ax.fill_between(ks, [rows[k][key]["min"] for k in ks], [rows[k][key]["max"] for k in ks], alpha=0.2,
                            color=line.get_color())
            for k, m in zip(ks, mean):
                if ymin is not None and m < ymin:
                    _on_floor(ax, k, m, ymin, line.get_color())
        if ymin is not None:
            ax.set_ylim(bottom=ymin)
        ax.set_xscale("log", base=2)
        ax.set_xticks(every_k, [str(k) for k in every_k])
        ax.set_xlabel("students K")
        ax.set_title(f"{name} test AUC")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test AUC")
    if not single_k:  # beside the panels, where it hides no curve
        axes[1].legend(*axes[0].get_legend_handles_labels(), title="loss.variant", loc="center left",
                       bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title)
    save_figure(fig, path)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="configs/x.py[:arg] (required unless --merge)")
    ap.add_argument("--ks", type=int, nargs="+", default=None, help="default 1 2 4 8")
    ap.add_argument("--variants", nargs="+", default=None, help="default mean kdef")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 2024 2025")
    ap.add_argument("--set", nargs="*", default=None, help="extra config overrides KEY=VALUE for every run")
    ap.add_argument("--workdir", help="where the runs go (required unless --merge)")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="train nothing: join these sweeps' records (same config and overrides; the same variants "
                         "and Ks over other seeds, or other variants over the same seeds)")
    ap.add_argument("--out", required=True, help="JSON path; the .md table and .png plot go beside it")
    ap.add_argument("--ymin", type=float, default=None,
                    help="the plot's AUC floor: means below it are drawn on it as ▼ with their value")
    args = ap.parse_args()
    plans = None
    sweep_flags = [f"--{n}" for n in ("config", "ks", "variants", "seeds", "set", "workdir") if getattr(args, n) is not None]
    if args.merge and sweep_flags:
        ap.error(f"--merge trains nothing and joins records as they are: {' '.join(sweep_flags)} would be ignored")
    args.ks, args.variants = args.ks or [1, 2, 4, 8], args.variants or ["mean", "kdef"]
    args.seeds, args.set = args.seeds or [2024, 2025], args.set or []
    try:
        if args.merge:
            check_out(args.out, inputs=args.merge, kind="scaling.py")
        elif not (args.config and args.workdir):
            ap.error("--config and --workdir are required unless --merge")
        else:
            for flag, values in (("--ks", args.ks), ("--variants", args.variants), ("--seeds", args.seeds)):
                check_unique(flag, values)
            args.ks = sorted(args.ks)  # the table's rows and the plot's lines go by K, however they were typed
            plans = plan_sweep(args.config, args.ks, args.variants, args.seeds, args.workdir, args.set)
            check_out(args.out, [wd for plan in plans.values() for _, wd, _ in plan], [args.config.split(":")[0]],
                      kind="scaling.py")
    except ValueError as e:
        ap.error(str(e))
    if args.merge:
        try:
            record = merge(args.merge)
        except ValueError as e:
            ap.error(str(e))
    else:
        table = sweep(args.config, args.ks, args.variants, args.seeds, args.workdir, args.set, plans)
        record = {"config": args.config, "overrides": args.set, "seeds": args.seeds,
                  "table": {v: {str(k): s for k, s in rows.items()} for v, rows in table.items()}}
    table = {v: {int(k): rows[k] for k in sorted(rows, key=int)} for v, rows in record["table"].items()}  # Ks ascending
    mixed = mixed_code(distinct([v for rows in table.values() for cell in rows.values() for v in cell.get("software", [None])]))
    if mixed:  # reused runs, or a merged sweep, from before the code changed: the table compares across versions
        print(f"scaling.py: {mixed}", file=sys.stderr)
    out = Path(args.out)
    what = "ablation" if is_ablation(table) else "scaling K"
    write_outputs(out, record, markdown(table),
                  lambda png: plot(table, png, f"{record['config']}: {what}, seeds {record['seeds']}", args.ymin))
    best = {v: max(rows, key=lambda k: rows[k]["ensemble_test_auc"]["mean"]) for v, rows in table.items()}
    print("best K by ensemble test AUC: " + ", ".join(f"{v} K={k}" for v, k in best.items()))
    print(f"mean wall s per run: {statistics.fmean(w for rows in table.values() for s in rows.values() for w in s['wall_s']):.0f}")


if __name__ == "__main__":
    cli(main, "scaling.py")
