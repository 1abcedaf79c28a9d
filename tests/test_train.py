"""Training: one compiled step, the plateau schedule, end-to-end runs, resume and bad input."""

import json
import math
import os
import re
import shutil

import jax
import ml_collections
import numpy as np
import optax
import pytest
from conftest import step_compiles
from run_helpers import tiny_config

from kdef_jax.checkpoint import CheckpointError, Checkpoints
from kdef_jax.data import checksums
from kdef_jax.config import base_config
from kdef_jax.data.dataset import load_dataset
from kdef_jax.data.feature_map import FeatureMap
from kdef_jax.data.loader import iterate_batches
from kdef_jax.models.embedding import field_offsets
from kdef_jax.models.ensemble import build_model
from kdef_jax.steps import create_train_state, get_learning_rate, make_optimizer, make_train_step, set_learning_rate
from kdef_jax.train import plateau_update, train_and_evaluate




def _setup(tmp_path, **over):
    c = tiny_config(tmp_path, **over)
    ds = load_dataset(c.data, log=lambda *a: None)
    model = build_model(c.model, ds.feature_map)
    tx = make_optimizer(c.optim)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), ds.feature_map.num_columns)
    step = make_train_step(model, tx, c.loss, c.optim.embedding_l2)
    return c, ds, model, state, step


def test_train_step_updates_state_and_keeps_pad_rows_zero(tmp_path):
    c, ds, model, state, step = _setup(tmp_path, **{"optim.embedding_l2": 0.1})
    before = jax.tree.map(np.asarray, state.params)
    batches = list(iterate_batches(ds.splits["train"], 512))
    assert batches[-1]["mask"].sum() == 3000 - 5 * 512  # padded last batch
    key = jax.random.PRNGKey(1)
    for b in batches:
        state, m = step(state, b, key)
    assert int(state.step) == len(batches)
    assert all(math.isfinite(float(v)) for v in m.values())
    after = jax.tree.map(np.asarray, state.params)
    diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), before, after)
    assert all(d > 0 for d in jax.tree_util.tree_leaves(diff))
    table = after["embedding"]["table"]
    assert np.all(table[field_offsets(ds.feature_map.vocab_sizes)] == 0)


def test_step_updates_the_donated_table_in_place(tmp_path):
    """No full copy of the embedding table per step (the L2 value is an ancestor of the update)."""
    c, ds, model, state, step = _setup(tmp_path, **{"optim.embedding_l2": 0.1})
    table = state.params["embedding"]["table"]
    b = next(iterate_batches(ds.splits["train"], 512))
    hlo = step.lower(state, b, jax.random.PRNGKey(1)).compile().as_text()
    shape = "f32[%d,%d]" % table.shape
    entry = hlo[hlo.index("ENTRY"):]
    assert shape in entry
    assert not re.search(re.escape(shape) + r"\{[^}]*\} copy\(", entry)


