"""Where a jitted program's time goes, op by op, from a ``jax.profiler`` trace (any backend).

    python benchmarks/device_profile.py --k 10 --batch 10000 --programs ensemble one_student train --out prof.json

For each program (the K=10 ensemble predictor, one student alone, the full KDEF train step; Criteo
shape, synthetic ids): its wall time per call, untraced, interleaved as in ``latency.py``; then
``--calls`` calls under ``jax.profiler.trace``, and from the trace the device time per call, by op.
An op event is one with ``hlo_op`` and ``hlo_module`` stats (a GPU kernel or a CPU thunk) of the
program's module; on a GPU device plane only its "XLA Ops" line counts (its kernel lines repeat
it). Per call: ``busy_ms`` = the union of the op intervals (time the device was doing the program's
work), ``gap_ms`` = wall − busy (dispatch, launch and sync latency, or idle), ``traced_gap_ms`` the
same against the traced calls' own wall time (XLA:GPU runs its command buffers op by op while
tracing), and the top ops by summed time. The untraced wall times are written first, and a
program whose trace fails records its error without losing the others. The question it answers, e.g.: is one student's 0.29 ms at batch 10,000 on an H200
its kernels or the host around them? On a CPU the numbers are a smoke test only: XLA:CPU runs
its dots asynchronously, and their events time the launch, not the work.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

from common import (  # noqa: E402
    Runner, criteo_batches, criteo_model, machine, mlp_group, positive_int, time_interleaved, write_json,
)
from kdef_jax.run_files import output_file_arg  # noqa: E402
from kdef_jax.export import make_predictor  # noqa: E402
from train_throughput import step_runner  # noqa: E402

PROGRAMS = ("ensemble", "one_student", "train")


def op_events(profile, module_substring: str) -> list:
    """[(hlo_op, start_ns, end_ns)] of the ops of the modules whose name contains ``module_substring``."""
    out = []
    for plane in profile.planes:
        lines = list(plane.lines)
        if plane.name.startswith("/device:") and any(line.name == "XLA Ops" for line in lines):
            lines = [line for line in lines if line.name == "XLA Ops"]
        seen = set()  # one event on two lines of a plane (e.g. a kernel on a per-stream and a merged line) counts once
        for line in lines:
            for e in line.events:
                stats = dict(e.stats)
                if "hlo_op" in stats and module_substring in str(stats.get("hlo_module", "")):
                    ev = (str(stats["hlo_op"]), e.start_ns, e.start_ns + e.duration_ns)
                    if ev not in seen:
                        seen.add(ev)
                        out.append(ev)
    return out


def kernel_names(profile, module_substring: str) -> dict:
    """{hlo_op: [names of the events that ran it]}, where those differ from the op's name: on a GPU
    the kernels of each op (e.g. whether a dot ran as a TF32 tensor-core GEMM or as an SGEMM)."""
    out = defaultdict(set)
    for plane in profile.planes:
        for line in plane.lines:
            for e in line.events:
                stats = dict(e.stats)
                op = str(stats.get("hlo_op", ""))
                if op and e.name != op and module_substring in str(stats.get("hlo_module", "")):
                    out[op].add(e.name)
    return {op: sorted(names) for op, names in out.items()}


def union_ns(intervals) -> float:
    """Total length of the union of ``[(start, end)]``."""
    total, cur_start, cur_end = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_end is None or s > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = s, e
        else:
            cur_end = max(cur_end, e)
    return total + (cur_end - cur_start if cur_end is not None else 0.0)


def summarize(events, calls: int, wall_ms: float, top: int, kernels=None) -> dict:
    """Per-call busy time, gap to the wall time and the ``top`` ops by summed time (with their
    ``kernels``' names where known)."""
    kernels = kernels or {}
    by_op = defaultdict(lambda: [0.0, 0])
    for op, s, e in events:
        by_op[op][0] += e - s
        by_op[op][1] += 1
    busy_ms = union_ns([(s, e) for _, s, e in events]) / calls / 1e6
    summed_ms = sum(t for t, _ in by_op.values()) / calls / 1e6
    ops = sorted(by_op.items(), key=lambda kv: -kv[1][0])
    return {
        "wall_ms": wall_ms, "busy_ms": busy_ms, "gap_ms": wall_ms - busy_ms, "op_ms_summed": summed_ms,
        "ops_per_call": sum(n for _, n in by_op.values()) / calls, "distinct_ops": len(by_op),
        "top_ops": [{"op": op, "ms": t / calls / 1e6, "share": t / calls / 1e6 / summed_ms if summed_ms else 0.0,
                     "events_per_call": n / calls, **({"kernels": kernels[op]} if op in kernels else {})}
                    for op, (t, n) in ops[:top]],
    }


def traced(runner: Runner, calls: int, trace_dir: str):
    """(``jax.profiler.ProfileData``, wall seconds) of ``calls`` calls of ``runner`` (already compiled)
    under the profiler (XLA:GPU runs command buffers op by op while tracing: that wall is the one the
    trace's busy time belongs to)."""
    with jax.profiler.trace(trace_dir):
        seconds = runner.run(calls)
    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not paths:
        raise RuntimeError(f"jax.profiler.trace wrote no *.xplane.pb under {trace_dir}")
    return jax.profiler.ProfileData.from_file(paths[-1]), seconds


def build_runners(programs, k: int, batch: int) -> dict:
    batches = criteo_batches(batch, n=2)
    runners = {}
    if "ensemble" in programs or "one_student" in programs:
        model = criteo_model([mlp_group(k)])
        variables = jax.jit(lambda ids: model.init(jax.random.PRNGKey(0), ids, False))(batches[0]["ids"][:1])
        ids = [(jax.device_put(b["ids"]),) for b in batches]
        for name, what in (("ensemble", "ensemble"), ("one_student", 0)):
            if name in programs:
                runners[name] = Runner(make_predictor(model, variables, what), ids)
    if "train" in programs:
        runners["train"] = step_runner([mlp_group(k)], batches)
    return runners


def module_name(name: str) -> str:
    """The substring of the XLA module name of each program (jit of export.apply / steps.train_step)."""
    return "train_step" if name == "train" else "apply"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=positive_int, default=10)
    ap.add_argument("--batch", type=positive_int, default=10_000)
    ap.add_argument("--programs", nargs="+", default=list(PROGRAMS), choices=PROGRAMS)
    ap.add_argument("--calls", type=positive_int, default=10, help="calls traced per program")
    ap.add_argument("--steps", type=positive_int, default=10, help="calls per round of the untraced wall-time measurement")
    ap.add_argument("--rounds", type=positive_int, default=3)
    ap.add_argument("--top", type=positive_int, default=12)
    ap.add_argument("--out", default=None, type=output_file_arg)
    args = ap.parse_args()
    runners = build_runners(args.programs, args.k, args.batch)
    walls = time_interleaved(list(runners.values()), warmup=2, steps=args.steps, rounds=args.rounds, min_round_s=0.05)
    record = {"benchmark": "device_profile", "K": args.k, "batch": args.batch, "calls_traced": args.calls,
              "machine": machine(), "programs": {}}
    for (name, runner), (wall, _, _) in zip(runners.items(), walls):  # the wall times first: kept if tracing fails
        record["programs"][name] = {"wall_ms": wall * 1e3, "first_call_s": runner.first_call_s}
        print(f"{name:12s} wall {wall * 1e3:9.3f} ms (untraced; first call {runner.first_call_s:.1f} s)", flush=True)
    write_json(args.out, record, echo=False)
    status = 0
    for (name, runner), (wall, _, _) in zip(runners.items(), walls):  # JSON after each: a cut-short run keeps it
        try:
            with tempfile.TemporaryDirectory() as d:
                profile, traced_s = traced(runner, args.calls, d)
            events = op_events(profile, module_name(name))
            if not events:
                raise RuntimeError(f"the trace holds no op events of a module named *{module_name(name)}*")
        except Exception as e:  # noqa: BLE001 - one program's failed trace must not lose the others
            record["programs"][name]["error"] = f"{type(e).__name__}: {e}"
            print(f"{name:12s} trace failed: {type(e).__name__}: {e}", flush=True)
            write_json(args.out, record, echo=False)
            status = 1
            continue
        s = summarize(events, args.calls, wall * 1e3, args.top, kernel_names(profile, module_name(name)))
        s["first_call_s"] = runner.first_call_s
        s["traced_wall_ms"] = traced_s / args.calls * 1e3
        s["traced_gap_ms"] = s["traced_wall_ms"] - s["busy_ms"]
        if jax.default_backend() == "cpu":
            s["note"] = "XLA:CPU: dot events time their asynchronous launch only; busy/gap mean something on a GPU"
        record["programs"][name] = s
        print(f"{name:12s} wall {s['wall_ms']:9.3f} ms  busy {s['busy_ms']:9.3f} ms  gap {s['gap_ms']:8.3f} ms  "
              f"(traced wall {s['traced_wall_ms']:.3f} ms)  {s['ops_per_call']:.0f} ops/call; top: "
              + ", ".join(f"{o['op']} {o['ms']:.3f}" for o in s["top_ops"][:4]), flush=True)
        write_json(args.out, record, echo=False)
    sys.exit(status)


if __name__ == "__main__":
    main()
