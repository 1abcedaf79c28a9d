"""Row-sparse (lazy) Adam on the embedding table: equals dense Adam when every row is in every batch,
and leaves rows absent from the batch untouched."""

import jax
import jax.numpy as jnp
import numpy as np

from kdef_jax.config import base_config
from kdef_jax.lazy_adam import _row_update
from kdef_jax.models.embedding import field_offsets
from kdef_jax.models.ensemble import KDEFModel, StudentGroup
from kdef_jax.steps import make_training, set_learning_rate

VOCAB = (4, 5, 3)
KW = (("batch_norm", True), ("dropout", 0.0), ("dropout_rng", "hash"), ("hidden_units", (8,)))


def _config(opt, l2=0.0):
    c = base_config()
    c.optim.embedding_optimizer = opt
    c.optim.embedding_l2 = l2
    c.optim.learning_rate = 0.05
    c.optim.clip_norm = 0.5  # small: clipping is active, so the global norm must include the rows
    return c


def _model():
    return KDEFModel(vocab_sizes=VOCAB, groups=(StudentGroup("mlp", 2, KW),), embedding_dim=3, embedding_init_std=0.3)


def _batch(rows):
    rng = np.random.default_rng(1)
    return {"ids": np.asarray(rows, np.int32), "y": (rng.random(len(rows)) < 0.5).astype(np.float32),
            "mask": np.ones(len(rows), np.float32)}


def _run(opt, batches, l2=0.0):
    state, step = make_training(_model(), _config(opt, l2), jax.random.PRNGKey(0), len(VOCAB))
    m = None
    for b in batches:
        state, m = step(state, b, jax.random.PRNGKey(3))
    return state, m


