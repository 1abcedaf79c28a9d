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
stay 0; the ids of a padded batch's masked rows are read as PAD, so they touch no row. When every
row is in every batch and λ = 0, this equals dense Adam. With the table split by rows over a mesh
(``mesh.embedding = "rows"``) each device applies that update to the rows of u it holds, in place
(``split_table``): no table row, moment or [U, d] sum crosses devices.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from kdef_jax.losses import kdef_loss
from kdef_jax.models.embedding import table_rows
from kdef_jax.reductions import tree_norm
from kdef_jax.steps import clip_tree, make_adam
from kdef_jax.sharding import TABLE_ROWS, replicated


class LazyAdamState(NamedTuple):
    mu: jax.Array  # [V, d]
    nu: jax.Array  # [V, d]


def _split(params):
    dense = {k: v for k, v in params.items() if k != "embedding"}
    return dense, params["embedding"]["table"]


def init_opt_state(params, o):
    """(placeholder, dense Adam state, LazyAdamState): index 1 is the injected-hyperparameter state, as
    in the dense optimizer, so ``steps.get/set_learning_rate`` work on both."""
    dense, table = _split(params)
    return (optax.EmptyState(), make_adam(o).init(dense), LazyAdamState(jnp.zeros_like(table), jnp.zeros_like(table)))


def _row_update(o, table, mu, nu, uniq, rows, g_rows, lr, t):
    """The rows u of (table, mu, nu) after one lazy Adam step (indices out of range are dropped)."""
    m = o.b1 * jnp.take(mu, uniq, axis=0, mode="fill", fill_value=0.0) + (1 - o.b1) * g_rows
    v = o.b2 * jnp.take(nu, uniq, axis=0, mode="fill", fill_value=0.0) + (1 - o.b2) * jnp.square(g_rows)
    m_hat, v_hat = m / (1 - o.b1**t), v / (1 - o.b2**t)
    new_rows = rows - lr * m_hat / (jnp.sqrt(v_hat) + o.eps)
    return (table.at[uniq].set(new_rows, mode="drop"), mu.at[uniq].set(m, mode="drop"),
            nu.at[uniq].set(v, mode="drop"))


def _row_split_ops(o, mesh):
    """(gather, expand, update) of a table split by rows (sharding.TABLE_ROWS), as ``shard_map``s.

    Device n = (data i, student j), n = i·S + j, holds table rows [n·R, (n+1)·R) and the [U, d] block
    ``blocks[n]`` of the slots of u it owns (zeros elsewhere), so each unique row lives on exactly one
    device and ‖g_u‖², ‖E[u]‖² are sums over devices:

        gather:  blocks[n] = E_n[u − n·R] on the slots n owns, 0 elsewhere; owned_n   (local take)
        expand:  rows of device (i, j)'s batch = Σ_n (owned_n · blocks[n])[inv]   (reduce-scatter over
                 "data", sum over "student"; its transpose all-gathers the batch's row gradients,
                 and owned_n keeps g = 0 on the slots of other devices)
        update:  the lazy Adam rows of u that device n owns, in place (``_row_update``, others dropped)

    Per step: B·C ids and B·C·d values cross devices, never the table, its moments or a [U, d] sum.
    """
    s = mesh.shape["student"]

    def local_index(uniq, n_rows):
        idx = uniq - (jax.lax.axis_index("data") * s + jax.lax.axis_index("student")) * n_rows
        return jnp.where((idx >= 0) & (idx < n_rows), idx, n_rows)  # n_rows: not this device's

    def gather(table, uniq):
        idx = local_index(uniq, table.shape[0])
        owned = (idx < table.shape[0]).astype(table.dtype)[:, None]
        return jnp.take(table, idx, axis=0, mode="fill", fill_value=0.0), owned

    def expand(block, owned, inv):
        part = (block * owned)[inv]
        out = jax.lax.psum_scatter(part, "data", scatter_dimension=0, tiled=True)
        return jax.lax.psum(out, "student")  # over a 1-device student axis: a copy (vma typing needs it)

    def update(table, mu, nu, uniq, block, g_block, lr, t):
        return _row_update(o, table, mu, nu, local_index(uniq, table.shape[0]), block, g_block, lr, t)

    smap = functools.partial(jax.shard_map, mesh=mesh)
    return (smap(gather, in_specs=(TABLE_ROWS, P()), out_specs=(TABLE_ROWS, TABLE_ROWS)),
            smap(expand, in_specs=(TABLE_ROWS, TABLE_ROWS, P()), out_specs=P("data")),
            smap(update, in_specs=(TABLE_ROWS,) * 3 + (P(), TABLE_ROWS, TABLE_ROWS, P(), P()),
                 out_specs=(TABLE_ROWS,) * 3))


def make_lazy_train_step(model, loss_cfg, o, mesh=None, split_table=False, **jit_kw):
    """``train_step(state, batch, rng) -> (state, metrics)`` with lazy Adam on the table (jitted, donating;
    ``jit_kw``: the shardings of the state on ``mesh``, as ``steps.make_train_step``; ``split_table``: the
    table is split by rows over ``mesh``)."""
    adam = make_adam(o)
    if not split_table:  # rows [U, d] of u; a row-split table: blocks [n·U, d] (_row_split_ops)
        gather = lambda table, uniq: (jnp.take(table, uniq, axis=0, mode="fill", fill_value=0.0), None)  # noqa: E731
        expand = lambda rows, owned, inv: rows[inv]  # noqa: E731
        update_rows = functools.partial(_row_update, o)
    else:
        gather, expand, update_rows = _row_split_ops(o, mesh)
    # u and inv from the whole batch's ids on every device (one all-gather of B·C ids; left sharded,
    # unique's sort all-gathers them anyway and its gather then all-reduces B·C ids again)
    replicate = (lambda x: x) if mesh is None else functools.partial(jax.lax.with_sharding_constraint,
                                                                      shardings=replicated(mesh))

    def train_step(state, batch, rng):
        ids, mask = batch["ids"], batch.get("mask")
        if mask is not None:  # padded rows read PAD: their ids (whatever they hold) enter neither u nor R
            ids = jnp.where(mask[:, None] > 0, ids, 0)
        dense, table = _split(state.params)
        vocab, dim = table.shape
        flat = replicate(table_rows(ids, model.vocab_sizes, model.max_lens).reshape(-1))
        uniq, inv = jnp.unique(flat, size=flat.shape[0], fill_value=vocab, return_inverse=True)
        rows, owned = gather(table, uniq)  # fill slots → zeros
        step_rng = jax.random.fold_in(rng, state.step)

        def loss_fn(dense, rows):
            emb_rows = expand(rows, owned, inv.reshape(-1)).reshape(ids.shape + (dim,))
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
            g_dense, g_rows = clip_tree((g_dense, g_rows), norm, o.clip_norm)
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
