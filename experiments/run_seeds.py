"""Run one config over several seeds (and setting groups) and summarise test AUC / logloss.

    python experiments/run_seeds.py --config configs/frappe.py --seeds 2024 2025 2026 \
        --setting kdef_k3 model.num_students=3 \
        --setting mlp_k1 model.num_students=1 loss.variant=independent \
        --workdir runs/frappe_seeds --out experiments/results/frappe_seeds.json

Each (setting, seed) trains with ``train_and_evaluate`` in its own workdir. Every config is built and
validated before the first run trains. A finished run there is reused and a run cut short resumes
from its last checkpoint, so an interrupted sweep continues where it stopped; either only when the
run's config.json is this setting's config (else an error names the keys that differ: pick another
--workdir or setting name). The summary gives, per setting, the mean and the
per-seed values of the ensemble's and the best student's (chosen by validation AUC) test AUC and
logloss, epochs and wall time, and writes JSON plus a Markdown table.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import statistics
import sys
import time
from pathlib import Path

import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdef_jax import interrupts, report  # noqa: E402
from kdef_jax.checkpoint import CheckpointError  # noqa: E402
from kdef_jax.config import apply_overrides, base_config, check_overrides_are_read, load_config_file, validate  # noqa: E402
from kdef_jax.models.ensemble import groups_from_config  # noqa: E402
from kdef_jax.report import tolerant_stdio  # noqa: E402
from kdef_jax.run_files import (check_writable, config_changes, error_text, exit_interrupted, read_json,  # noqa: E402
                                write_atomic, write_json)
from kdef_jax.train import REPORTED_ERRORS, train_and_evaluate  # noqa: E402
from sweep_records import check_replaceable  # noqa: E402  (experiments/ is this script's folder)


def _stats(vals: list) -> dict:
    """Mean, min and max over the seeds' values; all three NaN when a value is missing (NaN, or null as a
    NaN reads back from results.json): min/max over a NaN would depend on the seeds' order."""
    vals = [float("nan") if v is None else v for v in vals]
    if any(math.isnan(v) for v in vals):
        return {"mean": math.nan, "min": math.nan, "max": math.nan, "values": vals}
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
        # each student's own test AUC inside the ensemble, by its name in results.json (one setting: the same names)
        "student_test_auc": {row["model"]: _stats([r["rows"][1 + k]["test_auc"] for r in runs])
                             for k, row in enumerate(runs[0]["rows"][1:])},
        "software": distinct([r.get("software") for r in runs]),  # None: a run from before this was recorded
    }


def distinct(items: list) -> list:
    """``items`` without repeats, in first-seen order (dicts compare by value)."""
    out = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def mixed_code(versions: list) -> str:
    """"" for runs all made by one code version (:func:`kdef_jax.report.software`), else a warning naming
    what differs between the versions (None: runs made before they recorded it)."""
    if len(distinct(versions)) < 2:
        return ""
    known = [v for v in versions if v is not None]
    values = {k: distinct([v.get(k) for v in known]) for k in sorted({k for v in known for k in v})}
    diff = [f"{k} {' / '.join(map(str, xs))}" for k, xs in values.items() if len(xs) > 1]
    old = ["runs made before they recorded their code version"] if None in versions else []
    return f"warning: runs made by {len(distinct(versions))} versions of the code: {'; '.join(diff + old)}"


def merge_summaries(a: dict, b: dict) -> dict:
    """One :func:`summarize` of the runs behind ``a`` and ``b`` (one setting, disjoint seeds): the
    per-seed lists concatenated, mean / min / max recomputed from the per-seed values."""
    twice = sorted(set(a["seeds"]) & set(b["seeds"]))
    if twice:
        raise ValueError(f"seeds {twice} are in both summaries; merge only runs of other seeds")
    def merged(k):
        if k in _STATS:
            return _stats(a[k]["values"] + b[k]["values"])
        if k == "student_test_auc":
            return {n: _stats(a[k][n]["values"] + b[k][n]["values"]) for n in a[k] if n in b[k]}
        return a[k] + b[k]

    out = {k: merged(k) for k in a if k in b and k != "software"}  # a key one summary predates is left out
    out["software"] = distinct(a.get("software", [None]) + b.get("software", [None]))  # absent: unknown
    return out