def test_padded_rows_do_not_change_the_step(tmp_path):
    """A batch of 300 real rows padded to 512 gives the same update as the 300 rows alone."""
    c, ds, model, _, _ = _setup(tmp_path, **{"model.dropout": 0.0})
    # Plain SGD: the update is the gradient itself (Adam's first step would amplify noise-level
    # gradients, e.g. of the pre-BN biases, to ±lr).
    tx = optax.sgd(1.0)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), ds.feature_map.num_columns)
    x, y = np.asarray(ds.splits["train"].x[:300]), np.asarray(ds.splits["train"].y[:300])
    pad = {"ids": np.zeros((512, x.shape[1]), np.int32), "y": np.zeros(512, np.float32), "mask": np.zeros(512, np.float32)}
    pad["ids"][:300], pad["y"][:300], pad["mask"][:300] = x, y, 1.0
    pad["ids"][300:] = x[:212]  # garbage rows that would matter if they were not masked
    small = {"ids": x, "y": y, "mask": np.ones(300, np.float32)}
    key = jax.random.PRNGKey(0)
    s1, m1 = jax.jit(make_train_step(model, tx, c.loss, c.optim.embedding_l2).__wrapped__)(state, pad, key)
    s2, m2 = jax.jit(make_train_step(model, tx, c.loss, c.optim.embedding_l2).__wrapped__)(state, small, key)
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)
    flat1 = jax.tree_util.tree_flatten_with_path(s1.params)[0]
    flat2 = jax.tree_util.tree_leaves(s2.params)
    for (path, a), b in zip(flat1, flat2):
        name = jax.tree_util.keystr(path)
        if "Dense_0" in name and "bias" in name or "Dense_1" in name and "bias" in name:
            continue  # biases right before BatchNorm: true gradient 0, float noise only
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=3e-6, err_msg=name)  # float32 summation order
    for a, b in zip(jax.tree_util.tree_leaves(s1.batch_stats), jax.tree_util.tree_leaves(s2.batch_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_learning_rate_injection_keeps_adam_moments(tmp_path):
    c, ds, model, state, step = _setup(tmp_path)
    state, _ = step(state, next(iterate_batches(ds.splits["train"], 512)), jax.random.PRNGKey(0))
    mu = np.asarray(state.opt_state[1].inner_state[0].mu["embedding"]["table"])
    s2 = set_learning_rate(state, 1e-4)
    assert math.isclose(get_learning_rate(s2), 1e-4, rel_tol=1e-6)
    np.testing.assert_array_equal(np.asarray(s2.opt_state[1].inner_state[0].mu["embedding"]["table"]), mu)


def test_plateau_schedule_reproduces_reference_log():
    """EKTF_Criteo_001: epochs 1-22 improve; 23 no (lr 1e-4); 24-26 improve; 27 no (1e-5); 28 no → stop."""
    o = ml_collections.ConfigDict({"lr_decay": 0.1, "min_lr": 1e-6, "min_delta": 1e-6, "patience": 2})
    meta = {"lr": 1e-3, "best_auc": -math.inf, "best_epoch": 0, "bad_epochs": 0, "lr_decays": 0}
    aucs = [0.70 + 0.001 * e for e in range(1, 23)]
    aucs += [aucs[-1] + 5e-7]  # 23: below the 1e-6 threshold
    aucs += [aucs[-1] + 0.001 * i for i in (1, 2, 3)]  # 24-26
    aucs += [aucs[-1] - 0.01, aucs[-1]]  # 27, 28 (equal to best is no gain)
    lrs, epoch = [], 0
    for epoch, a in enumerate(aucs, 1):
        lrs.append(meta["lr"])
        plateau_update(meta, epoch, a, o)
        if meta["bad_epochs"] >= o.patience:
            break
    assert epoch == 28 and meta["best_epoch"] == 26 and meta["lr_decays"] == 3
    assert lrs[22] == 1e-3 and math.isclose(lrs[23], 1e-4) and math.isclose(lrs[27], 1e-5)
    meta["lr"] = 2e-6
    plateau_update(meta, 29, 0.0, o)
    assert meta["lr"] == 1e-6  # floor


def test_end_to_end_tiny_run_writes_results(tmp_path, capsys):
    c = tiny_config(tmp_path, **{"train.progress": True})  # on, but the captured streams are no terminal
    res = train_and_evaluate(c, tmp_path / "run")  # the default log: report.console
    out = capsys.readouterr()
    assert "\r" not in out.out + out.err and "it/s" not in out.err  # no bar redrawn into a log file
    assert "[epoch   2]" in out.out and "results in" in out.out
    wd = tmp_path / "run"
    on_disk = json.loads((wd / "results.json").read_text())
    assert on_disk["best_student"] == res["best_student"]
    assert on_disk["software"]["jax"] == jax.__version__ and on_disk["software"]["kdef-jax"]  # the code it was made with
    rows = {r["model"]: r for r in res["rows"]}
    assert set(rows) == {"ensemble", "mlp_0", "mlp_1", "mlp_2"}
    assert all(0.5 < r["test_auc"] <= 1 for r in rows.values())
    best = max(["mlp_0", "mlp_1", "mlp_2"], key=lambda n: rows[n]["val_auc"])
    assert res["best_student"] == best
    assert math.isclose(res["ensemble_minus_best_student_test_auc"], rows["ensemble"]["test_auc"] - rows[best]["test_auc"])
    assert res["params"]["total"] == res["params"]["embedding"] + res["params"]["group0_mlp"]
    lines = (wd / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == res["epochs_run"] == 2
    aucs = [json.loads(line)["val"]["teacher"]["auc"] for line in lines]
    assert res["best_epoch"] == 1 + int(np.argmax(aucs))  # the test rows come from the best epoch's state
    ck = Checkpoints(wd, create=False)
    assert ck.steps() == {"latest": 2, "best": res["best_epoch"]}
    ck.close()
    assert res["train_samples_per_s"] > 0
    assert on_disk["cpu"]["model"] and isinstance(on_disk["cpu"]["isa"], list)  # the throughput names its CPU


def test_resume_continues_exactly(tmp_path):
    full = train_and_evaluate(tiny_config(tmp_path), tmp_path / "full", log=lambda *a: None)
    train_and_evaluate(tiny_config(tmp_path, **{"train.num_epochs": 1}), tmp_path / "split", log=lambda *a: None)
    said = []
    resumed = train_and_evaluate(
        tiny_config(tmp_path, **{"resume": True}), tmp_path / "split", log=lambda *a: said.append(" ".join(map(str, a)))
    )
    assert resumed["epochs_run"] == 2
    assert any(line.startswith("[train] resumed from epoch 1") for line in said)  # not a retrain from scratch
    assert sum(line.startswith("[epoch") for line in said) == 1  # it ran epoch 2 only
    for a, b in zip(full["rows"], resumed["rows"]):
        assert a["model"] == b["model"]
        np.testing.assert_allclose(a["test_auc"], b["test_auc"], rtol=1e-6)
        np.testing.assert_allclose(a["test_logloss"], b["test_logloss"], rtol=1e-6)


def test_a_crash_between_the_two_checkpoint_saves_resumes_to_the_same_results(tmp_path, monkeypatch):
    """Killed after one of epoch 2's two saves (best, latest): the resumed run continues from best,
    which is an epoch ahead, logs each epoch once and evaluates the true best epoch's weights, as an
    uninterrupted run does."""
    full = train_and_evaluate(tiny_config(tmp_path), tmp_path / "full", log=lambda *a: None)
    history = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert history[1]["improved"]  # epoch 2 is a new best: it saves both checkpoints
    calls = []
    real_init = Checkpoints.__init__

    def init_with_a_dying_second_save(self, *a, **k):
        real_init(self, *a, **k)
        for mngr in (self.latest, self.best):
            real_save = mngr.save

            def save(step, *sa, _real=real_save, **sk):
                calls.append(step)
                if calls.count(2) == 2:  # the second save of epoch 2: the process dies
                    raise KeyboardInterrupt
                return _real(step, *sa, **sk)

            mngr.save = save

    monkeypatch.setattr(Checkpoints, "__init__", init_with_a_dying_second_save)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(tiny_config(tmp_path), tmp_path / "cut", log=lambda *a: None)
    monkeypatch.setattr(Checkpoints, "__init__", real_init)
    said = []
    resumed = train_and_evaluate(tiny_config(tmp_path, resume=True), tmp_path / "cut", log=lambda *a: said.append(str(a[0])))
    assert any(l.startswith("[train] resumed from epoch 2") and "checkpoints/best" in l for l in said)
    assert not any(l.startswith("[epoch") for l in said)  # epoch 2 is not trained twice
    logged = [json.loads(l) for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in logged] == [1, 2]
    assert resumed["best_epoch"] == full["best_epoch"] == 2
    for a, b in zip(full["rows"], resumed["rows"]):
        np.testing.assert_allclose(b["val_auc"], a["val_auc"], rtol=1e-6)
        np.testing.assert_allclose(b["test_auc"], a["test_auc"], rtol=1e-6)


def test_resume_rewrites_a_log_line_of_an_epoch_that_was_never_checkpointed(tmp_path):
    train_and_evaluate(tiny_config(tmp_path, **{"train.num_epochs": 1}), tmp_path / "run", log=lambda *a: None)
    log = tmp_path / "run" / "metrics.jsonl"
    first = log.read_text()
    log.write_text(first + first.replace('"epoch": 1', '"epoch": 2'))  # a line whose checkpoint never landed
    train_and_evaluate(tiny_config(tmp_path, resume=True), tmp_path / "run", log=lambda *a: None)
    lines = log.read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    assert lines[0] + "\n" == first


def test_existing_checkpoints_without_resume_are_not_overwritten(tmp_path):
    c = tiny_config(tmp_path, **{"train.num_epochs": 1})
    train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    with pytest.raises(FileExistsError, match=r"continue it with config resume=True \(--config.resume=True\) or "
                                              r"choose a new workdir"):  # words for a Python caller and the command line
        train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    with pytest.raises(TypeError, match="config: an ml_collections.ConfigDict .* got dict"):
        train_and_evaluate(c.to_dict(), tmp_path / "other", log=lambda *a: None)  # was AttributeError: no to_json


def test_earlier_results_without_checkpoints_are_not_overwritten(tmp_path):
    """A workdir whose checkpoints were moved aside still holds its results: a fresh run refuses it."""
    c = tiny_config(tmp_path, **{"train.num_epochs": 1})
    train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    shutil.move(tmp_path / "run" / "checkpoints", tmp_path / "moved")
    before = {f.name: f.read_bytes() for f in (tmp_path / "run").iterdir() if f.is_file()}
    for resume in (False, True):
        c2 = tiny_config(tmp_path, **{"train.num_epochs": 1, "resume": resume})
        with pytest.raises(FileExistsError, match="holds metrics.jsonl and results.json of an earlier run"):
            train_and_evaluate(c2, tmp_path / "run", log=lambda *a: None)
    assert {f.name: f.read_bytes() for f in (tmp_path / "run").iterdir() if f.is_file()} == before
    assert not (tmp_path / "run" / "checkpoints").exists()  # the refusal created no folders either


@pytest.mark.parametrize("name", ["config.json", "feature_map.json", "vocab.json", "curves.png"])
def test_a_users_own_files_in_the_workdir_are_not_overwritten(tmp_path, name):
    """A fresh run writes config.json, feature_map.json, vocab.json and curves.png into its workdir; a
    file of one of those names that no run wrote (no run config.json beside it) is refused, untouched."""
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_bytes(b"the user's own file")
    with pytest.raises(FileExistsError, match=f"holds {name}, which this run would overwrite"):
        train_and_evaluate(tiny_config(tmp_path, **{"train.num_epochs": 1}), run, log=lambda *a: None)
    assert sorted(p.name for p in run.iterdir()) == [name]  # no checkpoints/ folder left either
    assert (run / name).read_bytes() == b"the user's own file"


def test_a_second_run_on_a_workdir_in_use_is_refused_before_it_touches_a_file(tmp_path):
    """Two runs on one workdir would interleave metrics.jsonl and mix config.json, checkpoints and
    results.json of both: while a run holds the workdir, another (fresh or resume) is refused, naming
    the holder's pid, and writes nothing; once the holder is gone the workdir is free."""
    from kdef_jax import workdir_lock

    c = tiny_config(tmp_path, **{"train.num_epochs": 1})
    run = tmp_path / "run"
    run.mkdir()
    with workdir_lock.held(run):  # another open file description: flock conflicts even in one process
        for resume in (False, True):
            with pytest.raises(workdir_lock.WorkdirInUseError, match=f"{re.escape(str(run))} is in use by another "
                               f"training run \\(pid {os.getpid()};"):
                train_and_evaluate(tiny_config(tmp_path, **{"train.num_epochs": 1, "resume": resume}), run,
                                   log=lambda *a: None)
        assert sorted(p.name for p in run.iterdir()) == [workdir_lock.LOCK_NAME]
    train_and_evaluate(c, run, log=lambda *a: None)
    assert (run / "results.json").exists() and (run / workdir_lock.LOCK_NAME).read_bytes() == b""


def test_a_run_holds_its_workdir_until_its_results_are_written(tmp_path):
    from kdef_jax import workdir_lock

    run, tried = tmp_path / "run", []

    def log(msg, *a, **k):
        if msg.startswith("[train] first step") or msg.startswith("epochs "):  # training, and after results.json
            with pytest.raises(workdir_lock.WorkdirInUseError):
                with workdir_lock.held(run):
                    pass
            tried.append(msg.split()[0])

    train_and_evaluate(tiny_config(tmp_path, **{"train.num_epochs": 1}), run, log=log)
    assert tried == ["[train]", "epochs"]
    with workdir_lock.held(run):  # released
        pass


def test_a_run_that_stopped_before_its_first_checkpoint_can_start_again(tmp_path):
    """Its config.json, feature_map.json and vocab.json are a run's own: a fresh start replaces them."""
    c = tiny_config(tmp_path, **{"train.num_epochs": 1})
    train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    for f in ("checkpoints", "metrics.jsonl", "results.json", "curves.png"):  # as if it died in epoch 1
        p = tmp_path / "run" / f
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    results = train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    assert (tmp_path / "run" / "results.json").exists() and results == json.loads((tmp_path / "run" / "results.json").read_text())


def test_resume_with_a_new_learning_rate_uses_it_and_logs_the_changes(tmp_path):
    c = tiny_config(tmp_path, **{"train.num_epochs": 1})
    train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    lines = []
    c2 = tiny_config(tmp_path, **{"train.num_epochs": 2, "resume": True, "optim.learning_rate": 1e-5})
    train_and_evaluate(c2, tmp_path / "run", log=lambda *a: lines.append(" ".join(map(str, a))))
    said = "\n".join(lines)
    assert "train.num_epochs 1 -> 2" in said and "optim.learning_rate 0.001 -> 1e-05" in said
    assert "learning rate 0.001 (the checkpoint's) -> 1e-05 (optim.learning_rate)" in said
    epochs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["lr"] for e in epochs] == [1e-3, 1e-5]


def test_resume_with_a_new_learning_rate_keeps_it_after_a_second_interruption(tmp_path, monkeypatch):
    """config.json holds the new rate as soon as the resumed run starts; if that run dies before its
    first save, the next resume must still see the change (the checkpoint records its own rate)."""
    train_and_evaluate(tiny_config(tmp_path, **{"train.num_epochs": 1}), tmp_path / "run", log=lambda *a: None)
    c2 = tiny_config(tmp_path, **{"train.num_epochs": 2, "resume": True, "optim.learning_rate": 1e-5})

    def dies(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoints, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(c2, tmp_path / "run", log=lambda *a: None)
    monkeypatch.undo()
    lines = []
    train_and_evaluate(c2, tmp_path / "run", log=lambda *a: lines.append(" ".join(map(str, a))))
    assert any("learning rate 0.001 (the checkpoint's) -> 1e-05" in l for l in lines)
    epochs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["lr"] for e in epochs] == [1e-3, 1e-5]


def test_resume_without_latest_continues_from_best(tmp_path):
    c = tiny_config(tmp_path, **{"train.num_epochs": 1})
    train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "latest")
    said = []
    c2 = tiny_config(tmp_path, **{"train.num_epochs": 2, "resume": True})
    train_and_evaluate(c2, tmp_path / "run", log=lambda *a: said.append(" ".join(map(str, a))))
    assert any(l.startswith("[train] resumed from epoch 1") and "checkpoints/best" in l for l in said)
    logged = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in logged] == [1, 2]


