"""Multi-device training (kdef_jax/sharding.py): tests/multidevice_cases.py in a subprocess with 4 host
CPU devices, since a process's device count is fixed when jax starts; plus the one-device cases here."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import ml_collections
import pytest

from kdef_jax import sharding
from kdef_jax.config import base_config, validate

TESTS = Path(__file__).resolve().parent


def _run_cases(marker: str) -> None:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker, str(TESTS / "multidevice_cases.py")],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900,
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and "skipped" not in tail, tail


def test_multidevice_cases_pass_on_four_host_devices():
    _run_cases("not slow")


@pytest.mark.slow
def test_slow_multidevice_cases_pass_on_four_host_devices():  # 1x4 vmap, lazy Adam on 2x2
    _run_cases("slow")


def test_one_device_means_no_mesh():
    assert sharding.make_mesh(ml_collections.ConfigDict({"data": 0, "student": 1}), {"train.batch_size": 7},
                              jax.devices()[:1]) is None
    assert sharding.describe(None, ()).startswith("1 device")


@pytest.mark.parametrize("key,value,msg", [("data", -1, "mesh.data: must be an integer >= 0"),
                                            ("student", 0, "mesh.student: must be an integer >= 1")])
def test_bad_mesh_config_names_the_key(key, value, msg):
    c = base_config()
    c.mesh[key] = value
    with pytest.raises(ValueError, match=msg):
        validate(c)
