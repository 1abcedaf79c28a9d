"""Multi-process training (kdef_jax/distributed.py): two CPU processes of 2 devices each, joined by
``jax.distributed`` (gloo collectives), against one process with 4 devices: the same global program,
so the same losses and weights; plus the config checks."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from conftest import pre_bn_bias

from kdef_jax import distributed
from kdef_jax.config import base_config, validate

TESTS = Path(__file__).resolve().parent
WORKER = TESTS / "multihost_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(TESTS.parent / ".cache" / "jax_test_compile"))
    env.pop("XLA_FLAGS", None)  # the device count comes from the worker's --devices
    return env


def _results(out: str) -> dict:
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _one_process(workdir, cache, *extra) -> str:
    proc = subprocess.run([sys.executable, str(WORKER), "--workdir", str(workdir), "--cache", str(cache),
                           "--devices", "4", *extra], env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


def _two_processes(workdir, cache, *extra, ok: bool = True, timeout: int = 600) -> list:
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), "--workdir", str(workdir), "--cache", str(cache),
                               "--devices", "2", "--coordinator", f"localhost:{port}", "--num-processes", "2",
                               "--process-id", str(i), *extra],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"the two processes did not end within {timeout} s; where each waited:\n" + _stacks(procs))
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outs):
        assert (p.returncode == 0) == ok, out[-4000:]
    return outs


def _stacks(procs) -> str:
    """Each process's Python stacks (the worker dumps them on SIGUSR1) and the tail of its output."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGUSR1)
    time.sleep(3)
    for p in procs:
        p.kill()
    outs = [p.communicate()[0] or "" for p in procs]
    return "\n".join(f"--- process {i} ---\n{out[-8000:]}" for i, out in enumerate(outs))


def _epoch_losses(workdir) -> list:
    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(ln)["train"]["loss"] for ln in lines]


def _assert_same_weights(a_dir, b_dir) -> None:
    """Latest checkpoints (the best epoch can differ: the validation AUC inherits the noise below) within 1e-5 (1% of one Adam step at lr 1e-3: a wrong row or a missed shard moves
    a weight by whole steps, float reduction order by ~1e-6 after 12 steps), except the Dense biases
    feeding a BatchNorm and the BN running means that follow them: their true gradient is 0, so Adam
    turns the rounding noise of any reduction order into ±lr steps (tests/multidevice_cases.py)."""
    from kdef_jax.export import load_run

    va, vb = load_run(a_dir, "latest")[1], load_run(b_dir, "latest")[1]
    checked = 0
    for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(va), jax.tree_util.tree_leaves_with_path(vb)):
        name = jax.tree_util.keystr(path)
        if pre_bn_bias(path) or ("BatchNorm" in name and "mean" in name):  # tiny config: (32, 32) towers
            continue
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=name)
        checked += 1
    assert checked >= 8


@pytest.mark.slow  # ~40 s (three processes start and train); .ci/run's second phase runs it
def test_two_processes_train_what_one_process_trains(tmp_path):
    cache = tmp_path / "cache"
    one = _results(_one_process(tmp_path / "one", cache))
    outs = _two_processes(tmp_path / "two", cache)
    r0, r1 = (_results(o) for o in outs)
    assert one["processes"] == 1 and r0["processes"] == r1["processes"] == 2
    assert (r0["process"], r1["process"]) == (0, 1)
    assert r0["test_auc"] == r1["test_auc"]  # every process evaluates the same gathered predictions
    assert r0["epochs_run"] == one["epochs_run"] == 2
    np.testing.assert_allclose(_epoch_losses(tmp_path / "two"), _epoch_losses(tmp_path / "one"), rtol=2e-5)
    _assert_same_weights(tmp_path / "one", tmp_path / "two")
    assert "[devices] 4 devices (cpu, 2 processes): data 4 × student 1" in outs[0]
    assert "[epoch" in outs[0] and "[epoch" not in outs[1]  # process 0 alone logs
    assert json.loads((tmp_path / "two" / "results.json").read_text())["processes"] == 2
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 2  # written once per epoch


