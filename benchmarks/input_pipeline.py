"""Does the main job's input pipeline cost step time? The same train step, fed three ways, in ONE process.

    python benchmarks/input_pipeline.py --k 10 --out input_pipeline.json

The model, optimizer and step are the main job's own (``make_training`` on a config file, default
``configs/default.py:criteo``: 300k Criteo-shaped rows, batch 10,000); each way runs ``--steps``
steps per round, the ways interleaved over ``--rounds`` rounds in rotating order, medians reported:
  staged    — 4 batches put on the device once and cycled (what train_throughput.py times);
  fed       — the main job's loop: a fresh epoch permutation, memmap fancy indexing, the padded-batch
              mask, ``prefetch`` (a background thread, ``--prefetch`` batches ahead) and ``device_put``;
  fed_sync  — the same with no prefetch thread (batches made between steps, in the loop's thread).
``fed ÷ staged`` is the pipeline's cost per step (1.00: fully hidden behind the step). Timing the main
job against the benchmark in two processes instead mixes in this VM's ±4% process-to-process spread.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

from common import machine, positive_int, write_json  # noqa: E402
from kdef_jax.run_files import output_file_arg  # noqa: E402
from kdef_jax.config import load_config_file, validate  # noqa: E402
from kdef_jax.data.dataset import load_dataset  # noqa: E402
from kdef_jax.data.loader import epoch_permutation, iterate_batches, prefetch  # noqa: E402
from kdef_jax.models.ensemble import build_model  # noqa: E402
from kdef_jax.steps import make_training  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.py") + ":criteo")
    ap.add_argument("--k", type=positive_int, default=10, help="model.num_students")
    ap.add_argument("--steps", type=positive_int, default=6)
    ap.add_argument("--rounds", type=positive_int, default=3)
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--out", default=None, type=output_file_arg)
    args = ap.parse_args()
    c = load_config_file(args.config)
    c.model.num_students = args.k
    validate(c)
    ds = load_dataset(c.data, log=lambda *a: None)
    train, bs = ds.splits["train"], c.train.batch_size
    if len(train) < args.steps * bs:
        raise SystemExit(f"{args.config}: {len(train)} train rows, fewer than --steps {args.steps} × batch {bs}")
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(c.seed))
    state, step = make_training(build_model(c.model, ds.feature_map), c, init_rng, ds.feature_map.num_columns)
    staged = [jax.device_put(b) for _, b in zip(range(4), iterate_batches(train, bs, order=epoch_permutation(len(train), c.seed, 0)))]
    epoch = [0]

    def batches(way):
        if way == "staged":
            return (staged[i % len(staged)] for i in range(args.steps))
        epoch[0] += 1  # a new permutation each time, as every epoch of the main job
        it = iterate_batches(train, bs, order=epoch_permutation(len(train), c.seed, epoch[0]))
        return prefetch(it, args.prefetch if way == "fed" else 0, transform=jax.device_put)

    def run(way) -> float:
        nonlocal state
        it = batches(way)
        t0 = time.perf_counter()
        for batch in itertools.islice(it, args.steps):  # `steps` batches taken (prefetch builds its few ahead)
            state, _ = step(state, batch, dropout_rng)
        jax.block_until_ready(state)
        seconds = time.perf_counter() - t0
        it.close()  # stops the prefetch thread outside the timed region
        return seconds / args.steps

    ways = ["staged", "fed", "fed_sync"]
    for w in ways:  # compile, warm the page cache and the allocator
        run(w)
    per = {w: [] for w in ways}
    for r in range(args.rounds):
        for j in range(len(ways)):
            w = ways[(r + j) % len(ways)]
            per[w].append(run(w))
    med = {w: statistics.median(v) for w, v in per.items()}
    rows = {w: {"step_s": med[w], "step_s_per_round": per[w], "samples_per_s": bs / med[w]} for w in ways}
    for w in ways:
        print(f"K={args.k} {w:9s} {med[w] * 1e3:8.1f} ms/step  ({', '.join(f'{x * 1e3:.0f}' for x in per[w])})", flush=True)
    ratios = {f"{w}_over_staged": med[w] / med["staged"] for w in ways[1:]}
    print("  ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    write_json(args.out, {"benchmark": "input_pipeline", "machine": machine(), "args": vars(args), "K": args.k,
                          "batch": bs, "rows": rows, **ratios})


if __name__ == "__main__":
    main()
