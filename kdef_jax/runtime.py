"""Host-runtime settings that make XLA:CPU training 1.3-2x faster; applied when the training code
(``kdef_jax.steps``: train, the command-line tools, experiments, benchmarks) is imported.

Measured on the project's 2-core machine (benchmarks/train_throughput.py, Criteo shape):

* **glibc malloc.** XLA:CPU allocates each step's temporaries afresh (one block of all of them: 1.04 GiB
  at K=10, 3.3 GB at K=32). glibc serves large allocations with mmap and returns them with munmap, so
  each step page-faults its whole working set again (an elementwise pass over 48 MB took 20 ms instead
  of 4 ms; K=10: 268k faults = 1.1 GB per step). One arena, no mmap-served allocations (M_MMAP_MAX=0)
  and no trimming (M_TRIM_THRESHOLD=-1) keep freed blocks for reuse: ~0 faults per step, K=10 steps
  ~10% and K=32 steps ~18% faster than with the 1 GiB mmap threshold used before. The process keeps
  its peak memory instead of returning it to the OS (``malloc_trim(0)`` still returns free pages).
* **XLA flag** ``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNNPACK fusions): XLA's own
  dot (Eigen) and emitters instead. YNNPACK's reduce fusion ran BatchNorm's batch reductions ~20x
  slower than XLA's emitter (6 × 60 ms per step at K=1), and its matmuls ran the students' forward and
  input-gradient GEMMs ([10000, 624]·[624, 400]) at ~140 GFLOP/s against Eigen's ~190: a KDEF step
  is ~3% (K=1) to ~10% (K=3, 10) faster without them than with YNNPACK minus its reduce fusion (Zen 4),
  and 2.4-2.6x faster than with XLA's default YNNPACK fusions (Zen 5, K=1/3/10;
  benchmarks/results/runtime_flag_ab_cpu.json). Added to XLA_FLAGS only for jaxlib versions
  where it was measured, and only if the user has not set a YNN option; XLA_FLAGS is read when the
  backend starts, so import kdef_jax.steps (or call ``tune_cpu_runtime()``) before running any JAX computation.

Re-measured after the tuning moved from ``import kdef_jax`` to ``import kdef_jax.steps``: a K=1 step
took 3.1x as long with ``KDEF_JAX_TUNE_CPU=0`` (benchmarks/results/runtime_tune_recheck_cpu_20261207.json).

Opt out with ``KDEF_JAX_TUNE_CPU=0``. GPU/TPU runs are unaffected (CPU-only flag; malloc only
concerns host memory).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import sys

_VERIFIED_JAXLIB = ("0.10.",)  # versions where the YNN flag exists and was measured
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8

applied: dict = {}


def _tune_glibc_malloc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or no glibc
        return False
    # mallopt(3): M_MMAP_MAX 0 disables mmap-served allocations; M_TRIM_THRESHOLD -1 disables trimming.
    ok = mallopt(_M_ARENA_MAX, 1) and mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, -1)
    return bool(ok)


def _add_xla_cpu_flags() -> bool:
    flags = os.environ.get("XLA_FLAGS", "")
    if "ynn_fusion_type" in flags:
        return False
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return False
    if not version.startswith(_VERIFIED_JAXLIB):
        return False
    if "jax" in sys.modules and _backend_started():
        return False  # too late: the flag would be ignored
    os.environ["XLA_FLAGS"] = f"{flags} {_YNN_FLAG}".strip()
    return True


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", {}))
    except Exception:  # noqa: BLE001 - private API; assume not started
        return False


def tune_cpu_runtime() -> dict:
    """Apply both settings once (idempotent); returns what was applied."""
    if applied or os.environ.get("KDEF_JAX_TUNE_CPU", "1") == "0":
        return applied
    applied["malloc"] = _tune_glibc_malloc()
    applied["xla_flags"] = _add_xla_cpu_flags()
    return applied
