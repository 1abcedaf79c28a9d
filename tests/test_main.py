"""The command line: clear errors for bad flags/config, and a real (tiny) run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_cli_rejects_unknown_key_without_traceback(tmp_path):
    p = _run(["--config", "configs/default.py:tiny", "--workdir", str(tmp_path / "w"), "--config.model.nope=1"], tmp_path)
    assert p.returncode == 2
    assert "unknown config key 'model.nope'" in p.stderr and "Traceback" not in p.stderr


def test_cli_rejects_zero_students(tmp_path):
    p = _run(["--config", "configs/default.py:tiny", "--workdir", str(tmp_path / "w"), "--config.model.num_students=0"], tmp_path)
    assert p.returncode == 2
    assert "model.num_students" in p.stderr and "Traceback" not in p.stderr


def test_cli_tiny_run_writes_results(tmp_path):
    wd = tmp_path / "w"
    p = _run(["--config", "configs/default.py:tiny", "--workdir", str(wd), "--config.model.num_students=2"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((wd / "results.json").read_text())
    assert res["num_students"] == 2 and res["students"] == ["mlp_0", "mlp_1"]
    assert "ensemble − best student" in p.stdout
    assert (wd / "metrics.jsonl").exists() and (wd / "config.json").exists()
