"""Deployment: a single extracted student and the exported predictor match the ensemble model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdef_jax.export import export_predictor, extract_student, load_exported, make_predictor
from kdef_jax.models.ensemble import KDEFModel, StudentGroup

KW = (("batch_norm", True), ("dropout", 0.1), ("hidden_units", (8, 6)))


def _model():
    groups = (StudentGroup("mlp", 3, KW), StudentGroup("mlp", 2, KW))
    return KDEFModel(vocab_sizes=(5, 7, 4), groups=groups, embedding_dim=4)


def _ids(b=9):
    rng = np.random.default_rng(0)
    return jnp.asarray(np.stack([rng.integers(1, v, size=b) for v in (5, 7, 4)], 1), jnp.int32)


def test_extracted_student_reproduces_its_logit():
    model, ids = _model(), _ids()
    v = model.init(jax.random.PRNGKey(0), ids, False)
    v = {"params": v["params"], "batch_stats": jax.tree.map(lambda x: x + 0.1, v["batch_stats"])}
    full = model.apply(v, ids, False, None)
    for k in range(5):
        single, sv = extract_student(model, v, k)
        np.testing.assert_allclose(single.apply(sv, ids, False, None)[0], full[k], rtol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        extract_student(model, v, 5)


def test_predictor_and_export_roundtrip():
    model, ids = _model(), _ids()
    v = model.init(jax.random.PRNGKey(0), ids, False)
    full = model.apply(v, ids, False, None)
    ens = make_predictor(model, v)(ids)
    np.testing.assert_allclose(ens, jax.nn.sigmoid(full.mean(0)), rtol=1e-6)
    np.testing.assert_allclose(make_predictor(model, v, 2)(ids), jax.nn.sigmoid(full[2]), rtol=1e-6)
    call = load_exported(export_predictor(model, v, 3))
    np.testing.assert_allclose(call(ids), ens, rtol=1e-6)
    np.testing.assert_allclose(call(ids[:4]), ens[:4], rtol=1e-6)  # symbolic batch size


def test_load_run_restores_the_best_epoch(tmp_path):
    from kdef_jax.config import base_config
    from kdef_jax.data.dataset import load_dataset
    from kdef_jax.export import load_run
    from kdef_jax.metrics import auc, ensemble_metrics
    from kdef_jax.train import train_and_evaluate

    c = base_config()
    c.data.cache_dir = str(tmp_path / "cache")
    c.data.synthetic.num_train, c.data.synthetic.num_valid, c.data.synthetic.num_test = 3000, 700, 700
    c.data.name = "synthetic_test"
    c.model.hidden_units = (16, 16)
    c.train.batch_size, c.train.num_epochs, c.train.progress, c.train.plot = 512, 2, False, False
    res = train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    model, variables, fmap, results = load_run(tmp_path / "run")
    assert results["best_student"] == res["best_student"]
    test = load_dataset(c.data, log=lambda *a: None).splits["test"]
    m = ensemble_metrics(test.y, model.apply(variables, jnp.asarray(test.x), False, None))
    assert m["teacher"]["auc"] == pytest.approx(res["rows"][0]["test_auc"], rel=1e-9)
    k = res["best_student_index"]
    assert m["students"][k]["auc"] == pytest.approx(res["rows"][1 + k]["test_auc"], rel=1e-9)
    p_k = make_predictor(model, variables, k)(jnp.asarray(test.x))  # float32 probabilities: ties may move
    assert auc(test.y, p_k) == pytest.approx(res["rows"][1 + k]["test_auc"], abs=1e-4)