def test_a_missing_best_checkpoint_is_an_error_not_the_last_epochs_numbers(tmp_path):
    """min_delta 1: epoch 1 is best, epoch 2 latest. With best moved aside the final numbers cannot be
    the best epoch's, so the run says so instead of reporting epoch 2's under best_epoch 1."""
    c = tiny_config(tmp_path, **{"optim.min_delta": 1.0, "optim.patience": 5})
    train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    shutil.move(tmp_path / "run" / "checkpoints" / "best", tmp_path / "best_aside")
    c2 = tiny_config(tmp_path, **{"optim.min_delta": 1.0, "optim.patience": 5, "resume": True})
    with pytest.raises(CheckpointError, match=r"best holds no checkpoint, but the run's best epoch is 1"):
        train_and_evaluate(c2, tmp_path / "run", log=lambda *a: None)


def test_non_finite_validation_logits_stop_the_run_before_that_epoch_is_saved(tmp_path, monkeypatch):
    """Params that blow up in an epoch's last steps leave its training loss finite; the validation
    logits are not, and that state must not become the best or latest checkpoint."""
    import kdef_jax.train as train_mod

    real = train_mod.make_predict_step
    monkeypatch.setattr(train_mod, "make_predict_step", lambda *a, **k: (lambda *x: real(*a, **k)(*x) * float("nan")))
    with pytest.raises(FloatingPointError, match="validation logits became NaN/inf in epoch 1 .*No epoch finished"):
        train_and_evaluate(tiny_config(tmp_path), tmp_path / "run", log=lambda *a: None)
    ck = Checkpoints(tmp_path / "run", create=False)
    assert ck.steps() == {"latest": None, "best": None}
    ck.close()


