"""A Ctrl-C swallowed where Python ignores exceptions (a gc callback, a __del__) is raised again."""

import os
import signal
import sys
import threading
import types
from pathlib import Path

import pytest

from kdef_jax import interrupts

REPO = Path(__file__).resolve().parents[1]


class _CtrlCInDel:
    """Ctrl-C while the interpreter runs a __del__ (as JAX's gc callback): Python prints "Exception
    ignored in ..." and goes on."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


@pytest.fixture
def default_sigint(monkeypatch):
    """Python's own SIGINT handler (a runner may start the tests with SIGINT ignored), and the swallowed
    exceptions recorded instead of printed."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    swallowed = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_type))
    yield swallowed
    signal.signal(signal.SIGINT, before)


def test_a_ctrl_c_swallowed_by_a_del_is_raised_again_once(default_sigint):
    with interrupts.remembered():
        _CtrlCInDel()
        assert default_sigint == [KeyboardInterrupt]  # the interpreter swallowed it
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_if_pending()
        interrupts.raise_if_pending()  # once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_remembered_a_swallowed_ctrl_c_stays_lost(default_sigint):
    _CtrlCInDel()
    assert default_sigint == [KeyboardInterrupt]
    interrupts.raise_if_pending()  # nothing: library callers keep Python's behaviour


def test_a_ctrl_c_raised_normally_is_not_raised_twice_after_the_block(default_sigint):
    with pytest.raises(KeyboardInterrupt):
        with interrupts.remembered():
            signal.raise_signal(signal.SIGINT)
    interrupts.raise_if_pending()  # the block's end forgot it


def test_an_ignored_or_custom_sigint_is_left_alone(default_sigint):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with interrupts.remembered():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN

    def mine(signum, frame):
        pass

    signal.signal(signal.SIGINT, mine)
    with interrupts.remembered():
        assert signal.getsignal(signal.SIGINT) is mine


def test_off_the_main_thread_nothing_changes(default_sigint):
    seen = []
    t = threading.Thread(target=lambda: seen.append(interrupts.remembered().__enter__() or "entered"))
    t.start()
    t.join()
    assert seen == ["entered"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_real_run_stops_at_the_next_step_after_a_swallowed_ctrl_c(default_sigint, monkeypatch, tmp_path, capsys):
    """kdef_jax.main on configs/default.py:tiny; a Ctrl-C swallowed after the 2nd train step ends the run
    with status 130 at the 3rd, before any epoch ends (before: the run trained to its end and exited 0)."""
    from kdef_jax import main, train
    from conftest import load_config_module

    config = load_config_module("default").get_config("tiny")
    with config.unlocked():
        config.train.num_epochs = 3
    steps = []

    class Bar(train.tqdm):
        def update(self, n=1):
            steps.append(n)
            if len(steps) == 2:
                _CtrlCInDel()
            return super().update(n)

    monkeypatch.setattr(train, "tqdm", Bar)
    monkeypatch.setattr(main, "_CONFIG", types.SimpleNamespace(value=config))
    monkeypatch.setattr(main, "_WORKDIR", types.SimpleNamespace(value=str(tmp_path / "run")))
    monkeypatch.setattr(main, "config_flags", types.SimpleNamespace(get_config_filename=lambda flag: f"{REPO}/configs/default.py:tiny"))
    monkeypatch.setattr(os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    with pytest.raises(SystemExit) as e:
        main.main(["kdef_jax.main"])
    assert e.value.code == 130 and default_sigint == [KeyboardInterrupt]
    assert len(steps) == 2, steps  # stopped before the 3rd step's update
    assert "kdef_jax: interrupted; the epochs checkpointed so far are kept" in capsys.readouterr().err
    assert not (tmp_path / "run" / "results.json").exists()
