"""Deployment: a single extracted student, the BatchNorm-folded networks and the exported predictor
match the ensemble model."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdef_jax.export import export_predictor, extract_student, fold_batchnorm, load_exported, load_run, make_predictor
from kdef_jax.models.ensemble import KDEFModel, StudentGroup, groups_from_config
from kdef_jax.models.registry import STUDENTS

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
    blob = export_predictor(model, v, 3)
    call = load_exported(blob)
    np.testing.assert_allclose(call(ids), ens, rtol=1e-6)
    np.testing.assert_allclose(call(ids[:4]), ens[:4], rtol=1e-6)  # symbolic batch size
    assert jax.export.deserialize(blob).platforms == ("cpu", "cuda", "tpu")  # serves beyond the host it was made on
    assert jax.export.deserialize(export_predictor(model, v, 3, platforms=("cpu",))).platforms == ("cpu",)


def test_load_exported_reads_a_file_and_names_what_it_cannot_serve(tmp_path):
    model, ids = _model(), _ids()
    v = model.init(jax.random.PRNGKey(0), ids, False)
    blob = export_predictor(model, v, 3, platforms=("cpu",))
    path = tmp_path / "p.jaxexport"
    path.write_bytes(blob)
    want = load_exported(blob)(ids)
    np.testing.assert_array_equal(load_exported(path)(ids), want)
    np.testing.assert_array_equal(load_exported(str(path))(ids), want)
    with pytest.raises(ValueError, match=r"^ids: 3 columns \(the file's input, one per field\), got shape \(9, 2\)$"):
        load_exported(path)(ids[:, :2])
    for bad in (b"", b"hello", bytes(1000), blob[: len(blob) // 2]):  # empty, foreign, zeros, truncated
        (tmp_path / "bad").write_bytes(bad)
        with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / 'bad'))}: not a jax.export serialization"):
            load_exported(tmp_path / "bad")
    with pytest.raises(ValueError, match=r"^load_exported: not a jax.export serialization"):
        load_exported(b"hello")
    other = jax.export.export(jax.jit(lambda x: x * 2))(jax.ShapeDtypeStruct((4,), jnp.float32)).serialize()
    with pytest.raises(ValueError, match=r"load_exported: a function of .* not a predictor of ids \[batch, columns\]"):
        load_exported(other)
    with pytest.raises(TypeError, match="load_exported: the bytes of export_predictor or a .jaxexport file's path, got int"):
        load_exported(3)
    with pytest.raises(FileNotFoundError):
        load_exported(tmp_path / "missing.jaxexport")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """(config, workdir, results) of a 2-epoch synthetic run whose best epoch is the first (min_delta 1:
    no later epoch counts as a gain), so its best and latest checkpoints differ."""
    from kdef_jax.config import base_config
    from kdef_jax.train import train_and_evaluate

    tmp_path = tmp_path_factory.mktemp("run")
    c = base_config()
    c.data.cache_dir = str(tmp_path / "cache")
    c.data.synthetic.num_train, c.data.synthetic.num_valid, c.data.synthetic.num_test = 3000, 700, 700
    c.data.name = "synthetic_test"
    c.model.hidden_units = (16, 16)
    c.train.batch_size, c.train.num_epochs, c.train.progress, c.train.plot = 512, 2, False, False
    c.optim.min_delta = 1.0
    res = train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    assert (res["best_epoch"], res["epochs_run"]) == (1, 2)
    return c, tmp_path / "run", res


def test_load_run_restores_the_best_epoch(trained_run):
    from kdef_jax.data.dataset import load_dataset
    from kdef_jax.export import load_run
    from kdef_jax.metrics import auc, ensemble_metrics

    c, workdir, res = trained_run
    model, variables, fmap, results = load_run(workdir)
    assert results["best_student"] == res["best_student"]
    test = load_dataset(c.data, log=lambda *a: None).splits["test"]
    m = ensemble_metrics(test.y, model.apply(variables, jnp.asarray(test.x), False, None))
    assert m["teacher"]["auc"] == pytest.approx(res["rows"][0]["test_auc"], rel=1e-9)
    k = res["best_student_index"]
    assert m["students"][k]["auc"] == pytest.approx(res["rows"][1 + k]["test_auc"], rel=1e-9)
    latest_model, latest_vars, _, _ = load_run(workdir, "latest")  # epoch 2: other weights, another AUC
    latest = ensemble_metrics(test.y, latest_model.apply(latest_vars, jnp.asarray(test.x), False, None))
    assert abs(latest["teacher"]["auc"] - m["teacher"]["auc"]) > 1e-6
    p_k = make_predictor(model, variables, k)(jnp.asarray(test.x))  # float32 probabilities: ties may move
    assert auc(test.y, p_k) == pytest.approx(res["rows"][1 + k]["test_auc"], abs=1e-4)


def test_export_run_writes_a_servable_predictor(trained_run, tmp_path, capsys):
    """``python -m kdef_jax.export_run``: the file alone (jax.export) predicts the test split as the
    library's unfolded predictor does, and its JSON names the network and its test AUC."""
    import json

    from kdef_jax.data.dataset import load_dataset
    from kdef_jax.export import load_run
    from kdef_jax.export_run import main

    c, workdir, res = trained_run
    out = tmp_path / "serve" / "best.jaxexport"
    assert main(["--workdir", str(workdir), "--what", "best", "--fold-bn", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    info = json.loads(out.with_name("best.jaxexport.json").read_text())
    k = res["best_student_index"]
    x = jnp.asarray(load_dataset(c.data, log=lambda *a: None).splits["test"].x)
    assert info["what"] == f"student{k}" and info["fold_bn"] is True and info["num_columns"] == x.shape[1]
    assert info["test_auc"] == res["rows"][1 + k]["test_auc"] and info["check"]["max_abs_diff"] < 1e-5
    assert info["finished"] is True and info["epoch"] == res["best_epoch"] == 1
    served = jax.export.deserialize(out.read_bytes()).call(x)
    model, variables, _, _ = load_run(workdir)
    np.testing.assert_allclose(served, make_predictor(model, variables, k)(x), rtol=1e-5, atol=1e-7)
    assert info["platforms"] == ["cpu", "cuda", "tpu"]
    assert main(["--workdir", str(workdir)]) == 0  # default: the ensemble, beside the run
    assert (workdir / "predictor_ensemble.jaxexport").exists()
    assert main(["--workdir", str(workdir), "--platforms", "cuda", "--out", str(tmp_path / "g.jaxexport")]) == 2
    assert "include this host's 'cpu'" in capsys.readouterr().err and not (tmp_path / "g.jaxexport").exists()


def test_export_run_of_an_unfinished_run_says_so(trained_run, tmp_path, capsys):
    """A run cut short (no results.json) exports its best epoch so far: the JSON and the command say so."""
    import json
    import shutil

    from kdef_jax.export_run import main

    workdir = tmp_path / "cut"
    shutil.copytree(trained_run[1], workdir)
    (workdir / "results.json").unlink()
    assert main(["--workdir", str(workdir), "--platforms", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "note: the run has not finished (no results.json): this is its best epoch so far, epoch 1" in err
    info = json.loads((workdir / "predictor_ensemble.jaxexport.json").read_text())
    assert info["finished"] is False and info["epoch"] == 1 and "test_auc" not in info


@pytest.mark.parametrize("what,message", [("7", "students 0..2"), ("teacher", "use ensemble, best or a student index")])
def test_export_run_refuses_an_unknown_network(trained_run, capsys, what, message):
    from kdef_jax.export_run import main

    assert main(["--workdir", str(trained_run[1]), "--what", what]) == 2
    assert message in capsys.readouterr().err


def test_export_run_names_a_missing_run(tmp_path, capsys):
    from kdef_jax.export_run import main

    assert main(["--workdir", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'}: no config.json (not a kdef_jax.main run)" in capsys.readouterr().err


def test_export_run_out_must_be_a_file(trained_run, tmp_path, capsys):
    from kdef_jax.export_run import main

    assert main(["--workdir", str(trained_run[1]), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a directory" in capsys.readouterr().err
    config = (trained_run[1] / "config.json").read_bytes()
    assert main(["--workdir", str(trained_run[1]), "--out", str(trained_run[1] / "config.json")]) == 2
    assert "would overwrite" in capsys.readouterr().err and (trained_run[1] / "config.json").read_bytes() == config
    assert not list(tmp_path.parent.glob(f"*{tmp_path.name}*.tmp")) and not list(trained_run[1].glob(".*.tmp"))


def _count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def test_fold_batchnorm_hand_computed():
    """One hidden layer of width 2, σ² + ε = 1 so a = γ: W' = W·γ, b' = b·γ + β − μ·γ."""
    model = KDEFModel(vocab_sizes=(3,), groups=(StudentGroup("mlp", 1, (("batch_norm", True), ("dropout", 0.0), ("hidden_units", (2,)))),),
                      embedding_dim=2)
    v = model.init(jax.random.PRNGKey(0), jnp.ones((1, 1), jnp.int32), False)
    p = jax.tree.map(np.asarray, v["params"])
    g = p["group0_mlp"]
    g["Dense_0"] = {"kernel": np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32), "bias": np.array([[1.0, -1.0]], np.float32)}
    g["BatchNorm_0"] = {"scale": np.array([[2.0, 0.5]], np.float32), "bias": np.array([[0.1, 0.2]], np.float32)}
    stats = {"group0_mlp": {"BatchNorm_0": {"mean": np.array([[0.5, 2.0]], np.float32),
                                            "var": np.array([[1.0 - 1e-5, 1.0 - 1e-5]], np.float32)}}}
    folded_model, fv = fold_batchnorm(model, {"params": p, "batch_stats": stats})
    fd = fv["params"]["group0_mlp"]
    np.testing.assert_allclose(fd["Dense_0"]["kernel"], [[[2.0, 1.0], [6.0, 2.0]]], rtol=1e-6)
    np.testing.assert_allclose(fd["Dense_0"]["bias"], [[1.1, -1.3]], rtol=1e-6)
    assert "BatchNorm_0" not in fd and fv["batch_stats"] == {}
    np.testing.assert_array_equal(fd["Dense_1"]["kernel"], g["Dense_1"]["kernel"])  # the output layer as it was
    assert dict(folded_model.groups[0].kwargs)["batch_norm"] is False
    table = np.array([[0.0, 0.0], [1.0, -2.0], [0.5, 3.0]], np.float32)  # rows reached by ids 1, 2
    p["embedding"] = {"table": table}
    fv["params"]["embedding"] = {"table": table}
    ids = jnp.array([[1], [2]], jnp.int32)
    np.testing.assert_allclose(folded_model.apply(fv, ids, False), model.apply({"params": p, "batch_stats": stats}, ids, False),
                               rtol=1e-6)


def _random_stats(stats, key):
    """Running statistics that make BatchNorm matter: mean ~ N(0, 0.05²), var ~ U(0.02, 0.2)."""
    leaves, tree = jax.tree.flatten_with_path(stats)
    keys = jax.random.split(key, len(leaves))
    out = [0.05 * jax.random.normal(k, x.shape) if path[-1].key == "mean" else jax.random.uniform(k, x.shape, minval=0.02, maxval=0.2)
           for (path, x), k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, out)


FOLDED_KINDS = {"mlp", "ipnn", "dcn", "dcnv2", "xdeepfm", "widedeep", "deepfm", "autoint", "afn"}


@pytest.mark.parametrize("kind", sorted(STUDENTS))
def test_fold_batchnorm_every_kind_predicts_the_same(kind):
    """Folded where the kind's BatchNorms follow Dense layers of an MLP tower, untouched elsewhere;
    logits equal the unfolded model's up to float rounding, in a mixed model (the kind, then MLPs)."""
    from kdef_jax.config import base_config

    c = base_config()
    c.model.students = f"{kind}:2,mlp:1"
    c.model.hidden_units = (16, 8)
    model = KDEFModel(vocab_sizes=(5, 7, 4, 6), groups=groups_from_config(c.model), embedding_dim=4, embedding_init_std=0.3)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(np.stack([rng.integers(0, v, size=64) for v in (5, 7, 4, 6)], 1), jnp.int32)  # 0: PAD too
    v = model.init(jax.random.PRNGKey(0), ids, False)
    v = {"params": v["params"], "batch_stats": _random_stats(v.get("batch_stats", {}), jax.random.PRNGKey(1))}
    folded_model, fv = fold_batchnorm(model, v)
    expect = model.apply(v, ids, False)
    assert float(jnp.std(expect)) > 0.05  # BatchNorm's statistics change the logits visibly
    np.testing.assert_allclose(folded_model.apply(fv, ids, False), expect, rtol=1e-4, atol=1e-5 * float(jnp.abs(expect).max()))
    was = dict(model.groups[0].kwargs).get("batch_norm")
    now = dict(folded_model.groups[0].kwargs).get("batch_norm")
    assert bool(was and not now) == (kind in FOLDED_KINDS)
    assert dict(folded_model.groups[1].kwargs)["batch_norm"] is False  # the MLP group
    towers = 2 if kind == "afn" else 1
    removed = 4 * (16 + 8) * (2 * towers * (kind in FOLDED_KINDS) + 1)  # γ, β, μ, σ² per hidden unit, per student
    assert _count(v) - _count(fv) == removed


def test_folded_student_parameter_count_criteo_shape():
    """Spec §2.6: one Criteo MLP student has 573,601 parameters (39 fields · d 16 in, [400, 400, 400]);
    folded, its 2·1,200 BatchNorm γ, β are gone: 571,201, and no batch statistics remain."""
    groups = (StudentGroup("mlp", 10, (("batch_norm", True), ("dropout", 0.1), ("hidden_units", (400, 400, 400)))),)
    model = KDEFModel(vocab_sizes=(2,) * 39, groups=groups, embedding_dim=16)
    v = model.init(jax.random.PRNGKey(0), jnp.ones((2, 39), jnp.int32), False)
    single, sv = extract_student(model, v, 7)
    assert _count(sv["params"]["group0_mlp"]) == 573_601
    folded, fv = fold_batchnorm(single, sv)
    assert _count(fv["params"]["group0_mlp"]) == 571_201 and fv["batch_stats"] == {}


def test_folded_predictor_and_export():
    model, ids = _model(), _ids()
    v = model.init(jax.random.PRNGKey(0), ids, False)
    v = {"params": v["params"], "batch_stats": _random_stats(v["batch_stats"], jax.random.PRNGKey(2))}
    for what in ("ensemble", 3):
        want = make_predictor(model, v, what)(ids)
        np.testing.assert_allclose(make_predictor(model, v, what, fold_bn=True)(ids), want, rtol=1e-5)
        call = load_exported(export_predictor(model, v, 3, what, fold_bn=True))
        np.testing.assert_allclose(call(ids[:5]), want[:5], rtol=1e-5)


def _two_linear_students():
    """Two MLP students without hidden layers (z_k = w_k·e + b_k) on one field of d = 1."""
    from kdef_jax.models.ensemble import KDEFModel, StudentGroup

    kw = (("batch_norm", True), ("dropout", 0.0), ("hidden_units", ()))
    model = KDEFModel(vocab_sizes=(3,), groups=(StudentGroup("mlp", 2, kw),), embedding_dim=1)
    v = model.init(jax.random.PRNGKey(0), jnp.ones((1, 1), jnp.int32), False)
    params = {"embedding": {"table": jnp.asarray([[0.0], [1.0], [-1.0]])},
                        "group0_mlp": {"Dense_0": {"kernel": jnp.asarray([[[2.0]], [[-1.0]]]), "bias": jnp.asarray([[0.0], [1.0]])}}}
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, v["params"])
    return model, {"params": params}


def test_ensemble_predictor_is_sigmoid_of_the_mean_logit_hand_values():
    """id 1 → e = 1: logits (2, 0) → σ(1) = 0.7310586 (mean of σ would be 0.6903985);
    id 2 → e = -1: logits (-2, 2) → σ(0) = 0.5 (mean of σ also 0.5)."""
    from kdef_jax.export import make_predictor

    model, v = _two_linear_students()
    ids = jnp.asarray([[1], [2]], jnp.int32)
    np.testing.assert_allclose(np.asarray(model.apply(v, ids, False, None)), [[2.0, -2.0], [0.0, 2.0]])
    np.testing.assert_allclose(make_predictor(model, v)(ids), [0.7310586, 0.5], rtol=1e-6)
    np.testing.assert_allclose(make_predictor(model, v, 1)(ids), [0.5, 0.8807971], rtol=1e-6)


def test_resolve_what_bounds():
    """X1, X2: a student index is in [0, K). score_run indexes logits[k] directly, so -1 would silently
    score the last student (the concat head's logit for a concat run) and K the head / an IndexError."""
    from kdef_jax.export_run import resolve_what

    assert resolve_what("0", {}, 3) == 0 and resolve_what("2", {}, 3) == 2
    for bad in ("-1", "3"):
        with pytest.raises(ValueError, match=re.escape(f"--what {bad}: the model has students 0..2")):
            resolve_what(bad, {}, 3)


def test_concat_fusion_needs_the_concat_head():
    """E4: fusion 'concat' takes logits[-1]; on a model without the head that is the last student."""
    from kdef_jax.export import make_predictor
    from kdef_jax.models.ensemble import KDEFModel, StudentGroup

    kw = (("batch_norm", True), ("dropout", 0.1), ("hidden_units", (8,)))
    ids = jnp.ones((4, 3), jnp.int32)
    plain = KDEFModel(vocab_sizes=(5, 7, 4), groups=(StudentGroup("mlp", 2, kw),), embedding_dim=4)
    v = plain.init(jax.random.PRNGKey(0), ids, False)
    with pytest.raises(ValueError, match="fusion 'concat' for a model without the concat head"):
        make_predictor(plain, v, fusion="concat")
    headed = plain.clone(concat_head=True)
    vh = headed.init(jax.random.PRNGKey(0), ids, False)
    with pytest.raises(ValueError, match="fusion 'mean_logit' for a model with the concat head"):
        make_predictor(headed, vh, fusion="mean_logit")


# Cases mutation testing found unpinned: export and export_run.


def test_variables_of_another_model_are_an_error_naming_the_mismatch():
    """make_predictor(model K=5, variables K=3) failed inside the scan with 'length argument of 5'; picking
    one student of a K=3 model from K=5 variables sliced them silently."""
    model, ids = _model(), _ids()  # groups mlp x3, mlp x2
    v = model.init(jax.random.PRNGKey(0), ids, False)
    other = model.clone(groups=(model.groups[0], StudentGroup("mlp", 4, KW)))
    vo = other.init(jax.random.PRNGKey(0), ids, False)
    hint = r"\(variables of another model\? build the model from the run's config.json, or use load_run\)"
    for what in ("ensemble", 0, 4):
        with pytest.raises(ValueError, match=rf"^variables: params/group1_mlp holds 2 students, the model's group 4 {hint}$"):
            make_predictor(other, v, what)
    with pytest.raises(ValueError, match=r"^variables: params/group1_mlp holds 4 students, the model's group 2"):
        make_predictor(model, vo, 1)
    with pytest.raises(ValueError, match=r"^variables: the embedding table is \(16, 4\), the model's is \(17, 4\)"):
        make_predictor(model.clone(vocab_sizes=(5, 7, 5)), v)
    with pytest.raises(ValueError, match=r"^variables have no group2_mlp"):
        make_predictor(model.clone(groups=(*model.groups, StudentGroup("mlp", 1, KW))), v)
    with pytest.raises(ValueError, match=r"^variables must be a dict with 'params'"):
        make_predictor(model, [v])
    with pytest.raises(ValueError, match=r"^StudentGroup 'mlp': count must be an integer >= 1, got 0"):
        StudentGroup("mlp", 0, KW)  # a group of none built and gave logits [0, B]


def test_negative_student_index_is_out_of_range():
    with pytest.raises(ValueError, match="student index -1 out of range"):
        extract_student(_model(), {}, -1)


def test_export_needs_known_platforms_and_an_integer_column_count():
    """platforms="cpu" was tuple("cpu") = ('c', 'p', 'u'): a file exported for platforms that do not
    exist, refused only when served; a float num_columns was a TypeError of ~22,700 characters."""
    for platforms in ((), ("gpu",), "cpu,gpu"):
        with pytest.raises(ValueError, match="name one or more of cpu, cuda, rocm, tpu"):
            export_predictor(_model(), {}, 3, platforms=platforms)
    with pytest.raises(ValueError, match=r"num_columns 3.0: the number of id columns"):
        export_predictor(_model(), {}, 3.0)


def test_export_reads_a_comma_separated_platform_string(trained_run):
    import jax as jax_mod

    model, variables, fmap, _ = load_run(trained_run[1])
    blob = export_predictor(model, variables, fmap.num_columns, platforms="cpu")
    assert jax_mod.export.deserialize(blob).platforms == ("cpu",)


def test_load_run_checkpoint_name_is_checked_first(tmp_path):
    from kdef_jax.export import load_run

    with pytest.raises(ValueError, match="load_run checkpoint='final': use 'best' or 'latest'"):
        load_run(tmp_path, "final")


def test_folded_predictor_runs_no_batchnorm():
    """fold_bn=True: the predictor's program computes no BatchNorm factor γ·(σ²+ε)^(-1/2)."""
    model = KDEFModel(vocab_sizes=(5, 7), embedding_dim=2,
                      groups=(StudentGroup("mlp", 2, (("batch_norm", True), ("dropout", 0.0), ("hidden_units", (4,)))),))
    ids = jnp.ones((2, 2), jnp.int32)
    v = model.init(jax.random.PRNGKey(0), ids, False)
    assert "rsqrt" in str(jax.make_jaxpr(make_predictor(model, v))(ids))
    assert "rsqrt" not in str(jax.make_jaxpr(make_predictor(model, v, fold_bn=True))(ids))


def test_resolve_what_best_needs_results():
    from kdef_jax.export_run import resolve_what

    with pytest.raises(ValueError, match="--what best: the run has no results.json with best_student_index"):
        resolve_what("best", {}, 3)
    assert resolve_what("best", {"best_student_index": 2}, 3) == 2


def test_random_ids_cover_pad_and_every_sequence_slot():
    from kdef_jax.export_run import random_ids

    ids = random_ids((3, 5), None, 400)
    assert ids.shape == (400, 2) and ids.dtype == np.int32
    assert [set(np.unique(ids[:, j])) for j in range(2)] == [set(range(3)), set(range(5))]  # 0 = PAD included
    assert random_ids((3, 5), (2, 3), 10).shape == (10, 5)  # one column per id slot


def test_export_run_refuses_an_unknown_platform_before_reading_the_run(tmp_path):
    from kdef_jax.export_run import export_run

    with pytest.raises(ValueError, match=r"--platforms cpu,gpu: unknown \['gpu'\]"):
        export_run(tmp_path, platforms=("cpu", "gpu"))


# export_run on a trained run: the default name of a folded student, and nothing written when the file predicts otherwise.


def test_export_run_default_name_of_a_folded_student(trained_run):
    from kdef_jax.export_run import export_run

    _, workdir, _ = trained_run
    info = export_run(workdir, "0", fold_bn=True, platforms=("cpu",))
    assert info["file"] == str(workdir / "predictor_student0_folded.jaxexport")
    assert (workdir / "predictor_student0_folded.jaxexport").is_file()


@pytest.mark.parametrize("error", [1e-3, float("nan")])
def test_export_run_writes_nothing_when_the_file_predicts_otherwise(trained_run, tmp_path, monkeypatch, capsys, error):
    """The reloaded file is checked against the library's predictor: off by 1e-3 (or NaN), it is not written."""
    from kdef_jax import export_run as er

    real = er.load_exported
    monkeypatch.setattr(er, "load_exported", lambda blob: (lambda ids: real(blob)(ids) + jnp.float32(error)))
    out = tmp_path / "p.jaxexport"
    assert er.main(["--workdir", str(trained_run[1]), "--out", str(out), "--platforms", "cpu"]) == 2
    assert "exported predictor differs from the model by" in capsys.readouterr().err
    assert not out.exists() and not out.with_name("p.jaxexport.json").exists()


# Found by damaging each file of a finished run (corruption fuzzing).
@pytest.mark.parametrize("edit,message", [
    (lambda r: 5, "not a run's results (a JSON object)"),
    (lambda r: {**r, "best_student_index": 7}, "best_student_index 7 is not a student 0..2"),
    (lambda r: {**r, "best_student_index": "x"}, "best_student_index 'x' is not a student"),
    (lambda r: {**r, "dataset": "other"}, "the results of another run"),
    (lambda r: {**r, "num_students": 4}, "the results of another run"),
    (lambda r: {k: v for k, v in r.items() if k != "rows"}, "no results table of the ensemble and its 3 students"),
    (lambda r: {**r, "rows": r["rows"][:2]}, "no results table of the ensemble and its 3 students"),
    (lambda r: {**r, "rows": [1, 2, 3, 4]}, "the file is damaged"),
])
def test_load_run_refuses_a_damaged_or_another_runs_results_json(trained_run, tmp_path, edit, message):
    """A results.json from another run made --what best pick that run's best student, silently; a damaged
    one was an IndexError or TypeError traceback in score_run and export_run."""
    import shutil

    _, workdir, res = trained_run
    w = tmp_path / "run"
    shutil.copytree(workdir, w)
    (w / "results.json").write_text(json.dumps(edit(json.loads((w / "results.json").read_text()))))
    with pytest.raises(ValueError) as e:
        load_run(w)
    assert str(e.value).startswith(f"{w / 'results.json'}: ") and message in str(e.value)


def test_load_run_reads_an_older_results_json_without_the_checked_keys(trained_run, tmp_path):
    import shutil

    _, workdir, res = trained_run
    w = tmp_path / "run"
    shutil.copytree(workdir, w)
    old = {k: v for k, v in json.loads((w / "results.json").read_text()).items()
           if k not in ("dataset", "variant", "num_students")}
    (w / "results.json").write_text(json.dumps(old))
    assert load_run(w)[3]["best_student_index"] == res["best_student_index"]


def test_load_run_with_a_changed_feature_map_names_the_file_that_sets_the_table(trained_run, tmp_path):
    """Another run's feature_map.json was reported as a checkpoint of a different model, naming only config.json."""
    import shutil

    from kdef_jax.checkpoint import CheckpointError

    _, workdir, _ = trained_run
    w = tmp_path / "run"
    shutil.copytree(workdir, w)
    fmap = json.loads((w / "feature_map.json").read_text())
    fmap["fields"][0]["vocab_size"] += 1
    (w / "feature_map.json").write_text(json.dumps(fmap))
    with pytest.raises(CheckpointError, match="written by a different model/config .*its feature_map.json sets the embedding"):
        load_run(w)


def test_ids_wider_than_int32_read_oov_not_a_wrapped_id_and_an_empty_batch_is_empty():
    """API review: JAX narrows int64 host ids to int32 (x64 off), so 2**32 + 1 read id 1; any id outside
    a field's range must read its OOV row (the last id), in the predictor and in the reloaded file."""
    model = _model().clone(embedding_init_std=0.3)  # rows far enough apart to tell apart
    v = model.init(jax.random.PRNGKey(0), _ids(), False)
    oov, wrapped = np.array([[4, 6, 3]], np.int32), np.array([[1, 6, 3]], np.int32)
    for predict in (make_predictor(model, v), make_predictor(model, v, 3), load_exported(export_predictor(model, v, 3))):
        for big in (2**32 + 1, 2**31, -(2**40)):
            got = predict(np.array([[big, 6, 3]], np.int64))
            np.testing.assert_allclose(got, predict(oov), rtol=1e-6)
        assert abs(float(predict(oov)[0]) - float(predict(wrapped)[0])) > 1e-3  # the check has teeth
        assert np.shape(predict(np.zeros((0, 3), np.int32))) == (0,)


def test_ids_of_any_integer_dtype_predict_alike_and_other_ids_are_an_error_naming_them():
    """API review: the reloaded file refused int16 / uint8 ids ('Dtype mismatch ... expected int32'), and under
    x64 device uint64 ids promoted to float in the gather ('indices must have an integer type'); 1-D or float
    ids reached the model as shape or gather errors."""
    model = _model().clone(embedding_init_std=0.3)
    v = model.init(jax.random.PRNGKey(0), _ids(), False)
    ids = np.asarray(_ids(4))
    for predict in (make_predictor(model, v), make_predictor(model, v, 1), load_exported(export_predictor(model, v, 3))):
        want = predict(ids)
        for dtype in (np.int8, np.int16, np.uint8, np.uint16, np.uint32, np.int64):
            np.testing.assert_allclose(predict(ids.astype(dtype)), want, rtol=1e-6, err_msg=str(dtype))
        with jax.enable_x64(True):
            for dtype in (jnp.int64, jnp.uint64):
                np.testing.assert_allclose(predict(jnp.asarray(ids, dtype)), want, rtol=1e-6, err_msg=str(dtype))
            np.testing.assert_allclose(predict(jnp.asarray([[2**40, 6, 3]], jnp.int64)), predict(np.array([[4, 6, 3]])),
                                       rtol=1e-6)  # out of range on the device: OOV, not a wrapped id
    for bad, text in ((ids[0], "int32 of shape (3,)"), (ids.astype(np.float32), "float32 of shape (4, 3)")):
        with pytest.raises(ValueError, match=re.escape(f"ids: an integer array [batch, columns], got {text}")):
            model.apply(v, bad, False)


@pytest.mark.parametrize("what", [2.7, True, "best", "x", None])
def test_make_predictor_refuses_what_that_is_not_ensemble_or_a_student_index(what):
    model = _model()
    v = model.init(jax.random.PRNGKey(0), _ids(), False)
    with pytest.raises(ValueError, match=r"use 'ensemble' or a student index 0\.\.4"):
        make_predictor(model, v, what)
    np.testing.assert_allclose(make_predictor(model, v, "2")(_ids()), make_predictor(model, v, np.int64(2))(_ids()))


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A 1-epoch synthetic run in bf16 compute (params fp32)."""
    from kdef_jax.config import base_config
    from kdef_jax.train import train_and_evaluate

    tmp_path = tmp_path_factory.mktemp("bf16")
    c = base_config()
    c.data.cache_dir = str(tmp_path / "cache")
    c.data.synthetic.num_train, c.data.synthetic.num_valid, c.data.synthetic.num_test = 3000, 700, 700
    c.data.name = "synthetic_test"
    c.model.hidden_units, c.model.compute_dtype = (64, 64), "bfloat16"
    c.train.batch_size, c.train.num_epochs, c.train.progress, c.train.plot = 512, 1, False, False
    train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    return tmp_path / "run"


@pytest.mark.parametrize("what", ["ensemble", "0"])
def test_export_run_folds_the_batchnorm_of_a_bfloat16_run(bf16_run, what):
    """The folded bf16 network rounds at other places than the unfolded one (~1e-3 in probability): the
    1e-4 check refused every bf16 run's --fold-bn; unfolded, the file still matches the model exactly."""
    from kdef_jax.export_run import export_run

    info = export_run(bf16_run, what, fold_bn=True, platforms=("cpu",), out=bf16_run.parent / f"p_{what}.jaxexport")
    assert info["compute_dtype"] == "bfloat16" and 0 < info["check"]["max_abs_diff"] < 1e-2
    plain = export_run(bf16_run, what, platforms=("cpu",), out=bf16_run.parent / f"q_{what}.jaxexport")
    assert plain["check"]["max_abs_diff"] <= 1e-4


def test_predictor_reads_uint32_ids_past_int32_as_oov_and_names_bad_ids(trained_run):
    """uint32 ids >= 2**31 wrapped to negative int32 rows (another field's embedding, silently); ids of
    the wrong rank or a float dtype failed deep in flax or jnp."""
    model, variables, fmap, _ = load_run(trained_run[1])
    predict = make_predictor(model, variables, 1)
    ids = np.ones((2, fmap.num_columns), np.int32)
    oov = ids.copy()
    oov[0, 1] = 10**9  # outside every field: its OOV row
    want = np.asarray(predict(oov))
    for big in (2**31, 2**32 - 1):
        wide = ids.astype(np.uint32)
        wide[0, 1] = big
        np.testing.assert_array_equal(np.asarray(predict(wide)), want)
        np.testing.assert_array_equal(np.asarray(predict(jnp.asarray(wide))), want)  # a device array too
    for bad in (ids[0], ids[None], ids.astype(np.float32), 3):
        with pytest.raises(ValueError, match=r"ids: an integer array \[batch, columns\]"):
            predict(bad)
    np.testing.assert_array_equal(np.asarray(predict(ids.tolist())), np.asarray(predict(ids)))


def test_extract_student_checks_its_index_like_make_predictor():
    model = _model()
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.ones((2, 3), jnp.int32), False))()
    assert extract_student(model, variables, "1")[0].num_students == 1
    for k, message in ((1.5, "use 'ensemble' or a student index"), ("ensemble", "give a student index")):
        with pytest.raises(ValueError, match=message):
            extract_student(model, variables, k)


def test_a_run_loads_under_x64_too(trained_run):
    """BatchNorm statistics were created float64 under jax_enable_x64, so a float32 run's checkpoint was
    'written by a different model/config'."""
    with jax.enable_x64(True):
        model, variables, fmap, _ = load_run(trained_run[1])
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(variables))
