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
