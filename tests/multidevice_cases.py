"""Multi-device cases, run by tests/test_sharding.py in a subprocess with 4 host CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``; the device count is fixed when jax starts).

Run alone: XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m pytest tests/multidevice_cases.py
"""

import json
import re
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import pre_bn_bias, step_compiles
from jax.sharding import PartitionSpec as P

from kdef_jax import sharding
from kdef_jax.config import base_config
from kdef_jax.models.ensemble import KDEFModel, groups_from_config
from kdef_jax.steps import make_training
from kdef_jax.train import train_and_evaluate

if jax.device_count() < 4:
    pytest.skip("needs 4 devices: XLA_FLAGS=--xla_force_host_platform_device_count=4", allow_module_level=True)

VOCAB = (50, 40, 30, 20)
B = 64


def _mesh(data, student):
    return sharding.make_mesh(ml_collections.ConfigDict({"data": data, "student": student}), {"train.batch_size": B})


def _model(students="mlp:4", impl="vmap"):
    c = base_config()
    c.model.students, c.model.hidden_units = students, (32, 32)
    return c, KDEFModel(vocab_sizes=VOCAB, groups=groups_from_config(c.model), embedding_dim=8, group_impl=impl)


def _batch(seed=0, real=B - 13):
    """A padded batch: the last 13 rows are PAD ids with mask 0 (they must not enter loss or BN stats)."""
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.integers(1, v, B) for v in VOCAB], 1).astype(np.int32)
    mask = (np.arange(B) < real).astype(np.float32)
    ids[real:] = 0
    return {"ids": ids, "y": rng.integers(0, 2, B).astype(np.float32), "mask": mask}


def _run(model, c, mesh, steps=2):
    state, step = make_training(model, c, jax.random.PRNGKey(0), len(VOCAB), mesh)
    put = (lambda b: jax.device_put(b, sharding.batch_sharding(mesh))) if mesh is not None else jax.device_put
    states, metrics = [], []
    for i in range(steps):
        state, m = step(state, put(_batch(i)), jax.random.PRNGKey(1))
        states.append(jax.device_get(state))
        metrics.append(jax.device_get(m))
    return state, states, metrics, step


def _compare(tree, ref, tol, what):
    """Every leaf within ``tol`` of its one-device value, relative to the leaf's largest magnitude
    (float reduction order differs between layouts; elementwise relative error is meaningless where
    a gradient component cancels to ~0)."""
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree.leaves(ref)):
        if pre_bn_bias(path):  # Dense_2: the output layer of these (32, 32) towers
            continue
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(float(np.max(np.abs(b))), 1e-12)
        err = float(np.max(np.abs(a - b))) / scale
        assert err <= tol, f"{what} {jax.tree_util.keystr(path)}: max |diff| / max |value| = {err:.2e} > {tol:g}"


@pytest.mark.parametrize("data,student,impl", [(2, 2, "unrolled"), pytest.param(1, 4, "vmap", marks=pytest.mark.slow),
                                              pytest.param(4, 1, "vmap", marks=pytest.mark.slow)])
def test_sharded_steps_match_one_device(data, student, impl):
    c, model = _model(impl=impl)
    _, (ref1, _), ref_m, _ = _run(model, c, None)
    mesh = _mesh(data, student)
    state, (one, _), m, step = _run(model, c, mesh)
    for a, b in zip(m, ref_m):  # loss, its terms and ‖g‖ of each step: the global batch's
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-7, err_msg=k)
    # After step 1 (later steps inherit the pre-BN biases' noise through the BN running means):
    # Adam's first moment is 0.1·g, the gradient itself; BN statistics are the global batch's real rows.
    _compare(one.opt_state[1].inner_state[0].mu, ref1.opt_state[1].inner_state[0].mu, 1e-5, "gradients (0.1·g)")
    _compare(one.batch_stats, ref1.batch_stats, 1e-5, "BatchNorm running stats")
    _compare(one.params, ref1.params, 1e-5, "params")
    kernel = state.params["group0_mlp"]["Dense_0"]["kernel"]
    assert kernel.sharding.spec == (P("student") if student > 1 else P())
    assert state.params["embedding"]["table"].sharding.spec == P()
    assert step._cache_size() == 1  # every step ran the one compiled program


@pytest.mark.slow
def test_lazy_adam_step_on_a_mesh_matches_one_device():
    c, model = _model()
    c.optim.embedding_optimizer = "lazy_adam"
    _, (ref1, _), ref_m, _ = _run(model, c, None)
    _, (one, _), m, _ = _run(model, c, _mesh(2, 2))
    for a, b in zip(m, ref_m):
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-7, err_msg=k)
    _compare(one.opt_state[2].mu, ref1.opt_state[2].mu, 1e-5, "the table rows' gradients (0.1·g)")
    _compare(one.params, ref1.params, 1e-5, "params")


