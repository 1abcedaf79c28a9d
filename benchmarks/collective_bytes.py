"""What one train step moves between devices and keeps per device, read from its compiled program.

    python benchmarks/collective_bytes.py --devices 8 --k 10 --out benchmarks/results/collective_bytes_cpu8.json

Compiles the Criteo-shaped KDEF step (39 fields, 910,747 × 16 table, K MLPs [400, 400, 400], batch
10,000) for a (data = --devices) mesh of host CPU devices, with the embedding table replicated or
split by rows (``mesh.embedding``), under dense and lazy Adam, and sums from the optimized HLO the
output bytes of every collective per device and step (all-reduce, all-gather, reduce-scatter,
all-to-all, collective-permute), with XLA's per-device memory analysis (arguments: the state and
batch shard each device holds; temporaries). No timing: fake CPU devices share the host's cores,
so only these counts carry over to GPUs and TPUs (where the same partitioner runs).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path


def _args():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kdef_jax.run_files import output_file_arg  # stdlib only: jax is not imported yet

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--optimizers", nargs="+", default=["dense", "lazy_adam"], choices=["dense", "lazy_adam"])
    p.add_argument("--embeddings", nargs="+", default=["replicated", "rows"], choices=["replicated", "rows"])
    p.add_argument("--out", default=None, type=output_file_arg)
    a = p.parse_args()  # before jax is imported (it fixes the device count): checked here, not by common's types
    if min(a.devices, a.k, a.batch) < 1:
        p.error("--devices, --k and --batch must be >= 1")
    return a


ARGS = _args() if __name__ == "__main__" else None
if ARGS is not None:  # the device count is fixed when jax starts
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={ARGS.devices}"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import ml_collections  # noqa: E402

from benchmarks.common import (  # noqa: E402
    EMB_DIM, criteo_batches, criteo_model, default_train_config, machine, mlp_group, write_json,
)
from kdef_jax import sharding  # noqa: E402
from kdef_jax.data.synthetic import CRITEO_VOCAB  # noqa: E402
from kdef_jax.steps import make_training  # noqa: E402

COLLECTIVE = re.compile(r"=\s*(.*?)\s(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(-start)?\(")
ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
DTYPE_BYTES = {"pred": 1, "bf16": 2}


def _bytes(dtype: str, dims: str) -> int:
    n = 1
    for d in filter(None, dims.split(",")):
        n *= int(d)
    return n * DTYPE_BYTES.get(dtype, int(dtype[1:]) // 8 if dtype[1:].isdigit() else 4)


def _tuple_items(shape: str) -> list:
    """The top-level elements of a tuple shape "(a, (b, c), d)"; [shape] if it is not a tuple."""
    shape = shape.strip()
    if not shape.startswith("("):
        return [shape]
    items, depth, start = [], 0, 1
    for i, ch in enumerate(shape):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        if (ch == "," and depth == 1) or (ch == ")" and depth == 0):
            items.append(shape[start:i].strip())
            start = i + 1
    return items


def result_shape(op: str, is_start: bool, shape: str) -> str:
    """The part of an instruction's shape that is the collective's result. An async all-gather-start or
    collective-permute-start (GPU) returns (operands, results[, contexts]), and a reduce-scatter-start or
    all-to-all-start ((operands), result[, contexts]): only the second element is the data that arrives.
    A synchronous op, or all-reduce-start, returns its results alone."""
    if is_start:
        items = _tuple_items(shape)
        if len(items) > 1 and (op in ("all-gather", "collective-permute") or items[0].startswith("(")):
            return items[1]
    return shape


def collective_bytes(hlo: str) -> dict:
    """{op: [count, result bytes]} over the collectives of an optimized HLO module (per device)."""
    out = defaultdict(lambda: [0, 0])
    for line in hlo.splitlines():
        m = COLLECTIVE.search(line)
        if m is None or "-done" in line.split("=", 1)[-1].split("(", 1)[0]:
            continue
        shape = result_shape(m.group(2), m.group(3) is not None, m.group(1))
        out[m.group(2)][0] += 1
        out[m.group(2)][1] += sum(_bytes(t, d) for t, d in ARRAY.findall(shape))
    return dict(out)


def measure(optimizer: str, embedding: str, k: int, batch_size: int) -> dict:
    c = default_train_config()
    c.optim.embedding_optimizer, c.mesh.embedding = optimizer, embedding
    mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 0, "student": 1}), {"batch": batch_size})
    rows = sharding.table_rows(sum(CRITEO_VOCAB), mesh) if embedding == "rows" else 0
    model = criteo_model([mlp_group(k)]).clone(embedding_rows=rows)
    state, step = make_training(model, c, jax.random.PRNGKey(0), len(CRITEO_VOCAB), mesh)
    batch = jax.device_put(criteo_batches(batch_size, n=1)[0], sharding.batch_sharding(mesh))
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, jax.random.PRNGKey(1)).compile()
    mem = compiled.memory_analysis()
    ops = collective_bytes(compiled.as_text())
    return {
        "optimizer": optimizer, "embedding": embedding, "table_rows": int(state.params["embedding"]["table"].shape[0]),
        "collective_mb_per_step": round(sum(b for _, b in ops.values()) / 1e6, 2),
        "collectives": {op: {"count": n, "mb": round(b / 1e6, 2)} for op, (n, b) in sorted(ops.items())},
        "argument_mb_per_device": round(mem.argument_size_in_bytes / 1e6, 1),
        "temp_mb_per_device": round(mem.temp_size_in_bytes / 1e6, 1),
        "compile_s": round(time.perf_counter() - t0, 1),
    }


def main(a) -> None:
    record = {"benchmark": "collective_bytes", "machine": machine(), "k": a.k, "batch": a.batch,
              "mesh": {"data": a.devices, "student": 1}, "table_mb": round(sum(CRITEO_VOCAB) * EMB_DIM * 4 / 1e6, 1),
              "results": []}
    for opt in a.optimizers:
        for emb in a.embeddings:
            r = measure(opt, emb, a.k, a.batch)
            record["results"].append(r)
            print(f"{opt:>9} {emb:>10}: collectives {r['collective_mb_per_step']:8.2f} MB/step/device, "
                  f"arguments {r['argument_mb_per_device']:7.1f} MB, temps {r['temp_mb_per_device']:7.1f} MB "
                  f"(compile {r['compile_s']} s)", flush=True)
            write_json(a.out, record, echo=False)
    write_json(a.out, record, echo=False)


if __name__ == "__main__":
    main(ARGS)