def test_a_mesh_the_host_cannot_build_leaves_no_run_folder(tmp_path):
    c = tiny_config(tmp_path, **{"mesh.data": len(jax.devices()) + 1})
    with pytest.raises(ValueError, match="config mesh.data × mesh.student"):
        train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_validation_with_one_class_is_an_error(tmp_path):
    c = tiny_config(tmp_path)
    ds = load_dataset(c.data, log=lambda *a: None)
    y = np.load(ds.cache_dir / "valid_y.npy", mmap_mode="r+")
    y[:] = 1.0
    y.flush()
    del y
    checksums.write(ds.cache_dir)  # as if built from a file whose validation rows are all positive
    with pytest.raises(ValueError, match="all 700 valid rows have label 1, so their AUC is undefined"):
        train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    c = tiny_config(tmp_path, **{"train.num_epochs": 1})
    train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    step_dir = tmp_path / "run" / "checkpoints" / "latest" / "1"
    for f in (step_dir / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    c2 = tiny_config(tmp_path, **{"train.num_epochs": 2, "resume": True})
    with pytest.raises(CheckpointError, match="latest checkpoint .*corrupt"):
        train_and_evaluate(c2, tmp_path / "run", log=lambda *a: None)


def test_nan_loss_stops_with_message(tmp_path):
    c = tiny_config(tmp_path, **{"model.embedding_init_std": 1e38})  # overflows in the first layer (inf itself is refused by validate)
    with pytest.raises(FloatingPointError, match="NaN/inf in epoch 1 by step 1 .*No epoch finished, so no state was saved"):
        train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("model.num_students", 0, "model.num_students"),
        ("loss.variant", "nope", "loss.variant"),
        ("model.dropout", 1.0, "model.dropout"),
        ("train.batch_size", 0, "train.batch_size"),
    ],
)
def test_bad_config_values_name_the_key(tmp_path, key, value, match):
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(tiny_config(tmp_path, **{key: value}), tmp_path / "run", log=lambda *a: None)


