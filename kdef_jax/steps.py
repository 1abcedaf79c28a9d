"""Train state, optimizer, and the two compiled functions: ``train_step`` and ``predict_step``.

Objective per step (spec §3, §1.5): ``kdef_loss(logits, y) + (λ_emb/2)·‖E‖²_F`` over the WHOLE
embedding table; gradients clipped by global norm (10) then Adam (dense, lr injectable so the
plateau schedule changes it in place without losing the moments).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kdef_jax import runtime, sharding
from kdef_jax.losses import kdef_loss
from kdef_jax.reductions import sum_of_squares, tree_norm

# The training code tunes XLA:CPU's host runtime when imported, before any JAX computation starts the
# backend (kdef_jax/runtime.py; KDEF_JAX_TUNE_CPU=0 opts out). kdef_jax.losses and the models alone
# leave the importing process as it is.
runtime.tune_cpu_runtime()


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def clip_tree(tree, g_norm: jax.Array, max_norm: float):
    """``tree`` · min(1, c/(‖g‖ + 1e-6)) (torch ``clip_grad_norm_``'s factor), as a select on a scalar
    predicate: leaves pass bit for bit when the factor is ≥ 1."""
    scale = max_norm / (g_norm + 1e-6)
    clip = scale < 1.0
    return jax.tree.map(lambda t: jax.lax.select(clip, t * scale.astype(t.dtype), t), tree)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """g ← g · min(1, c/(‖g‖ + 1e-6)), torch's ``clip_grad_norm_`` as the reference runs it (bit for bit:
    g passes unchanged when the factor is ≥ 1; ``optax.clip_by_global_norm``'s (g/‖g‖)·c when ‖g‖ ≥ c is
    ≤ 1 ulp and a relative 1e-6/‖g‖ away), with ‖g‖ from one-pass sums (``tree_norm``): no g² copy of the
    embedding table's gradient is written. The one scalar factor fuses into Adam's moment passes, where
    optax's divide made XLA:CPU write a g/‖g‖ copy of the table's gradient every step; the select on a
    scalar predicate (not a multiply by min(1, ·)) keeps non-clipping steps at the speed of no clipping.
    optax's empty state."""

    def update_fn(updates, state, params=None):
        del params
        return clip_tree(updates, tree_norm(updates), max_norm), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def make_adam(o) -> optax.GradientTransformation:
    """Adam with ``config.optim``'s hyperparameters, the learning rate injected (changeable in place)."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=o.learning_rate, b1=o.b1, b2=o.b2, eps=o.eps)


def make_optimizer(o) -> optax.GradientTransformation:
    adam = make_adam(o)
    return optax.chain(clip_by_global_norm(o.clip_norm), adam) if o.clip_norm > 0 else optax.chain(optax.identity(), adam)


def get_learning_rate(state: TrainState) -> float:
    return float(state.opt_state[1].hyperparams["learning_rate"])


def set_learning_rate(state: TrainState, lr: float) -> TrainState:
    """Same Adam moments, new learning rate (torch ReduceLROnPlateau semantics)."""
    inject = state.opt_state[1]
    hp = dict(inject.hyperparams)
    old = hp["learning_rate"]
    new = np.asarray(lr, dtype=jnp.result_type(old))
    # Where the old value lives (one device, or replicated over a mesh that may span processes), and as
    # committed as it was: either change would make the next train step a cache miss and a recompile.
    committed = isinstance(old, jax.Array) and old.committed
    hp["learning_rate"] = sharding.to_mesh(new, old.sharding) if committed else jnp.asarray(new)
    return state.replace(opt_state=(state.opt_state[0], inject._replace(hyperparams=hp), *state.opt_state[2:]))


def create_train_state(model, tx, rng, num_columns: int, batch_size: int = 2, opt_init=None) -> TrainState:
    """Initialised variables and optimizer state (``opt_init(params)`` overrides ``tx.init``)."""
    ids = jnp.ones((batch_size, num_columns), jnp.int32)
    variables = jax.jit(functools.partial(model.init, train=False))({"params": rng}, ids)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=(opt_init or tx.init)(params),
    )


def make_training(model, config, rng, num_columns: int, mesh=None):
    """(initial TrainState, jitted train_step) for ``config.optim.embedding_optimizer``.

    "dense": the reference's dense Adam over every parameter (default); "lazy_adam": row-sparse Adam
    on the embedding table (kdef_jax/lazy_adam.py, a documented deviation for huge vocabularies).
    ``mesh`` (kdef_jax/sharding.py): the state is placed on it and the step compiled for it.
    """
    o = config.optim
    state, tx = initial_state(model, config, rng, num_columns)
    state, jit_kw, lookup = _place(state, model, mesh, config)
    if o.embedding_optimizer == "lazy_adam":  # lazy Adam gathers its batch's rows itself
        from kdef_jax import lazy_adam

        return state, lazy_adam.make_lazy_train_step(model, config.loss, o, mesh, split_table=lookup is not None, **jit_kw)
    return state, make_train_step(model, tx, config.loss, o.embedding_l2, lookup=lookup, **jit_kw)


def initial_state(model, config, rng, num_columns: int):
    """(the initial TrainState, not placed on any mesh, and its optax transform; None for lazy Adam, whose
    moments it initialises itself). ``jax.eval_shape`` of it is a restore template that allocates nothing."""
    o = config.optim
    if o.embedding_optimizer == "lazy_adam":
        from kdef_jax import lazy_adam

        return create_train_state(model, None, rng, num_columns, opt_init=lambda p: lazy_adam.init_opt_state(p, o)), None
    tx = make_optimizer(o)
    return create_train_state(model, tx, rng, num_columns), tx


def _place(state: TrainState, model, mesh, config):
    """(state on ``mesh``, the train step's jit shardings, the table lookup of a row-split table or
    None); without a mesh: the state committed to the device it is on, {} and None. Committed from
    the start, the state's arrays stay as placed as what the step returns and what a checkpoint
    restores, so the steps compile once (a committed argument where an uncommitted one was is a
    cache miss)."""
    if mesh is None:
        return jax.tree.map(lambda x: jax.device_put(x, x.sharding), state), {}, None
    lookup = sharding.table_lookup(mesh, config.mesh)
    state_sh = sharding.state_shardings(mesh, state, model.groups, split_table=lookup is not None)
    rep = sharding.replicated(mesh)
    jit_kw = {"in_shardings": (state_sh, sharding.batch_sharding(mesh), rep), "out_shardings": (state_sh, rep)}
    return sharding.to_mesh(state, state_sh), jit_kw, lookup


def make_train_step(model, tx, loss_cfg, emb_l2: float, lookup=None, **jit_kw):
    """Returns the jitted, state-donating ``train_step(state, batch, rng) -> (state, metrics)``.

    ``rng`` is the run's dropout base key; the step folds in ``state.step`` so every step and every
    student (vmap ``split_rngs``) draws its own masks. Metrics are device scalars: the step's loss
    terms (means over the real, mask=1, rows) and its gradient norm; the caller keeps them on the
    device and averages them over the epoch's steps (one host sync per epoch; as the reference's
    "Train loss": the mean over the epoch's batches, R included; spec §4).
    ``jit_kw``: ``in_shardings``/``out_shardings`` for a device mesh (``make_training``); ``lookup``:
    how the table's rows are gathered (``sharding.row_split_lookup`` for a row-split table).
    """
    gather = _row_gather(model, lookup)

    def train_step(state: TrainState, batch, rng):
        mask = batch.get("mask")  # None (a caller's full batch; the library's loader always passes one): no masking work compiled in
        step_rng = jax.random.fold_in(rng, state.step)

        def loss_fn(params):
            logits, new_vars = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                batch["ids"], True, mask, gather(params, batch["ids"]),
                rngs={"dropout": step_rng},
                mutable=["batch_stats"],
            )
            loss, aux = kdef_loss(
                logits, batch["y"], variant=loss_cfg.variant, consistency=loss_cfg.consistency,
                mask=mask, huber_delta=loss_cfg.huber_delta,
            )
            return loss, (aux, new_vars["batch_stats"])

        (loss, (aux, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        # R = (λ/2)·‖E‖² added outside autodiff: its gradient λ·E joins the table's gradient in one fused
        # pass, and the value is a one-pass sum (XLA:CPU otherwise materialises E² every step). The "+ 0·R" (exact
        # for finite R) makes R's read of E an ancestor of the table's update, so XLA updates the donated
        # table in place instead of copying the whole table first.
        reg = jnp.zeros((), jnp.float32)
        if emb_l2 > 0:
            table = state.params["embedding"]["table"]
            reg = 0.5 * emb_l2 * sum_of_squares(table)
            grads["embedding"]["table"] = grads["embedding"]["table"] + emb_l2 * table + 0.0 * reg
        total = loss + reg
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
        metrics = {
            "loss": total,
            "reg": reg,
            "label_bce": aux["label_bce"],
            "teacher_bce": aux["teacher_bce"],
            "kd": aux["kd"],
            "dml": aux["dml"],
            "grad_norm": tree_norm(grads),
        }
        return new_state, metrics

    return jax.jit(train_step, donate_argnums=(0,), **jit_kw)


def _row_gather(model, lookup):
    """``(params, ids) -> rows [B, C, d]`` through ``lookup``, or ``-> None`` (the model gathers itself)."""
    if lookup is None:
        return lambda params, ids: None
    from kdef_jax.models.embedding import table_rows

    return lambda params, ids: lookup(params["embedding"]["table"], table_rows(ids, model.vocab_sizes, model.max_lens))


def make_predict_step(model, lookup=None):
    """Jitted ``predict_step(params, batch_stats, ids) -> logits [K, B]`` in eval mode (``lookup``: as
    ``make_train_step``)."""
    gather = _row_gather(model, lookup)

    def predict_step(params, batch_stats, ids):
        return model.apply({"params": params, "batch_stats": batch_stats}, ids, False, None, gather(params, ids))

    return jax.jit(predict_step)


def count_params(params) -> dict:
    """Trainable parameter counts: embedding, each student group, total."""
    sizes = {k: sum(int(x.size) for x in jax.tree_util.tree_leaves(v)) for k, v in params.items()}
    sizes["total"] = sum(sizes.values())
    return sizes
