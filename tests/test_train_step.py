"""The train step by hand, for the dense and the lazy-Adam embedding optimizers: the L2 term's value,
its place in the loss and its gradient, fresh dropout masks every step, stored BatchNorm statistics,
and a padded batch (garbage ids in its masked rows) stepping exactly as its real rows alone."""

import math

import jax
import numpy as np
import optax
import pytest

from kdef_jax.config import base_config
from kdef_jax.losses import kdef_loss
from kdef_jax.models.embedding import column_offsets
from kdef_jax.models.ensemble import KDEFModel, StudentGroup
from kdef_jax.steps import create_train_state, make_train_step, make_training

VOCAB = (4, 5, 3)
OPTIMIZERS = ["dense", "lazy_adam"]


def _model(dropout=0.0):
    kw = (("batch_norm", True), ("dropout", dropout), ("dropout_rng", "hash"), ("hidden_units", (8,)))
    return KDEFModel(vocab_sizes=VOCAB, groups=(StudentGroup("mlp", 2, kw),), embedding_dim=3, embedding_init_std=0.3)


def _batch(n=6, pad=0):
    """n real rows (ids >= 1) then ``pad`` masked rows holding other real-looking ids and labels."""
    rng = np.random.default_rng(1)
    ids = np.stack([rng.integers(1, v, n + pad) for v in VOCAB], 1).astype(np.int32)
    y = (rng.random(n + pad) < 0.5).astype(np.float32)
    return {"ids": ids, "y": y, "mask": np.r_[np.ones(n), np.zeros(pad)].astype(np.float32)}


def _config(opt, **optim):
    c = base_config()
    c.optim.embedding_optimizer = opt
    for k, v in optim.items():
        setattr(c.optim, k, v)
    return c


def test_l2_value_loss_and_gradient_by_hand():
    """R = (λ/2)·Σ E²; the reported loss includes R; with SGD(1) R moves the table by exactly −λ·E."""
    model, tx, lam = _model(), optax.sgd(1.0), 0.1
    loss_cfg = base_config().loss
    state = create_train_state(model, tx, jax.random.PRNGKey(0), len(VOCAB))
    table = np.asarray(state.params["embedding"]["table"], np.float64)
    b, key = _batch(), jax.random.PRNGKey(0)
    s0, m0 = jax.jit(make_train_step(model, tx, loss_cfg, 0.0).__wrapped__)(state, b, key)
    s1, m1 = jax.jit(make_train_step(model, tx, loss_cfg, lam).__wrapped__)(state, b, key)
    assert float(m0["reg"]) == 0.0
    np.testing.assert_allclose(float(m1["reg"]), 0.5 * lam * np.sum(table**2), rtol=1e-5)
    np.testing.assert_allclose(float(m1["loss"]) - float(m0["loss"]), float(m1["reg"]), rtol=1e-4)
    moved = np.asarray(s1.params["embedding"]["table"]) - np.asarray(s0.params["embedding"]["table"])
    np.testing.assert_allclose(moved, -lam * table, rtol=1e-4, atol=1e-7)


def test_lazy_adam_l2_covers_the_batch_rows_only():
    """Lazy Adam: R = (λ/2)·Σ over the batch's distinct rows u of E[u]² (not the whole table)."""
    state, step = make_training(_model(), _config("lazy_adam", embedding_l2=0.1), jax.random.PRNGKey(0), len(VOCAB))
    table = np.asarray(state.params["embedding"]["table"], np.float64)
    b = _batch()
    rows = np.unique(b["ids"] + column_offsets(VOCAB))
    assert len(rows) < table.shape[0]  # some rows are absent, so the two sums differ
    _, m = step(state, b, jax.random.PRNGKey(3))
    np.testing.assert_allclose(float(m["reg"]), 0.5 * 0.1 * np.sum(table[rows] ** 2), rtol=1e-5)


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_dropout_masks_change_with_the_step(opt):
    """The same batch and base key at a learning rate of 0 (nothing moves): only the step number
    differs, and with it the dropout masks, hence the loss."""
    c = _config(opt, learning_rate=0.0)
    state, step = make_training(_model(dropout=0.5), c, jax.random.PRNGKey(0), len(VOCAB))
    b, key = _batch(), jax.random.PRNGKey(3)
    state, m1 = step(state, b, key)
    state, m2 = step(state, b, key)
    assert float(m1["loss"]) != float(m2["loss"])
    state, step = make_training(_model(dropout=0.0), c, jax.random.PRNGKey(0), len(VOCAB))  # no dropout: equal
    state, n1 = step(state, b, key)
    state, n2 = step(state, b, key)
    assert float(n1["loss"]) == float(n2["loss"])


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_the_step_stores_batchnorm_running_statistics(opt):
    state, step = make_training(_model(), _config(opt), jax.random.PRNGKey(0), len(VOCAB))
    before = jax.tree.map(np.asarray, state.batch_stats)
    assert jax.tree.leaves(before)
    state, _ = step(state, _batch(), jax.random.PRNGKey(3))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.batch_stats)):
        assert not np.allclose(a, np.asarray(b))