def test_concat_needs_mlp_students(tmp_path):
    c = tiny_config(tmp_path, **{"loss.variant": "concat", "model.students": "mlp:2,ecn:1"})
    with pytest.raises(ValueError, match=r"config loss.variant: 'concat' .* needs MLP students; .* ecn, mlp"):
        train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_missing_data_dir_names_the_path(tmp_path):
    c = tiny_config(tmp_path, **{"data.format": "libfm", "data.data_dir": str(tmp_path / "nowhere"), "data.fields": ("a",)})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    assert not (tmp_path / "run").exists()  # the run folder it created is removed again
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(FileNotFoundError):
        train_and_evaluate(c, tmp_path / "mine", log=lambda *a: None)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"  # a folder that was there stays


# A whole run each (~10 s on a cold cache): the default run keeps two; sum, mean_prob and concat also run end to
# end in test_fusion_runs.py, and every variant's step loss is checked in test_train_step.py; -m slow runs all.
@pytest.mark.parametrize("variant", ["independent", "kd_only", *(pytest.param(v, marks=pytest.mark.slow) for v in
                                                                  ("mean", "sum", "mean_prob", "concat", "dml_only", "no_exam"))])
def test_every_variant_trains(tmp_path, variant):
    c = tiny_config(tmp_path, **{"loss.variant": variant, "train.num_epochs": 1, "train.steps_per_epoch": 2})
    res = train_and_evaluate(c, tmp_path / variant, log=lambda *a: None)
    assert math.isfinite(res["rows"][0]["test_auc"])