def best_marks(values, digits: int = 4) -> list[bool]:
    """True at the highest of ``values`` as shown (rounded to ``digits``; ties all True), where there are
    two or more to compare; all False for one: a table bolds its best entry, not every entry."""
    shown = [round(v, digits) for v in values]
    return [len(shown) > 1 and v == max(shown) for v in shown]


def bold_if(flag: bool, text: str) -> str:
    return f"**{text}**" if flag else text


def markdown(summary: dict) -> str:
    """One row per setting; the highest mean ensemble test AUC is bold (with a line saying so)."""
    best = dict(zip(summary, best_marks([s["ensemble_test_auc"]["mean"] for s in summary.values()])))
    lines = [
        "| setting | seeds | ensemble test AUC (mean; per seed) | ensemble logloss | best student test AUC | "
        "best student logloss | epochs | wall s | each student's test AUC (mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        per = " / ".join(f"{v:.4f}" for v in s["ensemble_test_auc"]["values"])
        lines.append(
            f"| {name} | {len(s['seeds'])} | {bold_if(best[name], format(s['ensemble_test_auc']['mean'], '.4f'))} ({per}) | "
            f"{s['ensemble_test_logloss']['mean']:.4f} | {s['best_student_test_auc']['mean']:.4f} | "
            f"{s['best_student_test_logloss']['mean']:.4f} | {', '.join(map(str, s['epochs']))} | "
            f"{statistics.fmean(s['wall_s']):.0f} | "
            + (", ".join(f"{n} {v['mean']:.4f}" for n, v in s["student_test_auc"].items()) if "student_test_auc" in s else "-")
            + " |"
        )
    if any(best.values()):
        lines += ["", "**bold**: the highest mean ensemble test AUC of the settings."]
    return "\n".join(lines)


def check_unique(flag: str, values) -> None:
    """A value given twice would be counted twice in the means: an error naming it."""
    twice = sorted({str(v) for v in values if list(values).count(v) > 1})
    if twice:
        raise ValueError(f"{flag}: {', '.join(twice)} given more than once")


SETTING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def has_test_split(data) -> bool:
    """Whether a run of ``config.data`` has test rows to report (before its data is read)."""
    if data.format == "synthetic":
        return True  # (validate: num_test >= 1)
    if data.split == "random":
        return data.split_fractions[2] > 0
    return bool(data.files.test)  # files, mod: the test split is its own file (tfds: a split name)


def plan_setting(config_path: str, name: str, overrides, seeds, workdir) -> list:
    """[(seed, run folder ``<workdir>/<name>_seed<seed>``, validated config)] of one setting; a run
    folder holding a run of another config is an error naming the keys that differ."""
    if "=" in name:
        raise ValueError(f"--setting {name}: a setting starts with its NAME, then its KEY=VALUE overrides "
                         f"(--setting NAME {name} ...)")
    if not SETTING_NAME.fullmatch(name):
        raise ValueError(f"--setting {name!r}: a setting's name names its run folders <name>_seed<s>: use letters, "
                         f"digits and _ . + - only")
    seeded = [o for o in overrides if o.partition("=")[0].strip() == "seed"]
    if seeded:  # it would be overridden by each --seeds value without a word
        raise ValueError(f"setting {name!r}: {seeded[0]}: the seeds come from --seeds")
    if Path(workdir).exists() and not Path(workdir).is_dir():
        raise ValueError(f"--workdir {workdir}: a file, not a folder")
    plan = []
    for seed in seeds:
        try:
            config = load_config_file(config_path)
            apply_overrides(config, [*overrides, f"seed={seed}", "train.progress=False"])
            validate(config)
            check_overrides_are_read(config, load_config_file(config_path))
        except FileNotFoundError as e:
            raise ValueError(f"--config {config_path}: {e}") from None
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"setting {name!r}: {e}") from None
        if not has_test_split(config.data):
            raise ValueError(f"setting {name!r}: its data has no test split (data.split={config.data.split!r}, "
                             f"data.files.test={config.data.files.test!r}); the summaries are of test metrics")
        wd = Path(workdir) / f"{name}_seed{seed}"
        changes = run_config_changes(wd, config)
        if changes:
            diff = ", ".join(f"{k} {a!r} (there) vs {b!r} (this setting)" for k, (a, b) in changes.items())
            raise ValueError(f"{wd} holds a run of another config ({diff}); choose another --workdir or setting name")
        plan.append((seed, wd, config))
    return plan


