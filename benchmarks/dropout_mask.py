"""One dropout mask: the library's counter hash vs ``jax.random.bernoulli`` (threefry), jitted.

    python benchmarks/dropout_mask.py --out dropout_mask.json

``hash``: ``kdef_jax.models.layers.hash_keep_mask`` (h = fmix32(fmix32(i + s₀) ⊕ s₁), keep iff
h < (1−p)·2³²; ``model.dropout_rng="hash"``, the default). ``threefry``: ``jax.random.bernoulli`` with
JAX's default PRNG (``model.dropout_rng="jax"``). Shape [B, F] = [10000, 400] by default: one hidden
layer of one Criteo student at batch 10,000 (a KDEF K=10 step draws 30 of them). Each call takes a
fresh key and returns the mask (its output is the mask itself, so none of it can be skipped); the kept
fraction of each variant's mask is recorded (once, before timing), so a variant that drew nothing shows. Timed interleaved (benchmarks/common.py); milliseconds per mask.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from common import Runner, layer_parser, machine, time_interleaved, write_json  # noqa: E402
from kdef_jax.models.layers import hash_keep_mask  # noqa: E402


def mask_fns(shape, keep_prob: float) -> dict:
    """{name: jitted key -> bool mask of ``shape``, True with probability ``keep_prob``}."""
    return {
        "hash": jax.jit(lambda key: hash_keep_mask(key, shape, keep_prob)),
        "threefry": jax.jit(lambda key: jax.random.bernoulli(key, keep_prob, shape)),
    }


def main():
    ap = layer_parser(__doc__)
    args = ap.parse_args()
    if not 0.0 < args.dropout < 1.0:
        ap.error(f"--dropout {args.dropout}: use a rate in (0, 1)")
    shape, keep = (args.batch, args.features), 1.0 - args.dropout
    keys = [jax.random.PRNGKey(i) for i in range(4)]
    fns = mask_fns(shape, keep)
    kept = {name: float(jnp.mean(fn(keys[0]))) for name, fn in fns.items()}
    runners = [Runner(fn, [(k,) for k in keys]) for fn in fns.values()]
    timings = time_interleaved(runners, warmup=2, steps=args.steps, rounds=args.rounds)
    record = {"benchmark": "dropout_mask", "machine": machine(), "args": vars(args), "shape": list(shape)}
    for name, (med, lo, hi), r in zip(fns, timings, runners):
        record[name] = {"ms": med * 1e3, "ms_min": lo * 1e3, "ms_max": hi * 1e3, "kept_fraction": kept[name],
                        "first_call_s": r.first_call_s}
    record["hash_speedup"] = record["threefry"]["ms"] / record["hash"]["ms"]
    for name in fns:
        print(f"{name:9s} {record[name]['ms']:8.3f} ms  (kept {kept[name]:.4f} of {shape[0]}x{shape[1]})")
    print(f"hash is {record['hash_speedup']:.1f}x faster than threefry")
    write_json(args.out, record)


if __name__ == "__main__":
    main()
