"""One student layer's BatchNorm → ReLU → dropout, forward + backward, as the library runs it vs plain autodiff.

    python benchmarks/batchnorm_block.py --out batchnorm_block.json

``library``: ``layers.BatchNorm`` (one-pass ``column_sums`` statistics, custom VJP of y = x·a + c) and
``Dropout(relu=True)`` (``relu_dropout``: the backward reads its mask from the output).
``autodiff``: the same math written plainly — Σ(x−c) and Σ(x−c)² with ``sum``, y = x·a + c, ReLU,
hash-dropout ``where`` — and differentiated by JAX. Both draw a hash mask of the same cost (not the same
mask: their keys differ), so the outputs agree at dropout 0 only. Shape [B, F] =
[10000, 400] by default: one hidden layer of one Criteo student at batch 10,000 (a KDEF K=10 step
runs 30 of them). Timed interleaved (benchmarks/common.py); milliseconds per forward+backward.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from common import Runner, layer_parser, machine, time_interleaved, write_json  # noqa: E402
from kdef_jax.models.layers import BatchNorm, Dropout, hash_keep_mask  # noqa: E402


def library_block(rate):
    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Dropout(rate)(BatchNorm()(x, True), False, relu=True)

    block = Block()

    def fwd(params, stats, x, key):
        y, _ = block.apply({"params": params, "batch_stats": stats}, x, rngs={"dropout": key}, mutable=["batch_stats"])
        return y

    return block, fwd


def autodiff_fwd(params, stats, x, key, rate):
    p = params["BatchNorm_0"]
    c = jax.lax.stop_gradient(x[0])  # the shift: a constant to autodiff, as in the library's custom VJP
    xs = x - c
    m1, m2 = xs.mean(0), jnp.square(xs).mean(0)
    var = jnp.maximum(m2 - m1 * m1, 0.0)
    a = jax.lax.rsqrt(var + 1e-5) * p["scale"]
    y = jax.nn.relu(x * a + (p["bias"] - (m1 + c) * a))
    keep = hash_keep_mask(jax.random.fold_in(key, 0), x.shape, 1.0 - rate)  # same cost as the library's draw
    return jnp.where(keep, y / (1.0 - rate), 0.0)


def main():
    ap = layer_parser(__doc__)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, args.features)) * 2 + 1, jnp.float32)
    dy = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    key = jax.random.PRNGKey(1)
    block, lib_fwd = library_block(args.dropout)
    v = block.init({"params": jax.random.PRNGKey(0), "dropout": key}, x)

    def runner(fwd):
        @jax.jit
        def fwd_bwd(params, x, dy):
            y, vjp = jax.vjp(lambda p, x: fwd(p, v["batch_stats"], x, key), params, x)
            return y, vjp(dy)

        return Runner(fwd_bwd, [(v["params"], x, dy)])

    names = ["library", "autodiff"]
    runners = [runner(lib_fwd), runner(lambda p, s, x, k: autodiff_fwd(p, s, x, k, args.dropout))]
    times = time_interleaved(runners, steps=args.steps, rounds=args.rounds)
    rows = {n: {"ms": t[0] * 1e3, "ms_min": t[1] * 1e3, "ms_max": t[2] * 1e3} for n, t in zip(names, times)}
    for n, r in rows.items():
        print(f"{n:9s} {r['ms']:7.2f} ms  ({r['ms_min']:.2f}-{r['ms_max']:.2f})", flush=True)
    print(f"autodiff / library: {rows['autodiff']['ms'] / rows['library']['ms']:.2f}x")
    write_json(args.out, {"benchmark": "batchnorm_block", "machine": machine(), "args": vars(args), "rows": rows,
                          "speedup": rows["autodiff"]["ms"] / rows["library"]["ms"]}, echo=False)


if __name__ == "__main__":
    main()
