"""Prediction latency: the K-student ensemble vs one student alone, Criteo shape, jitted.

    python benchmarks/latency.py --k 10 --batches 1 256 10000 --out latency.json

Both predictors include the shared embedding lookup and the sigmoid; "one student" is the
network a latency-bound deployment serves (``kdef_jax.export.extract_student``). ``--hlo-out FILE``
also writes every predictor's optimized HLO at the largest batch into one text file (what the
backend runs: its fusions, GEMM custom calls and their count), to read where a predictor spends
more than its GEMM time, e.g. one student on a GPU. ``--fold-bn`` adds every predictor again with its
BatchNorms folded into the Dense layers before them (``kdef_jax.export.fold_batchnorm``; names end in
``_folded``) and reports the folded one student's speed-up over the folded ensemble too.

Each call is timed alone: dispatched, run and waited for before the next (a served request's latency).
``--pipelined`` times back-to-back calls with one wait per round instead (a throughput: at batch 1 on
CPU 1.6-3x less time per call, the dispatch overlapping the previous call's run; files from before
2026-12-07 were measured so, and say ``"timing": null``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

from common import (  # noqa: E402
    Runner, criteo_batches, criteo_model, checked_spec_groups, machine, mlp_group, nonnegative_float, positive_int,
    time_interleaved, write_json,
)
from kdef_jax.run_files import output_file_arg  # noqa: E402
from kdef_jax.export import make_predictor  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=positive_int, default=None, help="K MLP students (default 10)")
    ap.add_argument("--batches", type=positive_int, nargs="+", default=[1, 256, 10_000])
    ap.add_argument("--steps", type=positive_int, default=20)
    ap.add_argument("--rounds", type=positive_int, default=3)
    ap.add_argument("--min-round-s", type=nonnegative_float, default=0.05,
                    help="more calls per round until a round lasts this long (sub-ms GPU calls; 0: --steps only)")
    ap.add_argument("--students", default="", help='a student spec instead of K MLPs, e.g. "ipnn:1,final:1,ecn:1"')
    ap.add_argument("--set", nargs="*", default=[], help="model config overrides for --students")
    ap.add_argument("--out", default=None, type=output_file_arg)
    ap.add_argument("--hlo-out", default=None, type=output_file_arg, help="write each predictor's optimized HLO (largest batch) here")
    ap.add_argument("--fold-bn", action="store_true", help="also time each predictor with BatchNorm folded into its Dense layers")
    ap.add_argument("--pipelined", action="store_true",
                    help="time back-to-back calls, one wait per round (a throughput), not each call waited for (latency)")
    args = ap.parse_args()
    groups = checked_spec_groups(ap, args, mlp_only=("k",))
    args.k = args.k or 10
    if len(set(args.batches)) < len(args.batches):
        ap.error(f"--batches {' '.join(map(str, args.batches))}: a size given twice would be measured twice")
    model = criteo_model(groups or [mlp_group(args.k)])
    ids0 = criteo_batches(2, n=1)[0]["ids"]
    variables = jax.jit(lambda ids: model.init(jax.random.PRNGKey(0), ids, False))(ids0)
    predictors = {"ensemble": make_predictor(model, variables)}
    if args.students:  # every student alone; "one_student" = the fastest
        for k in range(model.num_students):
            predictors[f"student_{k}"] = make_predictor(model, variables, k)
    else:
        predictors["one_student"] = make_predictor(model, variables, 0)
    if args.fold_bn:
        whats = {name: ("ensemble" if name == "ensemble" else (0 if name == "one_student" else int(name.split("_")[1])))
                 for name in predictors}
        predictors.update({f"{name}_folded": make_predictor(model, variables, what, fold_bn=True) for name, what in whats.items()})
    rows = []
    for b in args.batches:
        ids = [jax.device_put(x["ids"]) for x in criteo_batches(b, n=2)]
        row = {"batch": b}
        steps = args.steps if b <= 1024 else max(3, args.steps // 4)
        runners = [Runner(fn, [(x,) for x in ids], sync_each=not args.pipelined) for fn in predictors.values()]
        timings = time_interleaved(runners, warmup=2, steps=steps, rounds=args.rounds, min_round_s=args.min_round_s)
        for name, (med, lo, hi), r in zip(predictors, timings, runners):
            row[name] = {"ms": med * 1e3, "ms_min": lo * 1e3, "ms_max": hi * 1e3, "samples_per_s": b / med,
                         "first_call_s": r.first_call_s, "calls_per_round": r.steps}
        for suffix in ("", "_folded") if args.fold_bn else ("",):
            ens = "ensemble" + suffix
            students = [k for k in predictors if not k.startswith("ensemble") and k.endswith("_folded") == bool(suffix)]
            fastest = min(students, key=lambda k: row[k]["ms"])
            row["fastest_student" + suffix] = fastest
            row["one_student_speedup" + suffix] = row[ens]["ms"] / row[fastest]["ms"]
            print(f"batch {b:6d}: {ens} {row[ens]['ms']:8.2f} ms, fastest student ({fastest}) "
                  f"{row[fastest]['ms']:8.2f} ms, speedup {row['one_student_speedup' + suffix]:.2f}x", flush=True)
        rows.append(row)
        record = {"benchmark": "latency", "K": model.num_students, "students": args.students or f"mlp:{args.k}",
                  "timing": "pipelined" if args.pipelined else "each call waited for", "args": vars(args),
                  "machine": machine(), "rows": rows}
        write_json(args.out, record, echo=b == args.batches[-1])  # after every batch size: a cut-short run keeps it
        if args.hlo_out and b == max(args.batches):  # as soon as its programs are compiled (cached): not lost to a cut
            write_hlo(args.hlo_out, predictors, ids[0])


def optimized_hlo(predictor, ids) -> str:
    """The compiled program's HLO text of ``predictor`` (a ``make_predictor`` partial) at ``ids``' shape."""
    return predictor.func.lower(*predictor.args, ids).compile().as_text()


def write_hlo(path: str, predictors: dict, ids) -> None:
    """One file, a section per predictor, each headed by the counts of its entry computation's
    fusions, dots (XLA:CPU's GEMMs) and custom calls (cuBLAS GEMMs on a GPU)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # (as --out's)
    with open(path, "w") as fh:
        for name, fn in predictors.items():
            text = optimized_hlo(fn, ids)
            head = [line for line in text.splitlines() if line.startswith("ENTRY")]
            entry = text[text.index(head[0]):] if head else text
            counts = ", ".join(f"{entry.count(f' {op}(')} {op}" for op in ("fusion", "dot", "custom-call"))
            fh.write(f"===== {name} batch {ids.shape[0]}: {counts} =====\n{text}\n")


if __name__ == "__main__":
    main()