@pytest.mark.slow
def test_concat_head_on_a_mesh_matches_one_device():
    """MLPs_concat on a 2×2 mesh: the head reads every student's hidden layer across the student axis
    (its parameters replicated) and trains as on one device."""
    c, model = _model(impl="unrolled")
    c.loss.variant, model = "concat", model.clone(concat_head=True)
    _, (ref1, _), ref_m, _ = _run(model, c, None)
    state, (one, _), m, step = _run(model, c, _mesh(2, 2))
    for a, b in zip(m, ref_m):
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-7, err_msg=k)
    _compare(one.opt_state[1].inner_state[0].mu, ref1.opt_state[1].inner_state[0].mu, 1e-5, "gradients (0.1·g)")
    # Adam's first step moves each parameter by ~lr·g/|g|: where a gradient is near 0 (the students' own
    # heads get exactly 0) the layouts' rounding shows at the 1e-5 level of the step
    _compare(one.params, ref1.params, 1e-4, "params")
    assert all(x.sharding.spec == P() for x in jax.tree.leaves(state.params["concat_head"]))
    assert state.params["group0_mlp"]["Dense_0"]["kernel"].sharding.spec == P("student")
    assert step._cache_size() == 1


@pytest.mark.slow  # ~7 s of compiles: the default suite's budget; test_sharding checks the split rule in-process
def test_groups_not_dividing_the_student_axis_are_replicated():
    c, model = _model("mlp:2,mlp:1")  # e.g. KDEF_Latest's single IPNN beside a split group
    mesh = _mesh(2, 2)
    state, _, metrics, _ = _run(model, c, mesh, steps=1)
    assert state.params["group0_mlp"]["Dense_0"]["kernel"].sharding.spec == P("student")
    assert all(x.sharding.spec == P() for x in jax.tree.leaves(state.params["group1_mlp"]))
    assert all(x.sharding.spec == P() for x in jax.tree.leaves(state.opt_state[1].inner_state[0].mu["group1_mlp"]))
    assert np.isfinite(metrics[0]["loss"])
    assert "mlpx2 split, mlpx1 replicated" in sharding.describe(mesh, model.groups)


def test_mesh_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"train.batch_size: 63 rows do not split over the 4 devices of mesh.data"):
        sharding.make_mesh(ml_collections.ConfigDict({"data": 0, "student": 1}), {"train.batch_size": 63})
    with pytest.raises(ValueError, match=r"mesh.data × mesh.student = 4 × 2 needs 8 devices; this host has 4"):
        sharding.make_mesh(ml_collections.ConfigDict({"data": 4, "student": 2}), {})
    with pytest.raises(ValueError, match=r"mesh.student: 3 does not divide the 4 devices"):
        sharding.make_mesh(ml_collections.ConfigDict({"data": 0, "student": 3}), {})
    assert sharding.make_mesh(ml_collections.ConfigDict({"data": 1, "student": 1}), {}) is None
    assert dict(sharding.make_mesh(ml_collections.ConfigDict({"data": 0, "student": 2}), {"b": 8}).shape) == {
        "data": 2, "student": 2}


def _tiny_run_config(tmp_path, **mesh):
    c = base_config()
    c.data.cache_dir = str(tmp_path / "cache")
    c.data.synthetic.num_train, c.data.synthetic.num_valid, c.data.synthetic.num_test = 1024, 512, 512
    c.data.name = "synthetic_mesh"
    c.model.hidden_units, c.model.num_students = (8,), 2
    c.train.batch_size, c.train.num_epochs, c.train.progress, c.train.plot = 512, 1, False, False
    c.mesh.data, c.mesh.student = mesh.get("data", 0), mesh.get("student", 1)
    return c


@pytest.mark.slow  # a whole run and its resume: minutes to compile on a cold cache (the default suite's budget)
def test_train_and_evaluate_on_a_mesh_checkpoints_and_resumes(tmp_path, caplog):
    c = _tiny_run_config(tmp_path, data=2, student=2)
    c.mesh.embedding = "rows"
    logs = []
    first, counts = step_compiles(caplog, lambda: train_and_evaluate(c, tmp_path / "run", log=logs.append))
    assert counts == {"train_step": 1, "predict_step": 1}
    assert first["mesh"] == {"data": 2, "student": 2}
    assert any("[devices] 4 devices" in line and "data 2 × student 2" in line
               and "embedding table split by rows over 4" in line for line in logs)
    rows = json.loads((tmp_path / "run" / "config.json").read_text())["model"]["embedding_rows"]
    assert rows % 4 == 0 and 0 <= rows - first["feature_map"]["total_vocab"] < 4  # padded, recorded for export
    # Resume the sharded checkpoint for two more epochs on the same mesh; neither improves
    # (min_delta 1), so the learning rate drops between them: still one compile of each step.
    c.resume, c.train.num_epochs, c.optim.min_delta = True, 3, 1.0
    logs = []
    second, counts = step_compiles(caplog, lambda: train_and_evaluate(c, tmp_path / "run", log=logs.append))
    assert any("resumed from epoch 1" in line for line in logs)
    assert second["epochs_run"] == 3 and second["lr_decays"] == 2
    assert counts == {"train_step": 1, "predict_step": 1}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["mesh"] == {"data": 2, "student": 2} and np.isfinite(saved["rows"][0]["test_auc"])