def run_config_changes(wd: Path, config) -> dict:
    """Keys of ``config`` that differ from the run's config.json (a key it predates compares as its
    default; model.embedding_rows=0 resolves at train time)."""
    changes = config_changes(wd, config, ignore=("resume", "train.progress"), defaults=base_config())
    if changes.get("model.embedding_rows", (None, None))[1] == 0:
        del changes["model.embedding_rows"]
    return changes


class SweepProgress:
    """The sweep's place for its log lines: "run i/n", and the time left estimated from the runs trained
    so far (reused runs take no time)."""

    def __init__(self, total: int):
        self.total, self.started, self.trained, self.trained_s = total, 0, 0, 0.0

    def start(self) -> str:
        self.started += 1
        return f"run {self.started}/{self.total}"

    def trained_one(self, seconds: float) -> None:
        self.trained, self.trained_s = self.trained + 1, self.trained_s + seconds

    def left(self) -> str:
        """", about 25 min left" once a run was trained (at most every run after this one trains)."""
        if not self.trained or self.started >= self.total:
            return ""
        s = (self.total - self.started) * self.trained_s / self.trained
        return f", at most about {s / 60:.0f} min left" if s >= 60 else f", at most about {s:.0f} s left"


AGAIN = "run the same command again: finished runs are reused and the interrupted one resumes"


@functools.cache
def _software_now() -> dict:
    return report.software()


def other_code(results: dict, now: dict | None = None) -> str:
    """"" when a reused run's results.json was made by this code (``report.software()``), else a warning
    naming what differs: a table that mixes it with fresh runs mixes two versions of the code."""
    was = results.get("software")
    now = now if now is not None else _software_now()
    if was is None:
        return " (warning: made before runs recorded their code version; it may be older code)"
    diff = [f"{k} {was.get(k)} → {now.get(k)}" for k in now if was.get(k) != now.get(k)]
    return f" (warning: made by other code: {', '.join(diff)})" if diff else ""


def run_planned(name: str, plan: list, progress: SweepProgress | None = None, prog: str = "run_seeds.py") -> list:
    """results.json of each run of :func:`plan_setting`: reused when finished, resumed from its last
    checkpoint when cut short, else trained. A run that fails stops the sweep with one line naming the
    run and the error (exit status 2; Ctrl-C: 130); the same command then continues it."""
    progress = progress or SweepProgress(len(plan))
    runs = []
    for seed, wd, config in plan:
        step = progress.start()
        if (wd / "results.json").exists():
            res = read_json(wd / "results.json")
            print(f"[{step}] [{name} seed {seed}] reusing {wd / 'results.json'}{other_code(res)}")
        else:
            if (wd / "checkpoints").is_dir():
                config.resume = True  # an interrupted run: continue from its last epoch
            print(f"[{step}] [{name} seed {seed}] {'resuming' if config.resume else 'training'} in {wd}"
                  f"{progress.left()}", flush=True)
            t0 = time.perf_counter()
            try:
                with interrupts.remembered():  # a Ctrl-C swallowed by a gc callback stops the sweep at the next step
                    res = train_and_evaluate(config, wd)
            except REPORTED_ERRORS as e:
                print(f"\n[{step}] [{name} seed {seed}] failed in {wd}\n{error_text(prog, e, AGAIN)}\n"
                      f"{prog}: once that is fixed, {AGAIN}", file=sys.stderr)
                sys.exit(2)
            except KeyboardInterrupt:
                exit_interrupted(f"\n[{step}] [{name} seed {seed}] interrupted in {wd}; {AGAIN}")
            progress.trained_one(time.perf_counter() - t0)
        if "test_auc" not in res.get("rows", [{}])[0]:
            raise ValueError(f"{wd / 'results.json'}: no test AUC (the config has no test split); run_seeds summarises test metrics")
        runs.append(res)
    return runs