def test_single_student_runs(tmp_path):
    c = tiny_config(tmp_path, **{"model.num_students": 1, "train.num_epochs": 1})
    res = train_and_evaluate(c, tmp_path / "k1", log=lambda *a: None)
    assert res["students"] == ["mlp"] and res["num_students"] == 1
    # K=1: the ensemble is the student
    assert math.isclose(res["rows"][0]["test_auc"], res["rows"][1]["test_auc"], rel_tol=1e-12)


def test_run_writes_curves_png_or_says_why_not(tmp_path, monkeypatch):
    c = tiny_config(tmp_path, **{"train.plot": True, "train.num_epochs": 1, "model.num_students": 2})
    lines = []
    train_and_evaluate(c, tmp_path / "with", log=lines.append)
    png = (tmp_path / "with" / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and not any("[plot]" in line for line in lines)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if it were not installed
    lines = []
    train_and_evaluate(c, tmp_path / "without", log=lines.append)
    assert not (tmp_path / "without" / "curves.png").exists()
    assert any("matplotlib is not installed" in line and "kdef-jax[plots]" in line for line in lines)


def test_a_run_compiles_its_steps_once_through_lr_drops_restores_and_resume(tmp_path, caplog):
    """Each jitted step compiles once per process: a plateau's new learning rate, the best epoch's
    restore before the final evaluation and a resumed run all keep the arrays' placement (a committed
    array where an uncommitted one was, or the reverse, is a cache miss and a recompile)."""
    # min_delta 1: no epoch improves after the first, so epochs 2 and 3 each lower the learning rate
    c = tiny_config(tmp_path, **{"train.num_epochs": 3, "optim.min_delta": 1.0, "optim.patience": 5})
    res, counts = step_compiles(caplog, lambda: train_and_evaluate(c, tmp_path / "run", log=lambda *a: None))
    assert res["lr_decays"] == 2 and res["final_lr"] == pytest.approx(1e-5)
    assert counts == {"train_step": 1, "predict_step": 1}
    c2 = tiny_config(tmp_path, **{"train.num_epochs": 4, "optim.min_delta": 1.0, "optim.patience": 5, "resume": True})
    _, counts = step_compiles(caplog, lambda: train_and_evaluate(c2, tmp_path / "run", log=lambda *a: None))
    assert counts == {"train_step": 1, "predict_step": 1}


def test_resume_records_the_rate_it_was_started_with(tmp_path, monkeypatch):
    """T5: after a resume that changed optim.learning_rate, the checkpoint's configured_lr must hold the
    new rate; else the next resume (same config) sees a 'change' again and undoes the plateau decays."""
    import kdef_jax.train as train_mod

    monkeypatch.setattr(train_mod, "set_learning_rate", lambda state, lr: state)
    c = base_config()
    c.optim.learning_rate = 1e-5
    meta = {"lr": 1e-3, "configured_lr": 1e-3}
    train_mod._apply_resume_changes(tmp_path, c, None, meta, lambda *a: None)
    assert meta == {"lr": 1e-5, "configured_lr": 1e-5}
    meta["lr"] = 1e-6  # the resumed run decayed the rate, then was interrupted again
    train_mod._apply_resume_changes(tmp_path, c, None, meta, lambda *a: None)
    assert meta == {"lr": 1e-6, "configured_lr": 1e-5}


def test_resume_of_a_run_that_predates_a_config_key_logs_no_change(tmp_path):
    """A key added after the run started (missing from its config.json) is the default it ran with,
    not a change 'None -> default' in the resume log."""
    import json
    import kdef_jax.train as train_mod

    c = base_config()
    old = json.loads(c.to_json())
    del old["data"]["verify_cache"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    said = []
    train_mod._apply_resume_changes(tmp_path, c, None, {"lr": 1e-3, "configured_lr": 1e-3}, said.append)
    assert said == []
    c.data.verify_cache = False
    train_mod._apply_resume_changes(tmp_path, c, None, {"lr": 1e-3, "configured_lr": 1e-3}, said.append)
    assert said == ["[train] resume with a changed config: data.verify_cache True -> False"]


def test_config_json_and_feature_map_json_are_written_atomically(tmp_path, monkeypatch):
    """A resume rewrites both before it trains: a kill (or a full disk) mid-write must leave the old file,
    not half of one that neither a resume nor a fresh start accepts (interruption fuzzing)."""
    import kdef_jax.data.feature_map as feature_map_mod
    import kdef_jax.train as train_mod
    from pathlib import Path
    from kdef_jax.train import train_and_evaluate

    written = []
    for mod in (train_mod, feature_map_mod):
        def spy(out, write, real=mod.write_atomic, **kw):
            written.append(Path(out).name)
            return real(out, write, **kw)
        monkeypatch.setattr(mod, "write_atomic", spy)
    train_and_evaluate(tiny_config(tmp_path, **{"train.num_epochs": 1}), tmp_path / "run", log=lambda *a: None)
    assert {"config.json", "feature_map.json"} <= set(written)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 2024
    assert FeatureMap.load(tmp_path / "run" / "feature_map.json").num_fields > 0


def test_a_best_checkpoint_of_another_epoch_is_an_error(tmp_path, monkeypatch):
    """T7: the final numbers need the best epoch's state; checkpoints/best holding another epoch
    (here: what latest holds, epoch 2, while the best epoch is 1) is an error, not epoch 2's numbers."""
    from kdef_jax.train import train_and_evaluate

    real = Checkpoints.restore_variables
    monkeypatch.setattr(Checkpoints, "restore_variables", lambda self, which, template: real(self, "latest", template))
    c = tiny_config(tmp_path, **{"model.num_students": 2, "model.hidden_units": (8,), "optim.min_delta": 1.0,
                                 "optim.patience": 5, "train.steps_per_epoch": 1, "data.synthetic.num_train": 600,
                                 "data.synthetic.num_valid": 200, "data.synthetic.num_test": 200})
    with pytest.raises(CheckpointError, match=r"best holds epoch 2, but the run's best epoch is 1"):
        train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)


def test_epoch_train_metrics_are_the_mean_of_the_steps_metrics(tmp_path, monkeypatch):
    """metrics.jsonl's epoch "train" numbers (spec §4's train loss) are the mean of the epoch's step metrics."""
    import kdef_jax.train as train_mod

    seen = []
    real = train_mod.make_training

    def spy(*a, **kw):
        state, step = real(*a, **kw)

        def recording_step(state, batch, rng):
            state, m = step(state, batch, rng)
            seen.append({k: float(v) for k, v in m.items()})
            return state, m

        return state, recording_step

    monkeypatch.setattr(train_mod, "make_training", spy)
    c = tiny_config(tmp_path, **{"train.num_epochs": 1, "model.num_students": 2})
    train_mod.train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert len(seen) == 6  # 3000 rows / 512: 5 full batches + the padded last one, each one step
    assert len({round(m["loss"], 6) for m in seen}) > 1  # the steps' losses differ
    for k in ("loss", "reg", "label_bce", "kd", "dml", "grad_norm"):
        np.testing.assert_allclose(rec["train"][k], np.mean([m[k] for m in seen]), rtol=1e-6, err_msg=k)


def test_resume_refuses_data_that_encodes_ids_differently(tmp_path):
    """Resume needs the ids the checkpoint learned: data settings that change the fields (here data.pandas_na,
    so "NA" stops being a token of c) or only the vocabulary are a ValueError naming the field, before
    anything of the run is touched."""
    from data_helpers import raw_cfg, write_file

    from kdef_jax.train import _check_same_ids

    rows = "".join(f"{i % 2},{'xyNA'[i % 3] if i % 3 < 2 else 'NA'},{'pq'[i % 2]}\n" for i in range(600))
    write_file(tmp_path / "raw" / "train.csv", "label,c,d\n" + rows)
    write_file(tmp_path / "raw" / "valid.csv", "label,c,d\n" + rows[:2000])
    c = tiny_config(tmp_path, **{"train.num_epochs": 1, "model.num_students": 2, "model.hidden_units": (8,)})
    c.data = raw_cfg(tmp_path / "raw", tmp_path / "cache", format="delimited", header=True, delimiter=",",
                     fields=("c", "d"), files={"train": "train.csv", "valid": "valid.csv"}, pandas_na=False)
    train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    assert json.loads((tmp_path / "run" / "vocab.json").read_text())["c"] == ["NA", "x", "y"]
    config_before = (tmp_path / "run" / "config.json").read_bytes()
    c.resume, c.train.num_epochs, c.data.pandas_na = True, 2, True
    with pytest.raises(ValueError, match=r"the data's fields differ from the run's \(field 'c': .*'vocab_size': 5.* -> "
                                         r".*'vocab_size': 4.*\(changed: data.pandas_na False -> True\)") as e:
        train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    assert str(e.value).startswith(f"{tmp_path / 'run' / 'feature_map.json'}: ")  # the file it compared (or damaged)
    assert (tmp_path / "run" / "config.json").read_bytes() == config_before
    # the same fields, another vocabulary: {"c": [NA, x, y]} -> {"c": [NA, x, z]}
    other = tmp_path / "other_vocab.json"
    other.write_text(json.dumps({"c": ["NA", "x", "z"], "d": ["p", "q"]}))
    fmap = FeatureMap.load(tmp_path / "run" / "feature_map.json")
    with pytest.raises(ValueError, match=r"vocabulary differs from the run's vocab.json \(field 'c'") as e:
        _check_same_ids(tmp_path / "run", fmap, other)
    assert str(e.value).startswith(f"{tmp_path / 'run' / 'vocab.json'}: ")
    _check_same_ids(tmp_path / "run", fmap, tmp_path / "run" / "vocab.json")  # the run's own: fine
    # the run's vocab.json damaged, the data unchanged: checked by the digest its feature map records, resumed,
    # and the file rewritten (before: "the data's vocabulary differs", blaming the data settings)
    good = (tmp_path / "run" / "vocab.json").read_bytes()
    (tmp_path / "run" / "vocab.json").write_text("{}")
    c.data.pandas_na = False
    train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    assert (tmp_path / "run" / "vocab.json").read_bytes() == good


def test_resume_with_another_model_names_the_changed_keys(tmp_path):
    """Before: only the arrays that differ (34 of them for one more student), not model.num_students 2 -> 3."""
    from kdef_jax.checkpoint import CheckpointError

    c = tiny_config(tmp_path, **{"train.num_epochs": 1, "model.num_students": 2, "model.hidden_units": (8,)})
    train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
    c.resume, c.model.num_students, c.model.embedding_dim = True, 3, 8
    with pytest.raises(CheckpointError, match=r"arrays differ: .*\nthe run's config.json differs in model.embedding_dim "
                                              r"16 -> 8, model.num_students 2 -> 3: resume with its values"):
        train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)