def test_lazy_equals_dense_when_every_row_is_in_every_batch():
    # every non-PAD id of every field appears in each batch
    full = _batch([[1, 1, 1], [2, 2, 2], [3, 3, 1], [1, 4, 2], [2, 1, 2], [3, 3, 1]])
    dense, md = _run("dense", [full] * 3)
    lazy, ml = _run("lazy_adam", [full] * 3)
    np.testing.assert_allclose(float(md["loss"]), float(ml["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(md["grad_norm"]), float(ml["grad_norm"]), rtol=1e-5)
    flat = jax.tree_util.tree_flatten_with_path(dense.params)[0]
    for (path, a), b in zip(flat, jax.tree_util.tree_leaves(lazy.params)):
        name = jax.tree_util.keystr(path)
        if "Dense_0" in name and "bias" in name:
            continue  # bias right before BatchNorm: true gradient 0, Adam turns float noise into ±lr steps
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=name)


def test_absent_rows_keep_values_and_moments_pad_rows_stay_zero():
    b = _batch([[1, 1, 1], [1, 2, 1], [1, 2, 2]])
    before, _ = _run("lazy_adam", [])
    after, _ = _run("lazy_adam", [b, b], l2=0.1)
    t0, t1 = np.asarray(before.params["embedding"]["table"]), np.asarray(after.params["embedding"]["table"])
    off = field_offsets(VOCAB)
    used = {off[0] + 1, off[1] + 1, off[1] + 2, off[2] + 1, off[2] + 2}
    for r in range(t0.shape[0]):
        if r in used:
            assert not np.allclose(t0[r], t1[r]), r
        else:
            np.testing.assert_array_equal(t0[r], t1[r])
            assert not np.asarray(after.opt_state[2].mu)[r].any()
    assert not t1[off].any()  # PAD rows exactly zero
    dense_after, _ = _run("dense", [b, b], l2=0.1)
    # dense Adam moves absent rows through the whole-table L2 term (the reference's behaviour)
    assert not np.allclose(np.asarray(dense_after.params["embedding"]["table"])[off[0] + 3], t0[off[0] + 3])


def test_training_run_with_lazy_adam(tmp_path):
    from kdef_jax.train import train_and_evaluate

    c = base_config()
    c.data.cache_dir = str(tmp_path / "cache")
    c.data.synthetic.num_train, c.data.synthetic.num_valid, c.data.synthetic.num_test = 3000, 700, 700
    c.data.name = "synthetic_test"
    c.model.hidden_units = (16, 16)
    c.optim.embedding_optimizer = "lazy_adam"
    c.train.batch_size, c.train.num_epochs, c.train.progress, c.train.plot = 512, 2, False, False
    res = train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    assert res["rows"][0]["test_auc"] > 0.55


def test_lazy_adam_rows_by_hand_across_two_batches():
    """Step 1 (lr 0.05) on batch A, then the lr set to 0.01 in place (the plateau rule's
    set_learning_rate), step 2 on batch B. Field 0's id 1 is only in A, id 2 only in B, id 3 in both.
    * Adam's first step moves every coordinate of a touched row by lr·g/(|g| + ε) = ±0.05;
    * a row of A absent from B keeps its value and both moments bit for bit in step 2;
    * a row first touched at step 2 moves by lr·m̂/√v̂ with the GLOBAL step t = 2 (TF LazyAdam):
      (1−β₁)/(1−β₁²) / √((1−β₂)/(1−β₂²)) = √(1+β₂)/(1+β₁) = √1.999/1.9 = 0.7441368, at the new lr 0.01
      (a per-row count would give 1; an lr read from the config instead of the state 0.05)."""
    off = field_offsets(VOCAB)
    a = _batch([[1, 1, 1], [3, 2, 1], [1, 3, 2], [3, 4, 2]])  # a row shared by every row of a batch
    b = _batch([[2, 1, 1], [3, 4, 2], [2, 3, 2], [3, 2, 1]])  # gets no gradient through BatchNorm
    only_a, only_b = off[0] + 1, off[0] + 2
    state, step = make_training(_model(), _config("lazy_adam"), jax.random.PRNGKey(0), len(VOCAB))
    t0 = np.array(state.params["embedding"]["table"])
    state, _ = step(state, a, jax.random.PRNGKey(3))
    t1 = np.array(state.params["embedding"]["table"])
    mu1, nu1 = np.array(state.opt_state[2].mu), np.array(state.opt_state[2].nu)
    np.testing.assert_allclose(np.abs(t1[only_a] - t0[only_a]), 0.05, rtol=1e-3)
    state = set_learning_rate(state, 0.01)
    state, _ = step(state, b, jax.random.PRNGKey(3))
    t2 = np.array(state.params["embedding"]["table"])
    np.testing.assert_array_equal(t2[only_a], t1[only_a])
    np.testing.assert_array_equal(np.asarray(state.opt_state[2].mu)[only_a], mu1[only_a])
    np.testing.assert_array_equal(np.asarray(state.opt_state[2].nu)[only_a], nu1[only_a])
    np.testing.assert_allclose(np.abs(t2[only_b] - t1[only_b]), 0.01 * np.sqrt(1.999) / 1.9, rtol=1e-3)


def test_set_learning_rate_keeps_the_lazy_state_and_a_run_goes_on_after_a_drop(tmp_path):
    """The plateau rule's set_learning_rate on a lazy-Adam state (EmptyState, Adam, LazyAdamState) keeps
    all three parts; a run whose epoch 2 does not improve (min_delta 1) trains epoch 3 at 1e-4."""
    import pytest
    from run_helpers import tiny_config
    from kdef_jax.steps import get_learning_rate
    from kdef_jax.train import train_and_evaluate

    state, step = make_training(_model(), _config("lazy_adam"), jax.random.PRNGKey(0), len(VOCAB))
    state, _ = step(state, _batch([[1, 1, 1], [3, 2, 1]]), jax.random.PRNGKey(3))
    mu = np.array(state.opt_state[2].mu)
    s2 = set_learning_rate(state, 1e-4)
    assert len(s2.opt_state) == 3 and get_learning_rate(s2) == pytest.approx(1e-4)
    np.testing.assert_array_equal(np.asarray(s2.opt_state[2].mu), mu)
    c = tiny_config(tmp_path, **{"optim.embedding_optimizer": "lazy_adam", "optim.min_delta": 1.0, "optim.patience": 5,
                                 "train.num_epochs": 3, "model.num_students": 2})
    res = train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    assert res["epochs_run"] == 3 and res["final_lr"] == pytest.approx(1e-5)


# Cases mutation testing of lazy_adam.py found unpinned (2026-12-07).


def test_row_update_matches_a_numpy_adam_step_and_drops_fill_slots():
    """One lazy step at global t = 3 on rows u = (1, 3) with a fill slot (index V = 5): numpy reference
    m = β₁m + (1−β₁)g, v = β₂v + (1−β₂)g², E −= lr·(m/(1−β₁³)) / (√(v/(1−β₂³)) + ε); other rows untouched."""
    o = base_config().optim
    o.eps = 3e-3  # big enough that its place (outside the root) shows
    rng = np.random.default_rng(0)
    table, mu = rng.normal(size=(5, 2)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32) * 0.1
    nu = rng.random((5, 2)).astype(np.float32) * 1e-3
    uniq = np.array([1, 3, 5], np.int32)
    g = rng.normal(size=(3, 2)).astype(np.float32)
    g[2] = 0.0
    rows = np.concatenate([table[[1, 3]], np.zeros((1, 2), np.float32)])
    lr, t = 0.01, 3.0
    nt, nm, nv = (np.asarray(a) for a in _row_update(o, jnp.asarray(table), jnp.asarray(mu), jnp.asarray(nu),
                                                     jnp.asarray(uniq), jnp.asarray(rows), jnp.asarray(g), lr, t))
    b1, b2, eps = 0.9, 0.999, 3e-3
    m = b1 * mu[[1, 3]].astype(np.float64) + (1 - b1) * g[:2]
    v = b2 * nu[[1, 3]].astype(np.float64) + (1 - b2) * g[:2].astype(np.float64) ** 2
    new = table[[1, 3]] - lr * (m / (1 - b1**3)) / (np.sqrt(v / (1 - b2**3)) + eps)
    np.testing.assert_allclose(nm[[1, 3]], m, rtol=1e-5)
    np.testing.assert_allclose(nv[[1, 3]], v, rtol=1e-5)
    np.testing.assert_allclose(nt[[1, 3]], new, rtol=1e-5)
    for a, b in ((nt, table), (nm, mu), (nv, nu)):
        np.testing.assert_array_equal(a[[0, 2, 4]], b[[0, 2, 4]])


def test_lazy_step_keeps_pad_rows_zero_when_real_rows_hold_pad_ids():
    """Real (mask 1) rows with PAD ids (0) put each field's PAD row into u; the (id ≠ 0) mask must stop
    its gradient on the lazy path too (the rows are handed to the model), so PAD rows and their moments
    stay exactly 0 while the other rows of the batch move."""
    vocab = (4, 5, 3)
    kw = (("batch_norm", True), ("dropout", 0.0), ("dropout_rng", "hash"), ("hidden_units", (8,)))
    model = KDEFModel(vocab_sizes=vocab, groups=(StudentGroup("mlp", 2, kw),), embedding_dim=3, embedding_init_std=0.3)
    c = base_config()
    c.optim.embedding_optimizer, c.optim.learning_rate, c.optim.embedding_l2 = "lazy_adam", 0.05, 0.1
    state, step = make_training(model, c, jax.random.PRNGKey(0), len(vocab))
    ids = np.array([[0, 1, 2], [1, 0, 1], [2, 3, 0], [3, 4, 2], [1, 2, 1], [0, 0, 2]], np.int32)
    batch = {"ids": ids, "y": np.array([1, 0, 1, 0, 0, 1], np.float32), "mask": np.ones(6, np.float32)}
    t0 = np.array(state.params["embedding"]["table"])
    state, _ = step(state, batch, jax.random.PRNGKey(3))
    t1 = np.asarray(state.params["embedding"]["table"])
    pads = field_offsets(vocab)
    np.testing.assert_array_equal(t1[pads], 0.0)
    np.testing.assert_array_equal(np.asarray(state.opt_state[2].mu)[pads], 0.0)
    np.testing.assert_array_equal(np.asarray(state.opt_state[2].nu)[pads], 0.0)
    assert not np.allclose(t1[pads[0] + 1], t0[pads[0] + 1])