def check_out(out: Path, run_dirs=(), inputs=(), *, kind: str) -> Path:
    """``--out`` before any work: a .json path whose .md/.png siblings are other files, not a folder,
    not an input (``inputs``: the config file, --merge's records), not inside a run folder (its
    results.json, checkpoints), and not a file other than an earlier record of this script (``kind``:
    :func:`check_replaceable`), which is replaced. Only .json: a config path given by mistake
    (configs/frappe.py) would be replaced by the summary."""
    out = Path(out)
    if out.suffix != ".json":
        raise ValueError(f"--out {out}: give a .json path (the .md table, and a .png plot where the script draws "
                         f"one, are written beside it)")
    check_writable(out, "--out")
    for sibling in (out.with_suffix(".md"), out.with_suffix(".png")):
        if sibling.is_dir():
            raise ValueError(f"--out {out}: {sibling}, written beside it, is a directory; give another name")
    target = out.resolve()
    for p in inputs:
        if Path(p).resolve() in (target, target.with_suffix(".md"), target.with_suffix(".png")):
            raise ValueError(f"--out {out} would overwrite the input {p}")
    for d in run_dirs:
        if Path(d).resolve() in target.parents:
            raise ValueError(f"--out {out} is inside the run folder {d}")
    check_replaceable(out, kind)
    return out


def write_outputs(out: Path, record, md: str, plot=None) -> None:
    """Writes ``record`` as JSON to ``out`` and the markdown table ``md`` beside it (.md), and prints the
    table. ``plot(png_path) -> bool`` draws the .png beside them; False (no matplotlib) removes any
    earlier run's .png there, so no plot is left beside numbers it does not show."""
    write_json(out, record)  # strict JSON: a NaN (no timed step in a run) is null
    write_atomic(out.with_suffix(".md"), lambda fh: fh.write(md + "\n"))
    print(md)
    if plot is not None and not plot(out.with_suffix(".png")):
        out.with_suffix(".png").unlink(missing_ok=True)
        print("[plot] matplotlib is not installed, so no PNG (pip install 'kdef-jax[plots]')")


RUN_DIR = re.compile(r"^(?P<variant>\w+?)_k(?P<k>\d+)_seed(?P<seed>\d+)$")  # experiments/scaling.py's run folders


def _check_run_name(d: Path, variant: str, k: int, seed: int) -> None:
    """The run in folder ``d`` is what its name says (its config.json's loss.variant, student count and
    seed), or a ValueError: a folder named by hand must not enter a table as another cell."""
    c = read_json(d / "config.json") if (d / "config.json").is_file() else None
    if c is None:
        return
    count = sum(g.count for g in groups_from_config(ml_collections.ConfigDict(c["model"])))
    found = {"loss.variant": (c["loss"]["variant"], variant), "students": (count, k), "seed": (c["seed"], seed)}
    wrong = {key: v for key, v in found.items() if v[0] != v[1]}
    if wrong:
        raise ValueError(f"{d}: the name says {variant} K={k} seed {seed}, its config.json " + ", ".join(
            f"{key} {there!r}" for key, (there, _) in wrong.items()) + "; rename or move the folder")


def finished_runs(*workdirs, variants=None, warn: bool = True) -> dict:
    """{variant: {K: [(seed, run folder), ...]}}, Ks and seeds ascending, of the finished runs (a
    results.json) named ``<variant>_k<K>_seed<s>`` under every one of ``workdirs`` (sweeps of other
    variants or seeds, joined; a run in two of them is an error); only ``variants``, in that order,
    when given (each must have runs). An unfinished run folder (no results.json) is left out, with a
    warning on stderr naming it (its cell then averages over fewer seeds), unless ``warn`` is False."""
    out: dict = {}
    unfinished: dict = {}  # {(variant, K): [(seed, run folder), ...]}
    for wd in workdirs:
        if not Path(wd).is_dir():
            raise ValueError(f"--workdir {wd}: {'a file, not a folder' if Path(wd).exists() else 'no such folder'}")
        for d in sorted(Path(wd).iterdir()):
            m = RUN_DIR.match(d.name)
            if not (m and d.is_dir()) or (variants is not None and m["variant"] not in variants):
                continue
            v, k, seed = m["variant"], int(m["k"]), int(m["seed"])
            if not (d / "results.json").exists():
                unfinished.setdefault((v, k), []).append((seed, d))
                continue
            _check_run_name(d, v, k, seed)
            cell = out.setdefault(v, {}).setdefault(k, [])
            if seed in [s for s, _ in cell]:
                raise ValueError(f"{v} K={k} seed {seed} is in two of the workdirs {' '.join(map(str, workdirs))}")
            cell.append((seed, d))
    missing = [v for v in variants or () if v not in out]
    if missing:
        raise ValueError(f"--variants {' '.join(missing)}: no finished runs of it under {' '.join(map(str, workdirs))}")
    for (v, k), runs in sorted(unfinished.items()) if warn else ():
        done = {s for s, _ in out.get(v, {}).get(k, [])}
        left = sorted((s, d) for s, d in runs if s not in done)  # a seed finished in another workdir is not missing
        if left:
            seeds = len(done | {s for s, _ in left})
            print(f"[runs] warning: unfinished run(s) left out (no results.json): {', '.join(str(d) for _, d in left)}; "
                  f"so {v} K={k} " + (f"averages over {len(done)} seed(s), not {seeds}" if done else
                                      "has no finished run and is left out of the table"), file=sys.stderr)
    return {v: {k: sorted(out[v][k]) for k in sorted(out[v])} for v in (variants or out)}