def test_lazy_adam_padded_batch_steps_as_its_real_rows():
    """6 real rows + 4 masked rows with real-looking ids (not PAD) = the 6 rows alone: the same loss,
    R, BatchNorm statistics and table (masked rows' ids touch no row and add nothing to R)."""
    c = _config("lazy_adam", embedding_l2=0.1)
    padded = _batch(6, pad=4)
    real = {k: v[:6] for k, v in padded.items()}
    assert set(map(tuple, padded["ids"][6:])) - set(map(tuple, real["ids"]))  # rows only the padding has
    out = []
    for b in (padded, real):
        state, step = make_training(_model(), c, jax.random.PRNGKey(0), len(VOCAB))
        out.append(step(state, b, jax.random.PRNGKey(3)))
    (sp, mp), (sr, mr) = out
    for k in ("loss", "reg"):
        np.testing.assert_allclose(float(mp[k]), float(mr[k]), rtol=1e-5, err_msg=k)
    for a, b in zip(jax.tree.leaves(sp.batch_stats), jax.tree.leaves(sr.batch_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sp.params["embedding"]["table"], sr.params["embedding"]["table"], rtol=1e-5, atol=1e-7)


# Each case compiles a train step (~5-10 s on a cold cache): the default run keeps one case per code path
# (a loss variant, the concat model, a consistency with its delta, the lazy-Adam step); -m slow runs the rest.
_DEFAULT_CASES = {("dense", "kd_only", "mse"), ("dense", "concat", "mse"), ("dense", "kdef", "huber"),
                  ("lazy_adam", "kdef", "huber")}
CONFIGURED_LOSSES = [("dense", v, "mse") for v in ("kdef", "kd_only", "dml_only", "no_exam", "mean", "sum", "mean_prob",
                                                   "concat", "independent")]
CONFIGURED_LOSSES += [("dense", "kdef", c) for c in ("l1", "huber", "bce", "kl")]
CONFIGURED_LOSSES += [("lazy_adam", "independent", "mse"), ("lazy_adam", "kdef", "huber")]  # its own step builds the loss too
CONFIGURED_LOSSES = [c if c in _DEFAULT_CASES else pytest.param(*c, marks=pytest.mark.slow) for c in CONFIGURED_LOSSES]


@pytest.mark.parametrize("opt,variant,consistency", CONFIGURED_LOSSES)
def test_the_step_optimises_the_configured_loss(opt, variant, consistency):
    """The step's loss is kdef_loss(variant, consistency, huber_delta) of the model's train-mode logits on
    the step's dropout key, and differs from the default objective's (so a step that ignored the
    config would fail here)."""
    from kdef_jax.losses import kdef_loss

    kw = (("batch_norm", True), ("dropout", 0.2), ("dropout_rng", "hash"), ("hidden_units", (8,)))
    model = KDEFModel(vocab_sizes=VOCAB, groups=(StudentGroup("mlp", 3, kw),), embedding_dim=3,
                      embedding_init_std=0.3, concat_head=variant == "concat")
    c = _config(opt)
    c.loss.variant, c.loss.consistency, c.loss.huber_delta = variant, consistency, 0.05
    state, step = make_training(model, c, jax.random.PRNGKey(0), len(VOCAB))
    b, key = _batch(n=7, pad=3), jax.random.PRNGKey(5)
    variables = {"params": jax.tree.map(np.asarray, state.params), "batch_stats": jax.tree.map(np.asarray, state.batch_stats)}
    logits, _ = model.apply(variables, b["ids"], True, b["mask"], rngs={"dropout": jax.random.fold_in(key, 0)},
                            mutable=["batch_stats"])

    def loss(v, cons):
        return float(kdef_loss(logits, b["y"], variant=v, consistency=cons, mask=b["mask"], huber_delta=0.05)[0])

    want = loss(variant, consistency)
    assert abs(want - loss("kdef", "mse")) > 1e-4 * abs(want) or (variant, consistency) == ("kdef", "mse")
    _, m = step(state, b, key)
    np.testing.assert_allclose(float(m["loss"]) - float(m["reg"]), want, rtol=2e-5)


def _loss_gradient(model, c, state, b, key):
    """∇ of the configured kdef_loss (no L2 term) at ``state`` on batch ``b`` with the step's dropout key
    (fold_in(key, step 0)), float64 NumPy; jitted: one compile, not one per op."""

    def loss_fn(params):
        logits, _ = model.apply({"params": params, "batch_stats": state.batch_stats}, b["ids"], True, b["mask"],
                                rngs={"dropout": jax.random.fold_in(key, 0)}, mutable=["batch_stats"])
        return kdef_loss(logits, b["y"], variant=c.loss.variant, consistency=c.loss.consistency, mask=b["mask"],
                         huber_delta=c.loss.huber_delta)[0]

    return jax.tree.map(lambda x: np.array(x, np.float64), jax.jit(jax.grad(loss_fn))(state.params))


def test_dense_step_clips_the_whole_gradient_l2_term_included_by_hand():
    """Spec §3: g = clip_by_global_norm(∇(loss + R), c) with ∇R = λ·E inside the clipped gradient (torch:
    R is part of the loss that backward() differentiates, then clip_grad_norm_ with factor
    c/(‖g‖ + 1e-6)). With c = 0.01 far below ‖g‖ the step clips: after one step Adam's first moment
    is (1 − β₁)·g·c/(‖g‖ + 1e-6) for every parameter, and the grad_norm metric is ‖g‖ (before clipping)."""
    model, lam, clip = _model(), 0.1, 0.01
    c = _config("dense", clip_norm=clip, embedding_l2=lam)
    state, step = make_training(model, c, jax.random.PRNGKey(0), len(VOCAB))
    b, key = _batch(), jax.random.PRNGKey(0)
    g = _loss_gradient(model, c, state, b, key)
    g["embedding"]["table"] += lam * np.array(state.params["embedding"]["table"], np.float64)
    norm = np.sqrt(sum(np.sum(x**2) for x in jax.tree.leaves(g)))
    assert norm > 10 * clip  # the step clips
    state, m = step(state, b, key)
    np.testing.assert_allclose(float(m["grad_norm"]), norm, rtol=1e-5)
    mu = state.opt_state[1].inner_state[0].mu
    flat = jax.tree_util.tree_flatten_with_path(g)[0]
    for (path, want), got in zip(flat, jax.tree.leaves(mu)):
        np.testing.assert_allclose(np.asarray(got), (1 - c.optim.b1) * want * clip / (norm + 1e-6),
                                   rtol=1e-4, atol=1e-9, err_msg=jax.tree_util.keystr(path))


def test_default_optimizer_is_the_references():
    """Spec §3 / §5: clip_by_global_norm(10), Adam(1e-3, 0.9, 0.999, 1e-8), λ_emb·‖E‖²/2, plateau ×0.1,
    floor 1e-6, patience 2, min_delta 1e-6 (the numbers every config inherits)."""
    o = base_config().optim
    assert (o.clip_norm, o.learning_rate, o.b1, o.b2, o.eps) == (10.0, 1e-3, 0.9, 0.999, 1e-8)
    assert (o.lr_decay, o.min_lr, o.patience, o.min_delta) == (0.1, 1e-6, 2, 1e-6)


def test_lazy_adam_l2_gradient_enters_the_clipped_row_gradient_by_hand():
    """Lazy Adam: λ·E[u] of the batch's rows u joins their gradient before the global clip (‖g‖ over the dense
    parameters and those rows) and Adam: one clipped step's first moments are (1 − β₁)·g·c/(‖g‖ + 1e-6)."""
    lam, clip = 0.1, 0.01
    model = _model()
    c = _config("lazy_adam", clip_norm=clip, embedding_l2=lam)
    state, step = make_training(model, c, jax.random.PRNGKey(0), len(VOCAB))
    b, key = _batch(), jax.random.PRNGKey(0)
    rows = np.unique(b["ids"] + column_offsets(VOCAB))
    g = _loss_gradient(model, c, state, b, key)
    table = np.array(state.params["embedding"]["table"], np.float64)
    g_rows = g["embedding"]["table"][rows] + lam * table[rows]  # R = (λ/2)·Σ_u ‖E[u]‖² over the batch's rows
    g_dense = {k: v for k, v in g.items() if k != "embedding"}
    norm = math.sqrt(sum(np.sum(x**2) for x in jax.tree.leaves(g_dense)) + np.sum(g_rows**2))
    assert np.sum(g_rows**2) > 0.01 * norm**2  # the rows carry a real share of the norm
    assert norm > 10 * clip  # the step clips
    b1 = c.optim.b1
    new, m = step(state, b, key)
    np.testing.assert_allclose(float(m["grad_norm"]), norm, rtol=1e-5)
    factor = (1 - b1) * clip / (norm + 1e-6)  # Adam's first moment after one clipped step
    np.testing.assert_allclose(np.asarray(new.opt_state[2].mu)[rows], factor * g_rows, rtol=1e-4, atol=1e-9)
    dense_mu = new.opt_state[1].inner_state[0].mu
    for want, got in zip(jax.tree.leaves(g_dense), jax.tree.leaves(dense_mu)):
        np.testing.assert_allclose(np.asarray(got), factor * want, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("optimizer", ["dense", "lazy_adam"])
def test_the_abstract_initial_state_is_a_restore_template_of_the_training_state(optimizer):
    """export.load_run restores into jax.eval_shape(initial_state): shapes and dtypes only (a real initial
    state beside the restored one was ~1× the state's bytes more at the peak), the same tree as training's."""
    from kdef_jax.steps import initial_state

    model, c = _model(), _config(optimizer)
    abstract = jax.eval_shape(lambda: initial_state(model, c, jax.random.PRNGKey(0), len(VOCAB))[0])
    real, _ = make_training(model, c, jax.random.PRNGKey(0), len(VOCAB))
    leaves = jax.tree.leaves(abstract)
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert jax.tree.structure(abstract) == jax.tree.structure(real)
    assert [(x.shape, x.dtype) for x in leaves] == [(x.shape, x.dtype) for x in jax.tree.leaves(real)]
