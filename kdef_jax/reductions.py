"""Sums that XLA:CPU runs in one pass over their inputs.

XLA:CPU splits a long reduction into a tree of reduce-windows and writes the reduced expression
(x − c, x², dy·x, ...) to memory before the first of them, so Σ f(x) reads x, writes f(x) and reads
it back. Folding the rows R-to-1 first (p[j] = Σ_r f(x)[r·N/R + j]; R = 16, or the largest of 8, 4, 2
that divides N and is < N; none: a plain sum) is an elementwise-style
pass that computes f on the fly; an optimization barrier stops XLA from merging that fold back into
one long reduction, and the short [N/R, ...] partials are then reduced as usual. On other backends
these are plain sums, one per input (sibling reductions of one input that XLA:GPU fuses into one
kernel; stacking the inputs first could materialise a [B, n, ...] copy), and so they are with
several devices (a mesh, kdef_jax/sharding.py): over rows split across devices the partitioner
would all-reduce the fold's [N/R, ...] partials (2 MB per BatchNorm at batch 10,000, K=1) instead
of the final sums (3.2 KB; benchmarks/collective_bytes.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_FOLDS = (16, 8, 4, 2)


def column_sums(*xs, keep: int | None = None) -> jax.Array:
    """[Σ_b x[b] for x in xs] stacked to [len(xs), ...]: float32 sums over axis 0 of same-shape arrays.

    ``keep``: sum over every axis but the last ``keep`` ones (per-channel sums of [B, M, F] inputs:
    keep=1 gives [len(xs), F]; keep=0 gives [len(xs)]); None keeps all of x.shape[1:].
    """
    rows = xs[0].shape[0]
    r = next((r for r in _FOLDS if rows % r == 0 and rows > r), None)
    if r is None or jax.default_backend() != "cpu" or jax.device_count() > 1:
        sums = jnp.stack([x.astype(jnp.float32).sum(0) for x in xs])
    else:
        stacked = jnp.stack([x.astype(jnp.float32) for x in xs], axis=1)
        partial = stacked.reshape((r, rows // r) + stacked.shape[1:]).sum(0)
        sums = jax.lax.optimization_barrier(partial).sum(0)
    extra = tuple(range(1, sums.ndim - keep)) if keep is not None else ()
    return sums.sum(extra) if extra else sums


def sum_of_squares(x) -> jax.Array:
    """Σ x² over every element, in float32."""
    return column_sums(jnp.square(x.astype(jnp.float32)).reshape(-1))[0]


def tree_norm(tree) -> jax.Array:
    """Global L2 norm √(Σ_leaves Σ x²) of a pytree (``optax.tree.norm``, one pass per leaf)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum((sum_of_squares(x) for x in leaves), jnp.zeros((), jnp.float32)))
