"""The CPU runtime tuning applied at import (kdef_jax/runtime.py)."""

import ctypes
import importlib.metadata
import os
import subprocess
import sys
import types

import pytest

from kdef_jax import runtime


def _child(code, **env):
    e = dict(os.environ)
    e.pop("XLA_FLAGS", None)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120)


def test_importing_the_training_code_applies_malloc_and_ynn_flag_before_backend_start():
    p = _child("import kdef_jax.steps, os; from kdef_jax import runtime; print(runtime.applied, os.environ.get('XLA_FLAGS'))")
    assert p.returncode == 0, p.stderr
    applied, _, flags = p.stdout.strip().partition("} ")
    if "'xla_flags': True" in applied:
        assert flags.split()[-1] == "--xla_cpu_experimental_ynn_fusion_type="
        # the flag must parse and take effect: a matmul + reduction compiles without a YNNPACK fusion
        q = _child("import kdef_jax.steps, jax, jax.numpy as jnp\n"
                   "f = jax.jit(lambda x, w: jnp.maximum(x @ w, 0).sum(0))\n"
                   "x, w = jnp.ones((64, 32)), jnp.ones((32, 16))\n"
                   "print(float(f(x, w)[0]), 'ynn' in f.lower(x, w).compile().as_text())")
        assert q.returncode == 0 and q.stdout.strip() == "2048.0 False", q.stderr


