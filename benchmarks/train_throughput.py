"""Training throughput of the full KDEF step on the Criteo shape, vs a Python loop and the GEMM ceiling.

    python benchmarks/train_throughput.py --ks 1 2 3 6 10 16 32 --out train_throughput.json

The full step = embedding gather (910,747×16 table), K MLP students [400,400,400] with BatchNorm and
dropout 0.1, the KDEF loss, embedding L2 over the whole table, global-norm clipping, dense Adam and
BatchNorm updates, at batch 10,000 on synthetic ids (4 distinct batches cycled, so input I/O is
excluded exactly as in the reference harness). For every K, in the same process:
  group  — the K students as ONE module with stacked [K, ...] variables, as the library runs it
           (model.group_impl="auto": batched nn.vmap on accelerators, unrolled per student on CPU);
  vmap   — the same module forced to the batched nn.vmap form (group_impl="vmap");
  loop   — the same K students as K separate modules in a Python loop inside the same jit;
  gemm   — the matmul ceiling: only the forward+backward GEMMs of the K students' layers (jnp.dot).
Achieved GFLOP/s counts the MLP work only, 3·2·K·570,000 (624·400 + 2·400² + 400·1 multiply-adds) FLOP per sample (as the reference does).
All variants of one K are compiled and warmed up first, then timed interleaved: every round runs each
of them, in an order that rotates from round to round (machine drift hits all alike); medians of rounds.
On a small VM the same program also runs a few % faster or slower from one process to the next, so
``--processes N`` repeats every K in N fresh processes (building the variants in a rotated order,
since the first one built in a process runs slightly slower) and reports the median over processes,
with each process's group-vs-loop ratio (compare variants by those ratios, not by single runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from common import (  # noqa: E402
    Runner,
    HIDDEN,
    MLP_MACS,
    checked_spec_groups,
    criteo_batches,
    criteo_model,
    default_train_config,
    machine,
    mlp_group,
    positive_int,
    time_interleaved,
    write_json,
)
from kdef_jax.run_files import output_file_arg  # noqa: E402
from kdef_jax.steps import create_train_state, make_optimizer, make_train_step  # noqa: E402


def step_runner(groups, batches, compute_dtype="float32", group_impl="auto") -> Runner:
    """The full KDEF train step of ``groups`` on ``batches``, ready to time (state carried, donated)."""
    model = criteo_model(groups).clone(compute_dtype=compute_dtype, group_impl=group_impl)
    c = default_train_config()
    tx = make_optimizer(c.optim)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), batches[0]["ids"].shape[1])
    step = make_train_step(model, tx, c.loss, c.optim.embedding_l2)
    key = jax.random.PRNGKey(1)
    dev = [(jax.device_put(b), key) for b in batches]
    return Runner(step, dev, carry=state)


def gemm_runner(k, batch, dtype=jnp.float32) -> Runner:
    """The fwd+bwd GEMMs of K students (X·W, dY·Wᵀ, Xᵀ·dY per layer).

    The first layer's input (the embeddings) is shared by all students, so its three GEMMs are the
    flat [B, 624]×[624, K·400] products the vmapped model also compiles to; deeper layers are
    batched over K.
    """
    dims = [624, *HIDDEN, 1]
    rng = np.random.default_rng(0)
    x0 = jnp.asarray(rng.normal(size=(batch, dims[0])), dtype)
    xs = [jnp.asarray(rng.normal(size=(k, batch, i)), dtype) for i in dims[1:-1]]
    ws = [jnp.asarray(rng.normal(size=(k, i, o)) * 0.05, dtype) for i, o in zip(dims[:-1], dims[1:])]
    dys = [jnp.asarray(rng.normal(size=(k, batch, o)), dtype) for o in dims[1:]]

    @jax.jit
    def gemms(x0, xs, ws, dys):
        out = [
            jnp.einsum("bi,kio->kbo", x0, ws[0]),
            jnp.einsum("kbo,kio->bi", dys[0], ws[0]),
            jnp.einsum("bi,kbo->kio", x0, dys[0]),
        ]
        for x, w, dy in zip(xs, ws[1:], dys[1:]):
            out.append(jnp.einsum("kbi,kio->kbo", x, w))
            out.append(jnp.einsum("kbo,kio->kbi", dy, w))
            out.append(jnp.einsum("kbi,kbo->kio", x, dy))
        return out

    return Runner(gemms, [(x0, xs, ws, dys)])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=positive_int, nargs="+", default=None, help="default 1 2 3 6 10 16 32")
    ap.add_argument("--batch", type=positive_int, default=10_000)
    ap.add_argument("--variants", nargs="+", default=None, choices=["group", "vmap", "loop", "gemm"],
                    help="default group vmap loop gemm")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--loop-max-k", type=positive_int, default=16, help="skip the Python-loop variant above this K")
    ap.add_argument("--warmup", type=positive_int, default=2, help="untimed calls first (the first compiles)")
    ap.add_argument("--steps", type=positive_int, default=5)
    ap.add_argument("--rounds", type=positive_int, default=3)
    ap.add_argument("--students", default="", help='a student spec instead of K MLPs, e.g. "ipnn:1,final:1,ecn:1"')
    ap.add_argument("--set", nargs="*", default=[], help="model config overrides for --students, e.g. model.ecn.num_cross_layers=4")
    ap.add_argument("--mflop-per-sample", type=float, default=0.0, help="forward+backward MFLOP/sample of --students")
    ap.add_argument("--processes", type=positive_int, default=1, help="repeat every K in this many fresh processes")
    ap.add_argument("--out", default=None, type=output_file_arg)
    args = ap.parse_args()
    if args.processes > 1 and args.students:
        ap.error("--processes repeats the K sweep; with --students run the command once per process instead")
    groups = checked_spec_groups(ap, args, ("set", "mflop_per_sample"), mlp_only=("ks", "variants"))
    args.ks = args.ks or [1, 2, 3, 6, 10, 16, 32]
    args.variants = args.variants or ["group", "vmap", "loop", "gemm"]
    for flag, values in (("--ks", args.ks), ("--variants", args.variants)):
        if len(set(values)) < len(values):
            ap.error(f"{flag} {' '.join(map(str, values))}: a value given twice would be measured (and written) twice")
    if args.processes > 1:
        return across_processes(args)
    batches = criteo_batches(args.batch)
    rows = []
    if args.students:  # one model of any students (e.g. KDEF_Latest), full step only
        runner = step_runner(groups, batches, args.dtype)
        (med, lo, hi), = time_interleaved([runner], warmup=args.warmup, steps=args.steps, rounds=args.rounds)
        row = {"students": args.students, "overrides": args.set, "batch": args.batch, "dtype": args.dtype,
               "step_s": med, "step_s_min": lo, "step_s_max": hi, "samples_per_s": args.batch / med,
               "first_call_s": runner.first_call_s}
        if args.mflop_per_sample:
            row["gflops"] = args.mflop_per_sample * 1e6 * args.batch / med / 1e9
        print(f"{args.students}: {med * 1e3:.1f} ms/step, {args.batch / med:,.0f} samples/s "
              f"(first call {runner.first_call_s:.1f} s)", flush=True)
        write_json(args.out, {"benchmark": "train_throughput", "machine": machine(), "args": vars(args), "rows": [row]})
        return
    gemm_dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    for k in args.ks:
        flop = 6 * k * MLP_MACS * args.batch  # MLP FLOPs per step
        row = {"K": k, "batch": args.batch, "dtype": args.dtype, "mlp_gflop_per_step": flop / 1e9}
        variants = [v for v in dict.fromkeys(args.variants) if not (v == "loop" and k > args.loop_max_k)]
        runners = []
        for v in variants:  # build (compile on warm-up) every variant of this K, then time them interleaved
            if v == "gemm":
                runners.append(gemm_runner(k, args.batch, gemm_dtype))
            elif v == "loop":
                runners.append(step_runner([mlp_group(1) for _ in range(k)], batches, args.dtype))
            else:
                runners.append(step_runner([mlp_group(k)], batches, args.dtype, "vmap" if v == "vmap" else "auto"))
        timings = time_interleaved(runners, warmup=args.warmup, steps=args.steps, rounds=args.rounds)
        first = [r.first_call_s for r in runners]
        del runners
        for v, (med, lo, hi), f in zip(variants, timings, first):
            row[v] = {
                "step_s": med, "step_s_min": lo, "step_s_max": hi,
                "samples_per_s": args.batch / med, "mlp_gflops": flop / med / 1e9, "first_call_s": f,
            }
            print(f"K={k:3d} {v:5s} {med * 1e3:9.1f} ms/step  {args.batch / med:12,.0f} samples/s  "
                  f"{flop / med / 1e9:7.1f} GFLOP/s  (first call {f:.1f} s)", flush=True)
        if "group" in row and "gemm" in row:
            row["group_fraction_of_gemm_ceiling"] = row["gemm"]["step_s"] / row["group"]["step_s"]
        for other in ("loop", "vmap"):
            if "group" in row and other in row:
                row[f"group_speedup_over_{other}"] = row[other]["step_s"] / row["group"]["step_s"]
        rows.append(row)
        base = next((r for r in rows if r["K"] == 1 and "group" in r), None)
        for r in rows if base else ():
            if "group" in r:
                r["time_ratio_vs_k1"] = r["group"]["step_s"] / base["group"]["step_s"]
                r["flop_ratio_vs_k1"] = r["K"]  # MLP FLOPs grow exactly with K
        # Written after every K, so a run cut short by a time limit keeps what it measured.
        record = {"benchmark": "train_throughput", "machine": machine(), "args": vars(args), "rows": rows}
        write_json(args.out, record, echo=k == args.ks[-1])


def _child_argv(args, k: int, out: str, p: int) -> list:
    """Process ``p`` builds (and so allocates) the variants in an order rotated by ``p``: the first one
    built runs a little slower in a process, a bias that the rotation spreads over all variants."""
    n = len(args.variants)
    order = [args.variants[(p + i) % n] for i in range(n)]
    return [sys.executable, os.path.abspath(__file__), "--ks", str(k), "--batch", str(args.batch),
            "--variants", *order, "--dtype", args.dtype, "--loop-max-k", str(args.loop_max_k),
            "--warmup", str(args.warmup), "--steps", str(args.steps), "--rounds", str(args.rounds), "--out", out]


def across_processes(args) -> None:
    """``args.processes`` rounds, each running every K in its own fresh process (so a K's processes are
    spread over the run, and each round's Ks are measured close together); per K and variant the median
    over processes of each process's median, the per-process ratios loop/group and vmap/group, and
    time(K)/time(K=1) of the group within each round. The JSON is rewritten after every round."""
    runs = {k: [] for k in args.ks}
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(args.processes):
            for k in args.ks:
                out = os.path.join(tmp, f"k{k}_p{p}.json")
                print(f"process round {p + 1}/{args.processes}: K={k}", flush=True)
                subprocess.run(_child_argv(args, k, out, p), check=True, stdout=subprocess.DEVNULL)
                with open(out) as fh:
                    runs[k].append(json.load(fh)["rows"][0])
            last = p == args.processes - 1
            rows = [_process_row(args, k, runs[k], runs.get(1), echo=last) for k in args.ks]
            write_json(args.out, {"benchmark": "train_throughput", "machine": machine(), "args": vars(args), "rows": rows},
                       echo=last)


def _process_row(args, k: int, runs: list, k1_runs, echo: bool) -> dict:
    """The summary row of K's per-process ``runs`` (``k1_runs``: K=1's, of the same rounds, or None)."""
    say = (lambda text: print(text, flush=True)) if echo else (lambda text: None)
    row = {"K": k, "batch": args.batch, "dtype": args.dtype, "processes": len(runs),
           "mlp_gflop_per_step": runs[0]["mlp_gflop_per_step"]}
    for v in args.variants:
        if v not in runs[0]:
            continue
        per = [r[v]["step_s"] for r in runs]
        med = statistics.median(per)
        row[v] = {"step_s": med, "step_s_per_process": per, "samples_per_s": args.batch / med,
                  "mlp_gflops": row["mlp_gflop_per_step"] / med}
        say(f"K={k:3d} {v:5s} {med * 1e3:9.1f} ms/step (processes: " + ", ".join(f"{x * 1e3:.0f}" for x in per) + ")")
    for other in ("loop", "vmap"):
        if "group" in row and other in row:
            ratios = [r[other]["step_s"] / r["group"]["step_s"] for r in runs]
            row[f"group_speedup_over_{other}"] = statistics.median(ratios)
            row[f"group_speedup_over_{other}_per_process"] = ratios
            say(f"K={k:3d} group speed-up over {other}: " + ", ".join(f"{x:.3f}" for x in ratios))
    if k1_runs and "group" in row and "group" in k1_runs[0]:
        ratios = [r["group"]["step_s"] / b["group"]["step_s"] for r, b in zip(runs, k1_runs)]
        row["time_ratio_vs_k1"] = statistics.median(ratios)
        row["time_ratio_vs_k1_per_process"] = ratios
        row["flop_ratio_vs_k1"] = k
    return row

if __name__ == "__main__":
    main()