def analysis_main(doc: str, collect, markdown, plot, kind: str) -> None:
    """The command line of an analysis of finished sweep runs (experiments/collapse.py, findings.py):
    ``--workdir`` folder(s), ``--variants``, ``--out``; ``collect(*workdirs, variants=)`` → found,
    written as JSON (keys as strings), ``markdown(found)`` and ``plot(found, png)``; ``kind``: the script's
    file name (:func:`check_out`)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, nargs="+", help="the folder(s) of experiments/scaling.py sweeps")
    ap.add_argument("--variants", nargs="+", help="only these loss.variant runs, in this order (default: all found)")
    ap.add_argument("--out", required=True, help="JSON path; the .md table and .png plot go beside it")
    args = ap.parse_args()
    try:
        check_unique("--variants", args.variants or [])
        runs = finished_runs(*args.workdir, variants=args.variants, warn=False)  # collect() warns once
        out = check_out(args.out, [d for ks in runs.values() for cell in ks.values() for _, d in cell], kind=kind)
        found = collect(*args.workdir, variants=args.variants)
    except (ValueError, FileNotFoundError, CheckpointError) as e:  # e.g. a run whose checkpoints were deleted
        ap.error(str(e))
    if not found:
        raise SystemExit(f"no finished <variant>_k<K>_seed<s> runs under {' '.join(args.workdir)}")
    write_outputs(out, {v: {str(k): cell for k, cell in ks.items()} for v, ks in found.items()}, markdown(found),
                  lambda png: plot(found, png))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="configs/x.py[:arg]")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026])
    ap.add_argument("--setting", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
                    help="a named group of config overrides; repeat for several settings")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True, help="JSON summary path (a .md table is written beside it)")
    args = ap.parse_args()
    try:
        check_unique("--seeds", args.seeds)
        check_unique("--setting names", [name for name, *_ in args.setting])
        plans = {name: plan_setting(args.config, name, overrides, args.seeds, args.workdir)
                 for name, *overrides in args.setting}
        out = check_out(args.out, [wd for plan in plans.values() for _, wd, _ in plan], [args.config.split(":")[0]],
                        kind="run_seeds.py")
    except ValueError as e:
        ap.error(str(e))
    summary, progress = {}, SweepProgress(sum(len(plan) for plan in plans.values()))
    for name, *overrides in args.setting:
        summary[name] = summarize(run_planned(name, plans[name], progress))
        summary[name]["overrides"] = overrides
    mixed = mixed_code(distinct([v for cell in summary.values() for v in cell["software"]]))
    if mixed:  # reused runs from before the code changed: the table compares across versions
        print(f"run_seeds.py: {mixed}", file=sys.stderr)
    write_outputs(out, {"config": args.config, "summary": summary}, markdown(summary))


def cli(main_fn, prog: str) -> None:
    """Run a sweep's ``main_fn`` as a command: a Ctrl-C anywhere (between two runs, while tables are
    written; one inside a run names the run) ends it with one line and status 130, not a traceback."""
    tolerant_stdio()
    try:
        main_fn()
    except KeyboardInterrupt:
        exit_interrupted(f"\n{prog}: interrupted; {AGAIN}")


if __name__ == "__main__":
    cli(main, "run_seeds.py")
