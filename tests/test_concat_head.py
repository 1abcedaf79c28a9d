"""The MLPs_concat head (spec §7; ``loss.variant="concat"``): a Linear(K·u → 1) over the students' last
hidden layers, appended to the K student logits as row K. Parameter counts (EKTF's plus K·u + 1), the
head's logit by hand, which parameters its loss trains, and the deployment helpers around it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdef_jax.data.synthetic import CRITEO_VOCAB
from kdef_jax.export import extract_student, fold_batchnorm, make_predictor
from kdef_jax.losses import kdef_loss
from kdef_jax.models.embedding import FeatureEmbedding
from kdef_jax.models.ensemble import KDEFModel, StudentGroup
from kdef_jax.models.students.mlp import MLPStudent
from kdef_jax.steps import count_params

VOCAB = (5, 7, 4)


def _model(k=3, hidden=(8, 6), dropout=0.0, impl="vmap", kind="mlp", vocab=VOCAB, dim=4):
    kw = (("batch_norm", True), ("dropout", dropout), ("hidden_units", hidden)) if kind == "mlp" else ()
    return KDEFModel(vocab_sizes=vocab, groups=(StudentGroup(kind, k, kw),), embedding_dim=dim, group_impl=impl,
                     concat_head=True)


def _ids(b=16, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.stack([rng.integers(1, v, size=b) for v in VOCAB], 1), jnp.int32)


@pytest.mark.parametrize("k,ektf_total", [(3, 16_292_755), (10, 20_307_962)])
def test_criteo_parameter_count_is_ektf_plus_k_times_400_plus_1(k, ektf_total):
    """Spec §7: MLPs_concat's logged count is EKTF's plus K·400 + 1."""
    kw = (("batch_norm", True), ("dropout", 0.1), ("hidden_units", (400, 400, 400)))
    model = KDEFModel(vocab_sizes=CRITEO_VOCAB, groups=(StudentGroup("mlp", k, kw),), embedding_dim=16, concat_head=True)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.ones((2, 39), jnp.int32)))
    counts = count_params(shapes["params"])
    assert counts["concat_head"] == k * 400 + 1
    assert counts["total"] == ektf_total + k * 400 + 1
    assert shapes["params"]["concat_head"]["kernel"].shape == (k * 400, 1)


def test_head_logit_by_hand_without_hidden_layers():
    """No hidden layers: a_k is the flattened embedding e itself, so with a head kernel (w1, w2) and
    bias b the head's logit is (w1 + w2)·e + b next to the students' w_k·e + b_k."""
    model = _model(k=2, hidden=(), vocab=(3,), dim=1)
    v = model.init(jax.random.PRNGKey(0), jnp.ones((1, 1), jnp.int32), False)
    params = {"embedding": {"table": jnp.asarray([[0.0], [1.0], [-2.0]])},
              "group0_mlp": {"Dense_0": {"kernel": jnp.asarray([[[2.0]], [[-1.0]]]), "bias": jnp.asarray([[0.5], [1.0]])}},
              "concat_head": {"kernel": jnp.asarray([[3.0], [0.25]]), "bias": jnp.asarray([-1.0])}}
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, v["params"])
    out = model.apply({"params": params}, jnp.asarray([[1], [2], [0]], jnp.int32), False, None)
    # rows: student 0 = 2e + 0.5, student 1 = -e + 1, head = 3e + 0.25e - 1, for e = 1, -2, 0 (PAD)
    np.testing.assert_allclose(np.asarray(out), [[2.5, -3.5, 0.5], [0.0, 3.0, 1.0], [2.25, -7.5, -1.0]], rtol=1e-6)


@pytest.mark.parametrize("impl", ["vmap", "unrolled"])
def test_head_reads_each_students_last_hidden_layer_in_order(impl):
    """Row K = [a_1; …; a_K]·w + b with a_k the hidden output of student k run alone (eval mode)."""
    model, ids = _model(impl=impl), _ids()
    v = model.init(jax.random.PRNGKey(1), ids, False)
    out = model.apply(v, ids, False, None)
    assert out.shape == (4, 16)
    emb = FeatureEmbedding(VOCAB, 4).apply({"params": v["params"]["embedding"]}, ids)
    student = MLPStudent(hidden_units=(8, 6), dropout=0.0, with_hidden=True)
    hidden = []
    for k in range(3):
        part = {c: jax.tree.map(lambda x: x[k], v[c]["group0_mlp"]) for c in ("params", "batch_stats")}
        z_k, a_k = student.apply(part, emb, False)
        np.testing.assert_allclose(out[k], z_k, rtol=1e-5, atol=1e-6)
        hidden.append(a_k)
    head = v["params"]["concat_head"]
    want = jnp.concatenate(hidden, axis=1) @ head["kernel"][:, 0] + head["bias"][0]
    np.testing.assert_allclose(out[3], want, rtol=1e-5, atol=1e-6)


def test_concat_loss_trains_the_head_and_the_towers_but_not_the_students_own_heads():
    model, ids = _model(dropout=0.1), _ids()
    v = model.init(jax.random.PRNGKey(2), ids, False)
    y = jnp.asarray(np.arange(16) % 2, jnp.float32)

    def loss(params):
        z, _ = model.apply({"params": params, "batch_stats": v["batch_stats"]}, ids, True, None,
                           rngs={"dropout": jax.random.PRNGKey(3)}, mutable=["batch_stats"])
        return kdef_loss(z, y, variant="concat")[0]

    g = jax.grad(loss)(v["params"])
    own_heads = g["group0_mlp"]["Dense_2"]  # each student's output Linear: untrained, as in the reference
    assert float(jnp.abs(own_heads["kernel"]).max()) == 0.0 and float(jnp.abs(own_heads["bias"]).max()) == 0.0
    for name in ("Dense_0", "Dense_1"):  # every student's tower feeds the head
        assert np.all(np.abs(np.asarray(g["group0_mlp"][name]["kernel"])).reshape(3, -1).max(axis=1) > 0)
    assert float(jnp.abs(g["concat_head"]["kernel"]).max()) > 0
    assert float(jnp.abs(g["embedding"]["table"]).max()) > 0


def test_concat_head_needs_mlp_students():
    with pytest.raises(ValueError, match="concat.*ecnx2"):
        _model(k=2, kind="ecn").init(jax.random.PRNGKey(0), _ids(), False)


def test_deployment_helpers_around_the_head():
    """A student extracted from a concat model is that student alone (no head); folding BatchNorm keeps
    the head and the ensemble's predictions; the ensemble predictor serves the head's σ."""
    model, ids = _model(), _ids()
    v = model.init(jax.random.PRNGKey(4), ids, False)
    stats = jax.tree.map(lambda s: s + 0.3 * jax.random.uniform(jax.random.PRNGKey(5), s.shape), v["batch_stats"])
    v = {**v, "batch_stats": stats}
    out = model.apply(v, ids, False, None)
    single, sv = extract_student(model, v, 1)
    assert not single.concat_head and "concat_head" not in sv["params"]
    np.testing.assert_allclose(single.apply(sv, ids, False, None)[0], out[1], rtol=1e-6)
    np.testing.assert_allclose(make_predictor(model, v, 1)(ids), jax.nn.sigmoid(out[1]), rtol=1e-6)
    np.testing.assert_allclose(make_predictor(model, v)(ids), jax.nn.sigmoid(out[3]), rtol=1e-6)
    folded, fv = fold_batchnorm(model, v)
    assert "BatchNorm_0" not in fv["params"]["group0_mlp"] and "concat_head" in fv["params"]
    np.testing.assert_allclose(folded.apply(fv, ids, False, None), out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(make_predictor(model, v, fold_bn=True)(ids), jax.nn.sigmoid(out[3]), rtol=1e-4)
    with pytest.raises(ValueError, match="concat"):
        make_predictor(model, v, fusion="mean_logit")
    with pytest.raises(ValueError, match="concat"):
        make_predictor(model.clone(concat_head=False), v, fusion="concat")
