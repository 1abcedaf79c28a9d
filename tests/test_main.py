"""The command line: clear errors for bad flags/config, and a real (tiny) run."""

import json
import re
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import load_config_module
from kdef_jax.main import check_config_overrides

REPO = Path(__file__).resolve().parents[1]


def _run(args, tmp_path):
    env = dict(os.environ, KDEF_CACHE_DIR=str(tmp_path / "cache"))
    return subprocess.run(
        [sys.executable, "-m", "kdef_jax.main", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_unknown_config_key_is_named():
    msg = check_config_overrides(["--config", "configs/default.py:tiny", "--config.model.nope=1"])
    assert "unknown config key 'model.nope'" in msg and "num_students" in msg
    msg = check_config_overrides(["--config=configs/frappe.py", "--config.trian.batch_size=1"])
    assert "'trian'" in msg
    assert check_config_overrides(["--config=configs/frappe.py", "--config.train.batch_size=1"]) is None
    for argv in (["-config", "configs/default.py:tiny", "-config.model.nope=2"],  # absl's other spellings
                 ["--config=configs/default.py:tiny", "--noconfig.model.nope"],
                 ["-config=configs/default.py:tiny", "--config.model.nope", "2"]):
        assert "unknown config key 'model.nope'" in check_config_overrides(argv)
    assert check_config_overrides(["-config", "configs/default.py:tiny", "--noconfig.train.plot"]) is None


def test_a_config_file_that_does_not_load_is_one_line_even_without_overrides():
    assert check_config_overrides(["--config", "configs/nope.py:tiny"]) == (
        "cannot load config 'configs/nope.py:tiny': FileNotFoundError: config file 'configs/nope.py' not found")
    msg = check_config_overrides(["--config=configs/frappe.py:tni"])
    assert "unknown argument 'tni'" in msg


@pytest.mark.parametrize("key,value,message", [
    ("model.hidden_units", ("abc",), "config model.hidden_units: must be a tuple of integer widths"),
    ("model.hidden_units", (True, 16), "config model.hidden_units: must be a tuple of integer widths"),
    ("train.log_every", 0, "config train.log_every: must be >= 1, got 0"),
    ("data.synthetic.positive_rate", 1.5, "config data.synthetic.positive_rate: must be in (0, 1), got 1.5"),
    ("data.synthetic.num_train", 0, "config data.synthetic.num_train: must be in [1, 2**31), got 0"),
    ("optim.learning_rate", float("nan"), "config optim.learning_rate: must be a finite number > 0, got nan"),
    ("optim.learning_rate", 0.0, "config optim.learning_rate: must be a finite number > 0, got 0.0"),
    ("optim.embedding_l2", float("inf"), "config optim.embedding_l2: must be a finite number >= 0, got inf"),
    ("optim.min_delta", -1.0, "config optim.min_delta: must be in [0, 1]"),
    ("optim.min_delta", float("nan"), "config optim.min_delta: must be in [0, 1]"),
    ("optim.min_lr", -1e-6, "config optim.min_lr: must be a finite number >= 0"),
    ("optim.clip_norm", -5.0, "config optim.clip_norm: must be a finite number >= 0"),
    ("optim.b1", 1.5, "config optim.b1: must be in [0, 1), got 1.5"),
    ("optim.b2", 1.0, "config optim.b2: must be in [0, 1), got 1.0"),
    ("optim.eps", -1.0, "config optim.eps: must be a finite number > 0"),
    ("loss.huber_delta", -1.0, "config loss.huber_delta: must be a finite number > 0"),
    ("model.embedding_init_std", -1.0, "config model.embedding_init_std: must be a finite number >= 0"),
    ("train.steps_per_epoch", -3, "config train.steps_per_epoch: must be >= 0"),
    ("train.prefetch", -1, "config train.prefetch: must be >= 0"),
    ("data.split_fractions", (0.5, -0.2, 0.7), "config data.split_fractions: must be 3 finite numbers >= 0"),
    ("data.split_fractions", (0, 0, 0), "config data.split_fractions: must be 3 finite numbers >= 0"),
    ("data.split_fractions", (0.9, 0.1), "config data.split_fractions: must be 3 finite numbers >= 0"),
    ("data.delimiter", "", "config data.delimiter: must be one character other than a line break"),
    ("data.delimiter", "\n", "config data.delimiter: must be one character other than a line break"),
    ("data.quotechar", "\t", "config data.quotechar: must be '' (no quoting) or one character other than the delimiter"),
    ("data.encoding", "utf-99", "config data.encoding: 'utf-99' is not a text encoding Python knows"),
    ("train.batchsize", 64, "config train.batchsize: is not a config key (did you mean 'train.batch_size'?"),
    ("optim.learnig_rate", 0.5, "config optim.learnig_rate: is not a config key"),
])
def test_config_values_the_run_cannot_use_name_their_key(key, value, message):
    from kdef_jax.config import base_config, validate

    c = base_config()
    *path, leaf = key.split(".")
    node = c
    for part in path:
        node = node[part]
    with c.unlocked():
        node[leaf] = value  # a key base_config lacks too: what a config file's typo adds
    with pytest.raises(ValueError) as e:
        validate(c)
    assert message in str(e.value)


@pytest.fixture(scope="module")
def cli_tiny_run(tmp_path_factory):
    """(workdir, completed process) of one `python -m kdef_jax.main` tiny run with K=2, shared by the
    tests that read it (a copy where they change it): each CLI run starts jax and compiles anew."""
    tmp = tmp_path_factory.mktemp("cli")
    wd = tmp / "w"
    return wd, _run(["--config", "configs/default.py:tiny", "--workdir", str(wd), "--config.model.num_students=2"], tmp)


def test_cli_checkpoint_errors_are_one_clean_message(cli_tiny_run, tmp_path):
    """A changed model is named from the checkpoint's records before any array is read; a damaged
    manifest fails inside orbax, whose in-flight reads then print 'Event loop is closed' tracebacks
    after the error unless kdef_jax.checkpoint lets them finish quietly."""
    assert cli_tiny_run[1].returncode == 0
    wd = tmp_path / "w"
    shutil.copytree(cli_tiny_run[0], wd)
    p = _run(["--config", "configs/default.py:tiny", "--workdir", str(wd), "--config.resume=True",
              "--config.model.hidden_units=(8,8)", "--config.train.num_epochs=3"], tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "CheckpointError: the checkpoint" in p.stderr and "was written by a different model/config" in p.stderr
    (wd / "checkpoints" / "latest" / "2" / "state" / "manifest.ocdbt").write_bytes(b"garbage{")
    p = _run(["--config", "configs/default.py:tiny", "--workdir", str(wd), "--config.resume=True",
              "--config.model.num_students=2", "--config.train.num_epochs=3"], tmp_path)
    assert p.returncode == 2 and "CheckpointError: cannot restore the latest checkpoint" in p.stderr
    assert "Traceback" not in p.stderr and "Event loop is closed" not in p.stderr


def test_cli_rejects_unknown_key_without_traceback(tmp_path):
    p = _run(["--config", "configs/default.py:tiny", "--workdir", str(tmp_path / "w"), "--config.model.nope=1"], tmp_path)
    assert p.returncode == 2
    assert "unknown config key 'model.nope'" in p.stderr and "Traceback" not in p.stderr
    # a value absl cannot parse for the key's type is the same kind of usage error
    p = _run(["--config", "configs/default.py:tiny", "--workdir", str(tmp_path / "w"), "--config.model.num_students=2.0"], tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == "kdef_jax: error: flag --config.model.num_students=2.0: invalid literal for int() with base 10: '2.0'"


def test_cli_rejects_zero_students(tmp_path):
    p = _run(["--config", "configs/default.py:tiny", "--workdir", str(tmp_path / "w"), "--config.model.num_students=0"], tmp_path)
    assert p.returncode == 2
    assert "model.num_students" in p.stderr and "Traceback" not in p.stderr
    # where the config names its students (model.students), a K override would not be read: an error, not ignored
    p = _run(["--config", "configs/kdef_latest_frappe.py:tiny", "--workdir", str(tmp_path / "w"), "--config.model.num_students=6"],
             tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and not (tmp_path / "w").exists()
    assert "config model.num_students=6 is not read: model.students='ipnn:1,final:1,ecn:1' names the students" in p.stderr


def test_overrides_of_what_model_students_replaces_are_errors():
    from kdef_jax.config import check_overrides_are_read, load_config_file

    base = load_config_file(f"{REPO}/configs/kdef_latest_frappe.py:tiny")
    for key, value in (("num_students", 6), ("student", "ecn")):
        c = load_config_file(f"{REPO}/configs/kdef_latest_frappe.py:tiny")
        c.model[key] = value
        with pytest.raises(ValueError, match=f"config model.{key}={value!r} is not read"):
            check_overrides_are_read(c, base)
    c = load_config_file(f"{REPO}/configs/kdef_latest_frappe.py:tiny")
    c.model.students = "mlp:6"  # the students themselves may change
    check_overrides_are_read(c, base)
    plain = load_config_file(f"{REPO}/configs/default.py:tiny")
    c = load_config_file(f"{REPO}/configs/default.py:tiny")
    c.model.num_students = 6  # no model.students: num_students is read
    check_overrides_are_read(c, plain)


def test_cli_tiny_run_writes_results(cli_tiny_run):
    wd, p = cli_tiny_run
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((wd / "results.json").read_text())
    assert res["num_students"] == 2 and res["students"] == ["mlp_0", "mlp_1"]
    assert "ensemble − best student" in p.stdout
    assert (wd / "metrics.jsonl").exists() and (wd / "config.json").exists()


@pytest.mark.parametrize("key,ok,bad", [
    ("optim.patience", 1, 0),
    ("optim.lr_decay", 1.0, 1.5),
    ("optim.lr_decay", 1e-9, 0.0),  # (0, 1]: 0 would jump straight to min_lr
    ("optim.learning_rate", 1e-9, 0.0),
    ("optim.embedding_l2", 0.0, -1e-9),
    ("model.embedding_dim", 1, 0),
    ("model.final.blocks", 2, 3),
    ("train.num_epochs", 1, 0),
    ("train.eval_batch_size", 0, -1),
    ("data.min_count", 1, 0),
    ("data.valid_mod", 2, 1),
])
def test_validate_boundaries(key, ok, bad):
    """At each limit: the first legal value passes, the first illegal one names its key."""
    from kdef_jax.config import base_config, validate

    def cfg(value):
        c = base_config()
        if key == "data.valid_mod":
            c.data.split = "mod"
        node = c
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
        return c

    validate(cfg(ok))
    with pytest.raises(ValueError, match=f"config {key}:"):
        validate(cfg(bad))


def test_unknown_override_names_the_section_it_is_missing_from():
    """M2: the message says under which section the key is missing."""
    from kdef_jax.main import check_config_overrides

    msg = check_config_overrides(["--config", "configs/default.py:tiny", "--config.model.final.nope=1"])
    assert "unknown config key 'model.final.nope' (no 'nope' under model.final; valid: blocks," in msg
    msg = check_config_overrides(["--config", "configs/default.py:tiny", "--config.nope=1"])
    assert "(no 'nope' under <top level>;" in msg


@pytest.mark.parametrize("key,value,message", [
    ("students", "mlp:0", "config model.students / num_students: need 1 to 2**31 - 1 students per group, got 'mlp:0'"),
    ("students", "mlp:2,foo:1", "config model.students: unknown student kind 'foo'"),
    ("student", "nope", "config model.student: unknown student kind 'nope'"),
])
def test_student_groups_are_checked_with_the_config_before_any_data(key, value, message):
    from kdef_jax.config import base_config, validate

    c = base_config()
    c.model[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        validate(c)


# Cases mutation testing of main.py found unpinned (2026-12-07).


def test_main_refuses_positional_arguments_in_one_line(capsys):
    from kdef_jax import main

    with pytest.raises(SystemExit) as e:
        main.main(["kdef_jax.main", "extra"])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("kdef_jax: error: unexpected arguments: ['extra'] (every setting is a")


def _exit_raises(code):
    raise SystemExit(code)


def test_ctrl_c_says_how_to_continue(main_without_flags, monkeypatch, capsys):
    from kdef_jax import train

    monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir: (_ for _ in ()).throw(KeyboardInterrupt()))
    monkeypatch.setattr(os, "_exit", _exit_raises)  # exit_interrupted's os._exit, kept inside pytest
    with pytest.raises(SystemExit) as e:
        main_without_flags.main(["kdef_jax.main"])
    assert e.value.code == 130
    assert capsys.readouterr().err == ("\nkdef_jax: interrupted; the epochs checkpointed so far are kept: continue with "
                                       "the same command and --config.resume=True (--workdir unused)\n")


@pytest.mark.parametrize("flag", ["--help", "--helpfull", "-?", "-h"])
def test_asking_for_help_prints_the_usage_and_succeeds(flag, tmp_path):
    p = _run([flag], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "--workdir: Directory for checkpoints" in p.stdout and "--config.model.num_students" in p.stdout
    assert p.stdout.startswith("Train a KDEF ensemble")  # says what the command does


def test_an_empty_workdir_is_a_usage_error_and_writes_nothing(tmp_path):
    """``--workdir $RUN`` with RUN unset wrote a whole run into the current folder."""
    p = subprocess.run([sys.executable, "-m", "kdef_jax.main", "--config", str(REPO / "configs/default.py:tiny"),
                        "--workdir", ""], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr == "kdef_jax: error: --workdir is empty; give the run's folder\n"
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def main_without_flags(monkeypatch):
    """kdef_jax.main.main with its flags replaced (configs/default.py:tiny, a workdir), absl's verbosity restored."""
    from absl import logging

    from kdef_jax import main

    monkeypatch.setattr(main, "_CONFIG", types.SimpleNamespace(value=load_config_module("default").get_config("tiny")))
    monkeypatch.setattr(main, "_WORKDIR", types.SimpleNamespace(value="unused"))
    monkeypatch.setattr(main, "config_flags", types.SimpleNamespace(get_config_filename=lambda flag: "configs/default.py:tiny"))
    before = logging.get_verbosity()
    logging.set_verbosity(logging.INFO)  # as something imported before main() may have left it
    yield main
    logging.set_verbosity(before)


@pytest.mark.parametrize("error", [FileNotFoundError("data file x.libfm not found"), FloatingPointError("loss is nan"),
                                   FileExistsError("w holds a run"), ImportError("no module named tfds"),
                                   PermissionError(13, "Permission denied", "w/config.json")])
def test_main_reports_the_errors_it_expects_in_one_line(main_without_flags, monkeypatch, capsys, error):
    from absl import logging

    from kdef_jax import train

    def fail(config, workdir):
        assert logging.get_verbosity() == logging.WARNING  # orbax's INFO lines off unless --verbosity is given
        raise error

    monkeypatch.setattr(train, "train_and_evaluate", fail)
    with pytest.raises(SystemExit) as e:
        main_without_flags.main(["kdef_jax.main"])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"\nkdef_jax: error: {type(error).__name__}: {error}\n"


FULL = "kdef_jax: the disk is full: free space on it (or use a larger one), then run the same command again"


@pytest.mark.parametrize("error", [
    OSError(28, "No space left on device", "cache/frappe-1a2b"),  # a data cache build (named by atomic_dir.building)
    OSError(28, "No space left on device"),  # a run file
    ValueError('RESOURCE_EXHAUSTED: Error writing "opt_state" in OCDBT database: No space left on device [os_error_code=28]'),  # orbax
])
def test_a_full_disk_is_one_error_that_says_what_to_do(main_without_flags, monkeypatch, capsys, error):
    """Interruption fuzzing: a full disk ended in a traceback (cache build, run files) or in orbax's error
    alone; every file is written atomically, so freeing space and running again (resume) is the way on."""
    from kdef_jax import train

    monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir: (_ for _ in ()).throw(error))
    with pytest.raises(SystemExit) as e:
        main_without_flags.main(["kdef_jax.main"])
    assert e.value.code == 2
    assert capsys.readouterr().err == (f"\nkdef_jax: error: {type(error).__name__}: {error}\n{FULL} "
                                       f"(with --config.resume=True where a checkpoint was saved)\n")


def test_other_os_errors_keep_their_traceback(main_without_flags, monkeypatch):
    from kdef_jax import train

    monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError, match="I/O error"):
        main_without_flags.main(["kdef_jax.main"])


def test_a_failed_cache_build_names_the_cache_in_its_os_error(tmp_path):
    from kdef_jax.data.atomic_dir import building

    with pytest.raises(OSError) as e:
        with building(tmp_path / "ds-abc") as tmp:
            (tmp / "x").write_text("half")
            raise OSError(28, "No space left on device")  # os.pwrite's error names no file
    assert e.value.filename == str(tmp_path / "ds-abc") and e.value.errno == 28
    assert sorted(tmp_path.iterdir()) == []


def test_check_config_overrides_needs_a_config_flag_with_a_value():
    """No --config (absl names the missing flag), or --config as the last argument: nothing to check."""
    from kdef_jax.main import check_config_overrides

    assert check_config_overrides(["--workdir", "w"]) is None
    assert check_config_overrides(["--workdir", "w", "--config.model.nope=1"]) is None
    assert check_config_overrides(["--workdir", "w", "--config"]) is None


def test_a_run_whose_console_cannot_print_unicode_still_succeeds(tmp_path):
    """The results table's "ensemble − best student" (U+2212) under PYTHONIOENCODING=ascii (or LANG=C
    without UTF-8 mode) raised UnicodeEncodeError after results.json was written: exit 2, no curves.png."""
    env = dict(os.environ, KDEF_CACHE_DIR=str(tmp_path / "cache"), PYTHONIOENCODING="ascii")
    p = subprocess.run([sys.executable, "-m", "kdef_jax.main", "--config", "configs/default.py:tiny", "--workdir",
                        str(tmp_path / "run"), "--config.train.num_epochs=1"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-800:]
    assert "ensemble \\u2212 best student" in p.stdout
    assert (tmp_path / "run" / "results.json").exists() and (tmp_path / "run" / "curves.png").exists()


def test_ctrl_c_in_a_real_run_exits_130_not_with_a_crash(tmp_path):
    """SIGINT while a real run compiles its train step: the resume hint and status 130. Before, the normal
    interpreter shutdown tore XLA down under the compilation still running in its thread pool, and such
    interrupts ended in SIGSEGV (-11, "Fatal Python error") instead."""
    import signal
    import time

    env = dict(os.environ, KDEF_CACHE_DIR=str(tmp_path / "cache"))
    # Python turns SIGINT into KeyboardInterrupt unless it starts with SIGINT ignored (as under some
    # runners): the child restores that itself (a preexec_fn would fork this multithreaded process)
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv[0] = 'kdef_jax.main'; runpy.run_module('kdef_jax.main', run_name='__main__', alter_sys=True)")
    p = subprocess.Popen([sys.executable, "-c", start, "--config", "configs/default.py", "--workdir", str(tmp_path / "run")],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in p.stdout:  # the model is built: the train step compiles next (seconds)
            seen.append(line)
            if line.startswith("[model] parameters") and "total" in line:
                break
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert "total" in seen[-1], "".join(seen) + err[-2000:]
    assert p.returncode == 130, err[-3000:]
    assert "kdef_jax: interrupted; the epochs checkpointed so far are kept" in err and "Fatal Python" not in err


def test_a_flag_file_that_cannot_be_opened_is_a_usage_error(tmp_path):
    p = _run(["--config", "configs/default.py:tiny", "--workdir", str(tmp_path / "w"), f"--flagfile={tmp_path / 'no.txt'}"],
             tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("kdef_jax: error: ERROR:: Unable to open flagfile: ")
    assert str(tmp_path / "no.txt") in p.stderr and "Traceback" not in p.stderr
