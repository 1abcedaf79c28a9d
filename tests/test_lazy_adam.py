"""Row-sparse (lazy) Adam on the embedding table: equals dense Adam when every row is in every batch,
and leaves rows absent from the batch untouched."""

import jax
import numpy as np

from kdef_jax.config import base_config
from kdef_jax.models.embedding import field_offsets
from kdef_jax.models.ensemble import KDEFModel, StudentGroup
from kdef_jax.steps import make_training

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
