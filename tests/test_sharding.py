"""Multi-device training (kdef_jax/sharding.py): tests/multidevice_cases.py in a subprocess with 4 host
CPU devices, since a process's device count is fixed when jax starts; plus the one-device cases here."""

import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from kdef_jax import sharding
from kdef_jax.config import base_config, validate

TESTS = Path(__file__).resolve().parent


def _run_cases(marker: str) -> None:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-m", marker, str(TESTS / "multidevice_cases.py")],
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


# The mesh's shape, order and batch rule, and the helpers around it (cases mutation testing found unpinned).


class _Dev:
    def __init__(self, i, process=0):
        self.id, self.process_index = i, process


def _cfg(data, student):
    return ml_collections.ConfigDict({"data": data, "student": student})


@pytest.fixture
def fake_mesh(monkeypatch):
    """make_mesh's Mesh(devices, axes) recorded as (shape, device ids in mesh order, axes)."""
    monkeypatch.setattr(sharding, "Mesh", lambda devs, axes: (devs.shape, [d.id for d in devs.flat], axes))


def test_make_mesh_shape_order_and_batch_rule(fake_mesh):
    devs = [_Dev(i) for i in (3, 1, 2, 0)]
    assert sharding.make_mesh(_cfg(4, 1), {}, devs) == ((4, 1), [0, 1, 2, 3], sharding.AXES)  # data × student
    assert sharding.make_mesh(_cfg(0, 2), {}, devs)[0] == (2, 2)
    assert sharding.make_mesh(_cfg(1, 2), {}, devs)[0] == (1, 2)  # one data row, 2 student shards: still a mesh
    assert sharding.make_mesh(_cfg(1, 1), {}, devs) is None
    # batch rows split over "data" only: 6 rows over a 2 × 2 mesh are 3 per data shard
    assert sharding.make_mesh(_cfg(2, 2), {"train.batch_size": 6}, devs)[0] == (2, 2)
    with pytest.raises(ValueError, match="train.batch_size: 6 rows do not split over the 4 devices"):
        sharding.make_mesh(_cfg(4, 1), {"train.batch_size": 6}, devs)
    # ordered by process first, then id: each process holds whole data rows
    by_process = [_Dev(0, 1), _Dev(1, 1), _Dev(2, 0), _Dev(3, 0)]
    assert sharding.make_mesh(_cfg(2, 2), {}, by_process)[1] == [2, 3, 0, 1]


def test_multi_process_mesh_must_take_every_device(fake_mesh, monkeypatch):
    monkeypatch.setattr(sharding.jax, "process_count", lambda: 2)
    devs = [_Dev(0, 0), _Dev(1, 0), _Dev(2, 1), _Dev(3, 1)]
    with pytest.raises(ValueError, match="2-process run must use all 4 devices"):
        sharding.make_mesh(_cfg(1, 2), {}, devs)
    assert sharding.make_mesh(_cfg(2, 2), {}, devs)[0] == (2, 2)


def test_one_device_with_rows_embedding_has_no_lookup():
    """mesh.embedding='rows' without a mesh (one device): the model's own gather."""
    assert sharding.table_lookup(None, ml_collections.ConfigDict({"embedding": "rows"})) is None


def test_batch_rows_go_over_data_and_scalars_are_replicated():
    mesh = Mesh(np.asarray(jax.devices()[:1], dtype=object).reshape(1, 1), sharding.AXES)
    assert sharding.batch_sharding(mesh).spec == P("data")
    assert sharding.replicated(mesh).spec == P()
    assert sharding.TABLE_ROWS == P(("data", "student"), None)


def test_describe_names_split_and_replicated_groups():
    dev = types.SimpleNamespace(device_kind="cpu")
    mesh = types.SimpleNamespace(shape={"data": 1, "student": 2}, size=2, devices=np.asarray([dev], dtype=object))
    groups = (types.SimpleNamespace(name="mlpx2", count=2), types.SimpleNamespace(name="ipnnx1", count=1))
    line = sharding.describe(mesh, groups, split_table=True)
    assert line == "2 devices (cpu): data 1 × student 2; mlpx2 split, ipnnx1 replicated; embedding table split by rows over 2"
    assert sharding.describe(mesh, groups) == "2 devices (cpu): data 1 × student 2; mlpx2 split, ipnnx1 replicated"


def test_to_host_of_a_multi_process_run_concatenates_not_stacks(monkeypatch):
    """Across processes to_host gathers each array whole (tiled): the same shape as one process gets."""
    monkeypatch.setattr(sharding, "jax", types.SimpleNamespace(process_count=lambda: 2))
    got = sharding.to_host({"a": jnp.arange(6.0).reshape(2, 3)})
    assert got["a"].shape == (2, 3)
    np.testing.assert_array_equal(got["a"], np.arange(6.0).reshape(2, 3))
