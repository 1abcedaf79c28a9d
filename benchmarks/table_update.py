"""The dense embedding-table update alone, as the library runs it against one fused pass (JSON out).

Per step the reference's dense Adam touches every row of the 910,747 × 16 table: R = (λ/2)·‖E‖², the
gradient g = scatter(batch rows) + λ·E, the clip factor from ‖g‖, both moments and the update. Variants,
each one jitted program of exactly that work (Criteo shape, a batch's 390,000 row gradients scattered):

* ``library``: the train step's code: ``sum_of_squares``, ``steps.make_optimizer`` (torch-rule clipping,
  optax Adam), ``optax.apply_updates``; E, m, v separate donated arrays. XLA:CPU has no multi-output
  fusion by default, so m, v and E are three loop fusions (m and v written, then read again for E).
* ``stacked``: E, m, v as ONE [3, N, d] buffer whose update is one ``concatenate`` loop fusion (reads
  E, m, v and g once, writes all three) — multi-output fusion emulated without a custom kernel; not
  donated (a fresh output buffer).
* ``stacked_donated``: the same, donated: XLA cannot update the buffer in place (each output element
  reads the other two thirds) and copies it first.

All timed interleaved in one process (common.time_interleaved); the final tables are compared:

    python benchmarks/table_update.py --out benchmarks/results/table_update_cpu.json
"""

from __future__ import annotations

import argparse
import os
import sys

from kdef_jax import runtime

runtime.tune_cpu_runtime()  # before JAX starts
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    EMB_DIM, Runner, criteo_batches, default_train_config, machine, positive_int, time_interleaved, write_json,
)
from kdef_jax.run_files import output_file_arg  # noqa: E402
from kdef_jax import steps  # noqa: E402
from kdef_jax.data.synthetic import CRITEO_VOCAB  # noqa: E402
from kdef_jax.models.embedding import column_offsets  # noqa: E402
from kdef_jax.reductions import sum_of_squares  # noqa: E402

VARIANTS = ("library", "stacked", "stacked_donated")


def scattered(rows, ids, n: int):
    """The table's gradient from the batch: Σ of each looked-up row's gradient into its row."""
    return jnp.zeros((n, rows.shape[-1]), rows.dtype).at[ids.reshape(-1)].add(rows.reshape(-1, rows.shape[-1]))


def library_update(tx, lam: float):
    def update(state, ids, rows):
        params, opt_state = state
        table = params["embedding"]["table"]
        reg = 0.5 * lam * sum_of_squares(table)
        g = scattered(rows, ids, table.shape[0]) + lam * table + 0.0 * reg
        updates, opt_state = tx.update({"embedding": {"table": g}}, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), reg

    return jax.jit(update, donate_argnums=(0,))


def stacked_update(o, lam: float, donate: bool):
    """Adam as optax computes it (m̂/(√v̂ + ε), bias-corrected at step t; its injected hyperparameters are
    float32 arrays, so 1 − β₂ is a float32 difference), the clip factor torch's."""
    b1, b2, eps, lr = (jnp.float32(x) for x in (o.b1, o.b2, o.eps, o.learning_rate))

    def update(state, ids, rows):
        s, count = state
        table, m, v = s[0], s[1], s[2]
        reg = 0.5 * lam * sum_of_squares(table)
        g = scattered(rows, ids, table.shape[0]) + lam * table
        g = steps.clip_tree(g, jnp.sqrt(sum_of_squares(g)), o.clip_norm)
        t = (count + 1).astype(jnp.float32)
        m2 = (1 - b1) * g + b1 * m
        v2 = (1 - b2) * g * g + b2 * v
        e2 = table - lr * (m2 / (1 - b1**t)) / (jnp.sqrt(v2 / (1 - b2**t)) + eps)
        return (jnp.stack([e2, m2, v2]), count + 1), reg

    return jax.jit(update, donate_argnums=(0,) if donate else ())


def runners(table0, batches, o, lam):
    tx = steps.make_optimizer(o)
    params = {"embedding": {"table": jnp.asarray(table0)}}
    out = {"library": Runner(library_update(tx, lam), batches, carry=(params, tx.init(params)))}
    zeros = np.zeros_like(table0)
    for v in VARIANTS[1:]:
        out[v] = Runner(stacked_update(o, lam, v == "stacked_donated"), batches,
                        carry=(jnp.asarray(np.stack([table0, zeros, zeros])), jnp.zeros((), jnp.int32)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=positive_int, default=5, help="calls per variant per round")
    ap.add_argument("--rounds", type=positive_int, default=8)
    ap.add_argument("--batch", type=positive_int, default=10_000)
    ap.add_argument("--out", type=output_file_arg)
    args = ap.parse_args()
    c = default_train_config()
    o, lam = c.optim, c.optim.embedding_l2
    n = int(sum(CRITEO_VOCAB))
    table0 = np.random.default_rng(0).normal(0, 1e-4, (n, EMB_DIM)).astype(np.float32)
    offsets = column_offsets(CRITEO_VOCAB)
    grads = np.random.default_rng(1)
    batches = [(jnp.asarray(b["ids"] + offsets), jnp.asarray(grads.normal(0, 1e-3, (*b["ids"].shape, EMB_DIM)).astype(np.float32)))
               for b in criteo_batches(args.batch, 4)]
    rs = runners(table0, batches, o, lam)
    times = dict(zip(rs, time_interleaved(list(rs.values()), warmup=2, steps=args.steps, rounds=args.rounds)))
    ref = np.asarray(rs["library"].carry[0]["embedding"]["table"])
    rows = {}
    for v, r in rs.items():
        final = ref if v == "library" else np.asarray(r.carry[0][0])
        rows[v] = {"ms": times[v][0] * 1e3, "min_ms": times[v][1] * 1e3, "max_ms": times[v][2] * 1e3,
                   "first_call_s": r.first_call_s, "calls": r.i,
                   "max_abs_diff_of_table_vs_library": float(np.max(np.abs(final - ref)))}
    record = {"benchmark": "table_update", "machine": machine(), "args": vars(args), "rows": n,
              "variants": rows, **{f"{v}_over_library": rows[v]["ms"] / rows["library"]["ms"] for v in VARIANTS[1:]}}
    for v, r in rows.items():
        print(f"{v:16s} {r['ms']:7.1f} ms  ({r['min_ms']:.1f}-{r['max_ms']:.1f})  max|ΔE| vs library {r['max_abs_diff_of_table_vs_library']:.2e}", file=sys.stderr)
    write_json(args.out, record, echo=False)


if __name__ == "__main__":
    main()