def _unpad(tree, rows):
    """``tree`` with every leaf of the padded table's shape cut back to its first ``rows`` rows."""
    return jax.tree.map(lambda x: x[:rows] if x.ndim == 2 and x.shape[0] > rows and x.shape[1] == 8 else x, tree)


@pytest.mark.parametrize("optimizer", ["dense", pytest.param("lazy_adam", marks=pytest.mark.slow)])
def test_table_split_by_rows_matches_one_device(optimizer):
    c, model = _model(impl="unrolled")
    c.optim.embedding_optimizer = optimizer
    _, (ref1, ref2), ref_m, _ = _run(model, c, None)
    c.mesh.embedding = "rows"
    rows = sum(VOCAB)
    padded = model.clone(embedding_rows=rows + 4)  # 4 zero rows, as train.py pads for a 4-device mesh
    state, (one, two), m, step = _run(padded, c, _mesh(2, 2))
    for a, b in zip(m, ref_m):  # zero rows add nothing to ‖E‖², the loss or ‖g‖
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-7, err_msg=k)
    _compare(_unpad(one.params, rows), ref1.params, 1e-5, "params")
    _compare(_unpad(two.params["embedding"], rows), ref2.params["embedding"], 1e-5, "table after 2 steps")
    table = state.params["embedding"]["table"]
    assert table.sharding.spec == sharding.TABLE_ROWS
    assert {s.data.shape for s in table.addressable_shards} == {((rows + 4) // 4, 8)}
    moments = [x for x in jax.tree.leaves(state.opt_state) if getattr(x, "shape", None) == table.shape]
    assert len(moments) == 2 and all(x.sharding.spec == sharding.TABLE_ROWS for x in moments)
    assert not np.asarray(table[rows:]).any()  # the padding rows stay exactly 0
    assert step._cache_size() == 1
    # The compiled step moves ids and looked-up rows, never the table: no collective yields a buffer
    # of the whole table or of half of it (jit's partitioner alone all-gathers [144, 8] on a 4x1 mesh).
    hlo = step.lower(state, jax.device_put(_batch(0), sharding.batch_sharding(_mesh(2, 2))),
                     jax.random.PRNGKey(1)).compile().as_text()
    outputs = re.findall(r"= \(?(f32\[[\d,]+\])[^=]*? (all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)\(", hlo)
    shapes = {shape for shape, _ in outputs}
    assert outputs and not {f"f32[{rows + 4},8]", f"f32[{(rows + 4) // 2},8]"} & shapes, outputs
    # Lazy Adam's U = B·C row slots are gathered and updated where they live: no all-reduce sums a
    # [U, d] buffer (the rows or their gradient) over devices; the batch's row gradients are all-gathered.
    assert (f"f32[{B * len(VOCAB)},8]", "all-reduce") not in outputs, outputs


def test_a_table_that_does_not_split_names_the_key():
    c, model = _model()
    c.mesh.embedding = "rows"
    with pytest.raises(ValueError, match=r"model.embedding_rows: a table of 142 rows does not split over 4"):
        make_training(model.clone(embedding_rows=142), c, jax.random.PRNGKey(0), len(VOCAB), _mesh(2, 2))


def test_sums_skip_the_one_pass_fold_with_several_devices():
    """On a mesh the fold's [B/16, ...] partials would be what the partitioner all-reduces."""
    from kdef_jax.reductions import column_sums

    jaxpr = jax.make_jaxpr(lambda x: column_sums(x, jnp.square(x)))(np.ones((64, 32), np.float32))
    assert "optimization_barrier" not in [e.primitive.name for e in jaxpr.jaxpr.eqns]


# Several processes: to_mesh places each device's slice (process_count faked).


def test_to_mesh_of_a_multi_process_run_places_each_devices_slice(monkeypatch):
    """Several processes: to_mesh builds each device's shard from the full host values by its index
    (make_array_from_callback), one sharding for a whole tree or a tree of them."""
    mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 2, "student": 2}), {"b": 8})
    fake = types.SimpleNamespace(process_count=lambda: 2, tree=jax.tree,
                                 make_array_from_callback=jax.make_array_from_callback)
    monkeypatch.setattr(sharding, "jax", fake)
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    batch = sharding.to_mesh({"ids": x, "y": x[:, 0]}, sharding.batch_sharding(mesh))
    mixed = sharding.to_mesh({"t": x, "s": np.float32(2.0)},
                             {"t": sharding.NamedSharding(mesh, sharding.TABLE_ROWS), "s": sharding.replicated(mesh)})
    monkeypatch.undo()
    np.testing.assert_array_equal(np.asarray(batch["ids"]), x)
    np.testing.assert_array_equal(np.asarray(batch["y"]), x[:, 0])
    assert batch["ids"].sharding.spec == P("data")
    assert {tuple(s.data.shape) for s in batch["ids"].addressable_shards} == {(4, 3)}
    np.testing.assert_array_equal(np.asarray(mixed["t"]), x)
    assert {tuple(s.data.shape) for s in mixed["t"].addressable_shards} == {(2, 3)}
    assert float(mixed["s"]) == 2.0
