"""Row-sparse ("lazy") Adam for the embedding table — an option for very large vocabularies.

DEVIATION from the reference, which runs dense Adam over the whole table every step (rows absent
from the batch still get the L2 gradient λ·E and decaying moments). Here, per step, only the U
distinct rows of the batch are touched, so the cost no longer grows with the vocabulary (KDD12:
4.7M rows):

    u, inv = unique(ids + field offsets)            (static size B·C, padded out of range)
    loss(θ_dense, E[u]) with the batch's rows gathered as E[u][inv];  R = (λ/2)·‖E[u]‖² (batch rows only)
    g = clip_by_global_norm([g_dense, g_u], c)
    dense params: Adam as usual; rows u: m_u ← β₁m_u + (1−β₁)g_u, v_u ← β₂v_u + (1−β₂)g_u²,
    E[u] ← E[u] − lr·m̂_u/(√v̂_u + ε) with the global step's bias correction (TF LazyAdam's rule).

Rows absent from the batch keep their values and moments exactly. PAD rows get zero gradient and
stay 0. When every row is in every batch and λ = 0, this equals dense Adam. With the table split by
rows over a mesh (``mesh.embedding = "rows"``) each device applies that update to the rows of u it
holds, in place (``row_mesh``): no gather of the moments crosses devices.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from kdef_jax.losses import kdef_loss
from kdef_jax.models.embedding import column_offsets
from kdef_jax.reductions import tree_norm


class LazyAdamState(NamedTuple):
    mu: jax.Array  # [V, d]
    nu: jax.Array  # [V, d]


def _dense_adam(o) -> optax.GradientTransformation:
    return optax.inject_hyperparams(optax.adam)(learning_rate=o.learning_rate, b1=o.b1, b2=o.b2, eps=o.eps)


def _split(params):
    dense = {k: v for k, v in params.items() if k != "embedding"}
    return dense, params["embedding"]["table"]


def init_opt_state(params, o):
    """(placeholder, dense Adam state, LazyAdamState): index 1 is the injected-hyperparameter state, as
    in the dense optimizer, so ``steps.get/set_learning_rate`` work on both."""
    dense, table = _split(params)
    return (optax.EmptyState(), _dense_adam(o).init(dense), LazyAdamState(jnp.zeros_like(table), jnp.zeros_like(table)))


def _row_update(o, table, mu, nu, uniq, rows, g_rows, lr, t):
    """The rows u of (table, mu, nu) after one lazy Adam step (indices out of range are dropped)."""
    m = o.b1 * jnp.take(mu, uniq, axis=0, mode="fill", fill_value=0.0) + (1 - o.b1) * g_rows
    v = o.b2 * jnp.take(nu, uniq, axis=0, mode="fill", fill_value=0.0) + (1 - o.b2) * jnp.square(g_rows)
    m_hat, v_hat = m / (1 - o.b1**t), v / (1 - o.b2**t)
    new_rows = rows - lr * m_hat / (jnp.sqrt(v_hat) + o.eps)
    return (table.at[uniq].set(new_rows, mode="drop"), mu.at[uniq].set(m, mode="drop"),
            nu.at[uniq].set(v, mode="drop"))


def _sharded_row_update(o, mesh):
    """``_row_update`` on a table split by rows (sharding.TABLE_ROWS): each device moves the rows of u
    in its range [n·R, (n+1)·R) to local indices and drops the rest; u, rows, g_u are replicated."""
    from jax.sharding import PartitionSpec as P

    from kdef_jax.sharding import TABLE_ROWS

    s = mesh.shape["student"]

    def local(table, mu, nu, uniq, rows, g_rows, lr, t):
        n_rows = table.shape[0]
        idx = uniq - (jax.lax.axis_index("data") * s + jax.lax.axis_index("student")) * n_rows
        idx = jnp.where((idx >= 0) & (idx < n_rows), idx, n_rows)  # n_rows: out of range, dropped
        return _row_update(o, table, mu, nu, idx, rows, g_rows, lr, t)

    return jax.shard_map(local, mesh=mesh, in_specs=(TABLE_ROWS,) * 3 + (P(),) * 5, out_specs=(TABLE_ROWS,) * 3)


def make_lazy_train_step(model, loss_cfg, o, row_mesh=None, **jit_kw):
    """``train_step(state, batch, rng) -> (state, metrics)`` with lazy Adam on the table (jitted, donating;
    ``jit_kw``: a mesh's shardings, as ``steps.make_train_step``; ``row_mesh``: the mesh a row-split
    table lives on)."""
    offsets = jnp.asarray(column_offsets(model.vocab_sizes, model.max_lens))
    adam = _dense_adam(o)
    update_rows = (lambda *a: _row_update(o, *a)) if row_mesh is None else _sharded_row_update(o, row_mesh)

    def train_step(state, batch, rng):
        ids, mask = batch["ids"], batch.get("mask")
        dense, table = _split(state.params)
        vocab, dim = table.shape
        flat = (ids + offsets).reshape(-1)
        uniq, inv = jnp.unique(flat, size=flat.shape[0], fill_value=vocab, return_inverse=True)
        rows = jnp.take(table, uniq, axis=0, mode="fill", fill_value=0.0)  # fill slots → zeros
        step_rng = jax.random.fold_in(rng, state.step)

        def loss_fn(dense, rows):
            emb_rows = rows[inv.reshape(-1)].reshape(ids.shape + (dim,))
            params = {**dense, "embedding": {"table": table}}  # table itself is not differentiated
            logits, new_vars = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, ids, True, mask, emb_rows,
                rngs={"dropout": step_rng}, mutable=["batch_stats"],
            )
            loss, aux = kdef_loss(logits, batch["y"], variant=loss_cfg.variant, consistency=loss_cfg.consistency,
                                  mask=mask, huber_delta=loss_cfg.huber_delta)
            reg = 0.5 * o.embedding_l2 * jnp.sum(jnp.square(rows)) if o.embedding_l2 > 0 else jnp.zeros(())
            return loss + reg, (aux, new_vars["batch_stats"], reg)

        (total, (aux, batch_stats, reg)), (g_dense, g_rows) = jax.value_and_grad(loss_fn, (0, 1), has_aux=True)(dense, rows)
        norm = tree_norm([g_dense, g_rows])
        if o.clip_norm > 0:
            scale = jnp.where(norm > o.clip_norm, o.clip_norm / norm, 1.0)
            g_dense = jax.tree.map(lambda g: g * scale, g_dense)
            g_rows = g_rows * scale
        _, adam_state, lazy = state.opt_state
        updates, adam_state = adam.update(g_dense, adam_state, dense)
        dense = optax.apply_updates(dense, updates)
        lr = adam_state.hyperparams["learning_rate"]
        t = (state.step + 1).astype(jnp.float32)
        table, mu, nu = update_rows(table, lazy.mu, lazy.nu, uniq, rows, g_rows, lr, t)  # fill slots dropped
        lazy = LazyAdamState(mu, nu)
        params = {**dense, "embedding": {"table": table}}
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=(state.opt_state[0], adam_state, lazy))
        metrics = {"loss": total, "reg": reg, "label_bce": aux["label_bce"], "teacher_bce": aux["teacher_bce"],
                   "kd": aux["kd"], "dml": aux["dml"], "grad_norm": norm}
        return new_state, metrics

    return jax.jit(train_step, donate_argnums=(0,), **jit_kw)