def test_train_speed_is_nan_not_zero_when_every_step_compiled():
    from kdef_jax.train import speed_text, train_speed

    assert train_speed({"timed_rows": 3000, "timed_s": 1.5}) == 2000.0
    assert math.isnan(train_speed({"timed_rows": 0, "timed_s": 0.01}))  # a run of one step: nothing after the compiling step
    assert speed_text(2000.0) == "2,000 samples/s" and speed_text(float("nan")).startswith("samples/s n/a")


def test_a_workdir_that_is_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "run").write_text("the user's notes")
    with pytest.raises(FileExistsError, match="the run's workdir .*run is a file; give a folder"):
        train_and_evaluate(tiny_config(tmp_path), tmp_path / "run", log=lambda *a: None)
    assert (tmp_path / "run").read_text() == "the user's notes"


@pytest.mark.parametrize("n, batch", [(10, 4), (12, 4), (3, 8), (1, 1)])
def test_predict_logits_are_every_rows_logits_in_order_without_the_padded_ones(n, batch):
    """[K, N] in file order, filled batch by batch (two behind the device); the padded last batch's
    extra rows are dropped."""
    from kdef_jax.data.dataset import Split
    from kdef_jax.train import predict_logits

    x = np.arange(n * 2, dtype=np.int32).reshape(n, 2)
    split = Split("valid", x, np.zeros(n, np.float32))
    predict = jax.jit(lambda params, stats, ids: jax.numpy.stack([ids[:, 0] * 1.0, ids[:, 1] * -1.0, ids.sum(1) * 0.5]))
    state = type("S", (), {"params": None, "batch_stats": None})()
    got = predict_logits(predict, state, split, batch)
    assert got.shape == (3, n) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.stack([x[:, 0], -x[:, 1], x.sum(1) * 0.5]).astype(np.float32))