def test_opt_out_and_user_flags_are_respected():
    p = _child("import kdef_jax.steps, os; from kdef_jax import runtime; print(runtime.applied, os.environ.get('XLA_FLAGS'))",
               KDEF_JAX_TUNE_CPU="0")
    assert p.stdout.strip() == "{} None", p.stdout
    p = _child("import kdef_jax.steps, os; print(os.environ.get('XLA_FLAGS'))",
               XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=-dot")
    assert p.stdout.strip() == "--xla_cpu_experimental_ynn_fusion_type=-dot"


_REUSE = """
import ctypes, resource, sys
{prelude}
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 1200 << 20  # above the 1 GiB mmap threshold used before: XLA's K=10 temporaries are 1.04 GiB
faults = []
for _ in range(3):  # an XLA step: allocate the temporaries, write them, free them
    p = libc.malloc(n)
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ctypes.memset(p, 1, n)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    libc.free(p)
print(faults[-1])
"""


def test_malloc_tuning_reuses_freed_gigabyte_blocks_without_page_faults():
    """A freed 1.2 GB block is served again from the heap: writing it again faults no pages (the
    untuned glibc maps and unmaps it every time, and faults every page again)."""
    if not sys.platform.startswith("linux"):
        return
    tuned = _child(_REUSE.format(prelude="import kdef_jax.steps\nfrom kdef_jax import runtime\n"
                                         "assert runtime.applied.get('malloc'), runtime.applied"))
    assert tuned.returncode == 0, tuned.stderr
    untuned = _child(_REUSE.format(prelude=""))
    assert untuned.returncode == 0, untuned.stderr
    pages = (1200 << 20) // 4096
    assert int(tuned.stdout) < pages // 100, (tuned.stdout, untuned.stdout)
    if int(untuned.stdout) > 1000:  # 4 KB pages (with transparent huge pages always on, far fewer faults)
        assert int(untuned.stdout) > 10 * int(tuned.stdout)


def test_the_ynn_flag_is_applied_on_the_jaxlib_it_was_measured_on():
    """U3: test_runtime skips its check when the flag was not applied; on jaxlib 0.10.x it must be."""
    import importlib.metadata

    if not importlib.metadata.version("jaxlib").startswith("0.10."):
        pytest.skip("the flag is measured on jaxlib 0.10.x only")
    p = _child("import kdef_jax.steps; from kdef_jax import runtime; print(runtime.applied['xla_flags'])", KDEF_JAX_TUNE_CPU="1")
    assert p.returncode == 0 and p.stdout.strip() == "True", p.stderr[-2000:]


def test_no_flag_is_added_once_the_backend_has_started():
    """U4: XLA_FLAGS is read when the backend starts: after that the flag would be ignored, so it is
    not added and not reported as applied."""
    p = _child("import jax, os; jax.numpy.ones(1).block_until_ready()\n"
               "import kdef_jax.steps; from kdef_jax import runtime\n"
               "print(runtime.applied['xla_flags'], os.environ.get('XLA_FLAGS'))", KDEF_JAX_TUNE_CPU="1")
    assert p.returncode == 0 and p.stdout.strip() == "False None", (p.stdout, p.stderr[-2000:])


# Cases mutation testing of runtime.py found unpinned (2026-12-07).

_ARENAS = """
import ctypes, os, sys, tempfile, threading
{prelude}
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
b = threading.Barrier(4)
def work():  # four threads allocating at once: untuned glibc gives them arenas of their own
    b.wait(); p = libc.malloc(4096); b.wait(); libc.free(p)
ts = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
fd, path = tempfile.mkstemp(); os.close(fd)
fp = libc.fopen(path.encode(), b"w"); libc.malloc_info(0, fp); libc.fclose(fp)
print(open(path).read().count("<heap nr=")); os.unlink(path)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_malloc_tuning_keeps_one_arena():
    tuned = _child(_ARENAS.format(prelude="import kdef_jax.steps\nassert kdef_jax.runtime.applied.get('malloc')"),
                   KDEF_JAX_TUNE_CPU="1")
    untuned = _child(_ARENAS.format(prelude=""))
    assert tuned.returncode == 0 and untuned.returncode == 0, (tuned.stderr, untuned.stderr)
    assert int(tuned.stdout) == 1, tuned.stdout
    assert int(untuned.stdout) > 1, untuned.stdout  # the check can tell the two apart


def test_malloc_tuning_reports_what_mallopt_said(monkeypatch):
    monkeypatch.setattr(runtime, "sys", types.SimpleNamespace(platform="linux"))
    for answer, want in ((1, True), (0, False)):
        monkeypatch.setattr(runtime, "ctypes", types.SimpleNamespace(
            CDLL=lambda name, _a=answer: types.SimpleNamespace(mallopt=lambda *a, _a=_a: _a)))
        assert runtime._tune_glibc_malloc() is want
    monkeypatch.setattr(runtime, "ctypes", types.SimpleNamespace(CDLL=lambda name: types.SimpleNamespace()))
    assert runtime._tune_glibc_malloc() is False  # a libc without mallopt
    monkeypatch.setattr(runtime, "ctypes", ctypes)
    monkeypatch.setattr(runtime, "sys", types.SimpleNamespace(platform="darwin", modules=sys.modules))
    assert runtime._tune_glibc_malloc() is False


@pytest.fixture
def fresh_flags(monkeypatch):
    """_add_xla_cpu_flags as on a process whose backend has not started, with XLA_FLAGS unset."""
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(runtime, "_backend_started", lambda: False)
    return monkeypatch


def test_the_flag_keeps_the_users_other_xla_flags(fresh_flags):
    fresh_flags.setattr(importlib.metadata, "version", lambda name: "0.10.9")
    fresh_flags.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert runtime._add_xla_cpu_flags() is True
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2 --xla_cpu_experimental_ynn_fusion_type="


def test_the_flag_is_only_added_on_verified_jaxlib_versions(fresh_flags):
    fresh_flags.setattr(importlib.metadata, "version", lambda name: "0.9.2")
    assert runtime._add_xla_cpu_flags() is False and "XLA_FLAGS" not in os.environ

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    fresh_flags.setattr(importlib.metadata, "version", missing)
    assert runtime._add_xla_cpu_flags() is False and "XLA_FLAGS" not in os.environ
    fresh_flags.setattr(importlib.metadata, "version", lambda name: "0.10.0")
    assert runtime._add_xla_cpu_flags() is True and os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="


def test_backend_started_reads_jaxs_backend_table(monkeypatch):
    """Imported jax whose backend has not started yet (import jax; import kdef_jax.steps) still gets the flag."""
    from jax._src import xla_bridge

    monkeypatch.setattr(xla_bridge, "_backends", {})
    assert runtime._backend_started() is False
    monkeypatch.setattr(xla_bridge, "_backends", {"cpu": object()})
    assert runtime._backend_started() is True


def test_tuning_applies_once(monkeypatch):
    calls = []
    monkeypatch.delenv("KDEF_JAX_TUNE_CPU", raising=False)
    monkeypatch.setattr(runtime, "applied", {})
    monkeypatch.setattr(runtime, "_tune_glibc_malloc", lambda: calls.append("malloc") or True)
    # a second _add_xla_cpu_flags finds its own flag in XLA_FLAGS and answers False
    monkeypatch.setattr(runtime, "_add_xla_cpu_flags", lambda: calls.append("xla") or len(calls) == 2)
    first = dict(runtime.tune_cpu_runtime())
    assert first == {"malloc": True, "xla_flags": True}
    assert runtime.tune_cpu_runtime() == first and calls == ["malloc", "xla"]


def test_importing_the_loss_or_the_models_leaves_the_process_alone():
    """`from kdef_jax.losses import kdef_loss` in someone else's JAX code: no XLA flag, no malloc change."""
    p = _child("import os, kdef_jax.losses, kdef_jax.models.ensemble\nfrom kdef_jax import runtime\n"
               "print(runtime.applied, os.environ.get('XLA_FLAGS'))", KDEF_JAX_TUNE_CPU="1")
    assert p.returncode == 0 and p.stdout.strip() == "{} None", (p.stdout, p.stderr[-2000:])