@pytest.mark.slow
def test_two_processes_resume_a_checkpointed_run_with_the_table_split_by_rows(tmp_path):
    cache, rows = tmp_path / "cache", ("--embedding", "rows")
    _one_process(tmp_path / "one", cache, *rows)
    _two_processes(tmp_path / "two", cache, "--epochs", "1", *rows)
    outs = _two_processes(tmp_path / "two", cache, "--epochs", "2", "--resume", *rows)
    assert "embedding table split by rows over 4" in outs[0]
    assert "resumed from epoch 1" in outs[0]
    np.testing.assert_allclose(_epoch_losses(tmp_path / "two"), _epoch_losses(tmp_path / "one"), rtol=2e-5)
    _assert_same_weights(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
@pytest.mark.parametrize("failing", [0, 1])
def test_a_failure_in_the_middle_of_an_epoch_on_one_process_stops_every_process_at_once(tmp_path, failing):
    """The failing process used to wait at jax.distributed's shutdown barrier while the other waited in a
    collective for it: both hung 5 minutes, then JAX aborted them with C++ stack dumps."""
    t0 = time.monotonic()
    outs = _two_processes(tmp_path / "two", tmp_path / "cache", "--epochs", "1", "--fail-batch-on-process",
                          str(failing), ok=False, timeout=240)
    assert time.monotonic() - t0 < 200  # each ends at its next collective, not at the barrier's 300 s
    assert "OSError: worker: the third batch could not be read" in outs[failing]
    assert f"process {failing} of 2 stops; the other processes stop at their next collective" in outs[failing]
    assert f"process {1 - failing} of 2 stops (another process failed first" in outs[1 - failing]
    assert not any("Shutdown barrier" in out or "Check failure stack trace" in out for out in outs)


@pytest.mark.slow
def test_processes_with_other_data_stop_before_training_saying_so(tmp_path):
    """Process 1 with a 3-row test split ended its last evaluation early and waited at the shutdown barrier
    while process 0 waited in a collective for it: 300 s, then both aborted."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), "--workdir", str(tmp_path / "two"), "--cache",
                               str(tmp_path / "cache"), "--devices", "2", "--coordinator", f"localhost:{port}",
                               "--num-processes", "2", "--process-id", str(i), "--epochs", "1",
                               *(["--test-rows", "3"] if i == 1 else [])],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode != 0 for p in procs)
    for out in outs:
        assert ("ValueError: the processes of this run do not all have the same config (process 1 differs from "
                "process 0); data (process 1 differs from process 0)") in out
        assert "[epoch" not in out


@pytest.mark.slow
def test_a_failure_on_process_0_while_it_builds_the_data_stops_every_process(tmp_path):
    """process 1 waits for process 0's cache; when that fails, process 1 is told and stops (it used to
    wait at a barrier process 0 never reached, until jax's coordination timed out)."""
    outs = _two_processes(tmp_path / "two", tmp_path / "cache", "--fail-data-on-process-0", ok=False, timeout=180)
    assert "FileNotFoundError: worker: no data on process 0" in outs[0]
    assert "kdef_jax: dataset cache: process 0 failed (its output names the error); process 1 stops too" in outs[1]


@pytest.mark.parametrize("key,value,msg", [
    ("coordinator", "somehost", "distributed.coordinator: 'somehost' is not"),
    ("num_processes", 0, "distributed.num_processes: must be >= 1"),
    ("process_id", 2, r"distributed.process_id: must be in \[0, 2\)"),
])
def test_bad_distributed_config_names_the_key(key, value, msg):
    c = base_config()
    c.distributed.coordinator, c.distributed.num_processes, c.distributed.process_id = "localhost:1234", 2, 0
    c.distributed[key] = value
    with pytest.raises(ValueError, match=msg):
        validate(c)


def test_one_process_by_default():
    from kdef_jax import distributed

    assert base_config().distributed.coordinator == ""
    assert distributed.initialize(base_config().distributed) is False
    assert distributed.is_main()
    assert distributed.main_first(lambda: 7, "unused") == 7


def test_auto_without_a_cluster_is_an_error_naming_the_key(tmp_path):
    env = {k: v for k, v in _env().items() if not k.startswith(("SLURM_", "OMPI_", "TPU_"))}
    proc = subprocess.run([sys.executable, "-m", "kdef_jax.main", "--config", "configs/default.py:tiny",
                           "--workdir", str(tmp_path / "run"), "--config.distributed.coordinator=auto"],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "config distributed.coordinator='auto'" in proc.stderr and "no cluster" in proc.stderr


# jax.distributed's start and main_first, with jax's calls faked (cases mutation testing found unpinned).


@pytest.fixture
def fake_init(monkeypatch):
    """jax.distributed.initialize and jax.config.update recorded, not run."""
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(distributed.jax.config, "update", lambda *a: calls.append(("config", a)))
    return calls


def test_initialize_passes_the_config_to_jax_distributed(fake_init):
    explicit = ml_collections.ConfigDict({"coordinator": "h:1234", "num_processes": 3, "process_id": 2})
    assert distributed.initialize(explicit) is False  # jax.process_count() is still 1 here
    assert fake_init == [("config", ("jax_cpu_collectives_implementation", "gloo")),
                         ("init", {"coordinator_address": "h:1234", "num_processes": 3, "process_id": 2})]
    fake_init.clear()
    distributed.initialize(ml_collections.ConfigDict({"coordinator": "auto", "num_processes": 1, "process_id": 0}))
    assert fake_init[-1] == ("init", {})  # cluster detection: jax finds the processes itself


def test_initialize_failure_names_the_key(fake_init, monkeypatch):
    def fail(**kw):
        raise ValueError("boom")

    monkeypatch.setattr(distributed.jax.distributed, "initialize", fail)
    with pytest.raises(ValueError, match=r"config distributed.coordinator='h:1': jax.distributed.initialize failed \(boom\)"):
        distributed.initialize(ml_collections.ConfigDict({"coordinator": "h:1", "num_processes": 2, "process_id": 0}))


def test_initialize_when_already_initialized_reports_the_process_count(monkeypatch):
    monkeypatch.setattr(distributed.jax.distributed, "is_initialized", lambda: True)
    assert distributed.initialize(ml_collections.ConfigDict({"coordinator": "h:1"})) is False  # 1 process


@pytest.fixture
def two_processes(monkeypatch):
    """main_first as process ``index`` of 2, with process 0's broadcast faked: returns (what was said, {"index", "reply"})."""
    said, state = [], {"index": 0, "reply": True}
    monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)
    monkeypatch.setattr(distributed.jax, "process_index", lambda: state["index"])

    def says(ok):
        said.append(bool(ok))
        return state["reply"] if state["index"] else bool(ok)

    monkeypatch.setattr(distributed, "_process0_says", says)
    return said, state


def test_main_first_on_process_0(two_processes):
    said, _ = two_processes
    assert distributed.main_first(lambda: 5, "cache") == 5 and said == [True]
    said.clear()
    with pytest.raises(KeyError):
        distributed.main_first(lambda: {}["x"], "cache")
    assert said == [False]  # the others are told, then process 0 raises


def test_main_first_on_another_process(two_processes):
    said, state = two_processes
    state["index"] = 1
    assert distributed.main_first(lambda: 6, "cache") == 6  # after process 0 succeeded: runs fn itself
    state["reply"] = False
    with pytest.raises(RuntimeError, match="cache: process 0 failed .* process 1 stops too"):
        distributed.main_first(lambda: 6, "cache")