@pytest.mark.parametrize("workdir", ["", "  "])
def test_an_empty_workdir_is_refused_before_anything_is_written(tmp_path, monkeypatch, workdir):
    monkeypatch.chdir(tmp_path)  # Path("") is the current folder: the run would land here
    with pytest.raises(ValueError, match="the run's workdir is empty"):
        train_and_evaluate(tiny_config(tmp_path / "data"), workdir, log=lambda *a: None)
    assert list(tmp_path.iterdir()) == []



def test_a_batch_larger_than_its_split_trains_as_one_batch_of_the_split(tmp_path):
    """train.batch_size 2**31 - 1 padded every batch to that many rows (128 GiB of ids); now a batch is at
    most its split, with exactly the results of batches the size of the splits."""
    quiet = lambda *a, **k: None  # noqa: E731
    huge = train_and_evaluate(tiny_config(tmp_path, **{"train.batch_size": 2**31 - 1, "train.num_epochs": 1}),
                              tmp_path / "huge", log=quiet)
    exact = train_and_evaluate(tiny_config(tmp_path, **{"train.batch_size": 3000, "train.eval_batch_size": 700,
                                                        "train.num_epochs": 1}), tmp_path / "exact", log=quiet)
    assert huge["rows"] == exact["rows"]


def test_a_min_count_that_keeps_no_value_is_an_error_for_every_field_and_a_warning_for_some():
    from types import SimpleNamespace

    from kdef_jax.train import _check_vocabulary

    data = SimpleNamespace(min_count=10**20, name="d")
    fmap = SimpleNamespace(fields=[SimpleNamespace(name="a", vocab_size=2), SimpleNamespace(name="b", vocab_size=2)])
    with pytest.raises(ValueError, match=r"^config data.min_count=100000000000000000000: no field of dataset 'd' keeps a "
                                         r"value .* so every id would be OOV; lower it$"):
        _check_vocabulary(fmap, data, print)
    logged = []
    fmap.fields[1].vocab_size = 3
    _check_vocabulary(fmap, data, logged.append)
    assert logged == ["[data] warning: fields a keep no value at their min_count (data.min_count 100000000000000000000, "
                      "or data.field_options.<field>.min_count): each of their ids is OOV"]
    fmap.fields[0].vocab_size = 5
    logged.clear()
    _check_vocabulary(fmap, data, logged.append)
    assert logged == []
