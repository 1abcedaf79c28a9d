"""Multi-device training (kdef_jax/sharding.py): tests/multidevice_cases.py in a subprocess with 4 host
CPU devices, since a process's device count is fixed when jax starts; plus the one-device cases here."""

import os
import subprocess
import sys
import types
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
def test_slow_multidevice_cases_pass_on_four_host_devices():  # 1x4, 4x1 vmap; lazy Adam; replicated groups; a run and its resume
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


def test_table_rows_rounds_up_to_the_mesh_size_hand_values():
    """The table is padded up to a multiple of the mesh size, and a divisible table not at all."""
    from kdef_jax.sharding import table_rows

    mesh4 = types.SimpleNamespace(size=4)
    assert [table_rows(t, mesh4) for t in (1, 141, 142, 144, 145)] == [4, 144, 144, 144, 148]
    assert table_rows(5298, types.SimpleNamespace(size=1)) == 5298


def test_splits_only_groups_that_divide_the_student_axis():
    """Only groups whose count the student axis divides are split; groups of one (KDEF_Latest) or
    3 copies over 2 shards are replicated."""
    from kdef_jax.sharding import splits

    assert [splits(k, 2) for k in (1, 2, 3, 4, 6)] == [False, True, False, True, True]
    assert [splits(k, 1) for k in (1, 4)] == [False, False] and splits(4, 4) and not splits(6, 4)

