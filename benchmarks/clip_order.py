"""Train-step time with the library's gradient clipping against optax's, Criteo shape (JSON out).

Both variants clip by the global norm (c = 10) before the same Adam, in the full KDEF train step:

* ``library``: ``steps.clip_by_global_norm``, torch's rule g · min(1, c/(‖g‖ + 1e-6)) as a select on
  a scalar predicate, a factor that XLA:CPU fuses into Adam's moment passes;
* ``optax_order``: optax's rule (g/‖g‖)·c when ‖g‖ ≥ c (with the same one-pass ‖g‖), for which XLA:CPU
  writes a g/‖g‖ copy of the embedding table's gradient every step.

Both are built in one process and timed interleaved (common.time_interleaved); ``--processes N`` runs N
fresh processes with the build order alternated (the first program built in a process runs slightly
slower) and reports the per-process ratios and their median:

    python benchmarks/clip_order.py --ks 1 10 --processes 3 --out benchmarks/results/clip_order_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from kdef_jax import runtime

runtime.tune_cpu_runtime()  # before JAX starts
import jax
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    Runner, criteo_batches, criteo_model, default_train_config, machine, mlp_group, positive_int, time_interleaved,
    write_json,
)
from kdef_jax.run_files import output_file_arg  # noqa: E402
from kdef_jax import steps  # noqa: E402
from kdef_jax.reductions import tree_norm  # noqa: E402

VARIANTS = ("library", "optax_order")


def optax_order_clip(max_norm: float) -> optax.GradientTransformation:
    """optax.clip_by_global_norm's arithmetic, ‖g‖ from the library's one-pass sums."""

    def update_fn(updates, state, params=None):
        g_norm = tree_norm(updates)
        keep = g_norm < max_norm
        return jax.tree.map(lambda t: jax.lax.select(keep, t, (t / g_norm.astype(t.dtype)) * max_norm), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def runner(variant: str, k: int, batches) -> Runner:
    c = default_train_config()
    o = c.optim
    if variant == "library":
        tx = steps.make_optimizer(o)
    else:
        tx = optax.chain(optax_order_clip(o.clip_norm), steps.make_adam(o))
    model = criteo_model([mlp_group(k)])
    state = steps.create_train_state(model, tx, jax.random.PRNGKey(0), batches[0]["ids"].shape[1])
    step = steps.make_train_step(model, tx, c.loss, o.embedding_l2)
    key = jax.random.PRNGKey(1)
    return Runner(step, [(jax.device_put(b), key) for b in batches], carry=state)


def one_process(ks, order, steps_, rounds, batch) -> list:
    batches = criteo_batches(batch, 4)
    rows = []
    for k in ks:
        runners = [runner(v, k, batches) for v in order]
        times = dict(zip(order, time_interleaved(runners, warmup=2, steps=steps_, rounds=rounds)))
        rows.append({"K": k, "build_order": list(order),
                     **{v: {"step_ms": times[v][0] * 1e3, "min_ms": times[v][1] * 1e3, "max_ms": times[v][2] * 1e3} for v in order},
                     "library_over_optax_order": times["library"][0] / times["optax_order"][0]})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=positive_int, nargs="+", default=[1, 10])
    ap.add_argument("--steps", type=positive_int, default=5, help="calls per variant per round")
    ap.add_argument("--rounds", type=positive_int, default=12)
    ap.add_argument("--batch", type=positive_int, default=10_000)
    ap.add_argument("--processes", type=positive_int, default=1, help="fresh processes, build order alternated")
    ap.add_argument("--order", default=",".join(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=output_file_arg)
    args = ap.parse_args()
    record = {"benchmark": "clip_order", "machine": machine(), "args": vars(args)}
    if args.processes <= 1:
        record["rows"] = one_process(args.ks, args.order.split(","), args.steps, args.rounds, args.batch)
        write_json(args.out, record)
        return
    per_process = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(args.processes):
            order = VARIANTS if p % 2 == 0 else VARIANTS[::-1]
            out = os.path.join(tmp, f"p{p}.json")
            cmd = [sys.executable, __file__, "--ks", *map(str, args.ks), "--steps", str(args.steps), "--rounds",
                   str(args.rounds), "--batch", str(args.batch), "--order", ",".join(order), "--out", out]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(out) as fh:
                per_process.append(json.load(fh)["rows"])
            record["processes"] = per_process
            record["summary"] = [
                {"K": k, "library_over_optax_order_median": statistics.median(r[i]["library_over_optax_order"] for r in per_process),
                 "per_process": [r[i]["library_over_optax_order"] for r in per_process],
                 **{f"{v}_step_ms_median": statistics.median(r[i][v]["step_ms"] for r in per_process) for v in VARIANTS}}
                for i, k in enumerate(args.ks)
            ]
            # after every process: a run cut short keeps the processes it finished
            write_json(args.out, record, echo=p == args.processes - 1)


if __name__ == "__main__":
    main()
