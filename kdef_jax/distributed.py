"""Many hosts: ``jax.distributed`` start-up and the few things a multi-process run does differently.

One process per host (or per GPU), all running the same program on the same config. After
``initialize``, ``jax.devices()`` lists every process's devices and the (data, student) mesh of
kdef_jax/sharding.py spans them all, so the train step is the one-device math on the global batch.

    config.distributed.coordinator = ""            one process (default)
                                   = "auto"        jax's cluster detection (SLURM, Open MPI, TPU pods, ...)
                                   = "host:port"   explicit: also num_processes (≥ 1; 1 runs alone) and process_id

Every process reads every global batch from its own copy of the preprocessed cache (the data must
be on every host, or on a shared filesystem) and places only its devices' rows; process 0 builds
that cache first (``main_first``). Checkpoints are written by all processes together (orbax) into
a workdir that every process must see (a shared filesystem); logs and result files come from
process 0 only.
"""

from __future__ import annotations

import jax


def initialize(cfg) -> bool:
    """Start ``jax.distributed`` as ``cfg`` (config.distributed) says; returns whether it runs multi-process.

    Must run before any JAX computation in this process (jax's own rule). A no-op for ``coordinator=""``
    or when the caller (or an earlier call) already initialised it.
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if not cfg.coordinator:
        return False
    # CPU devices talk to other processes through gloo (jax's default CPU collectives do not cross
    # processes); GPU/TPU backends ignore the setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kw = {} if cfg.coordinator == "auto" else dict(
        coordinator_address=cfg.coordinator, num_processes=cfg.num_processes, process_id=cfg.process_id)
    try:
        jax.distributed.initialize(**kw)
    except (RuntimeError, ValueError) as e:
        hint = ("no cluster (SLURM, Open MPI, TPU pod, ...) was detected; give host:port, num_processes and "
                "process_id instead" if cfg.coordinator == "auto" else "it must run before any JAX computation "
                "in the process, and every process must reach the coordinator")
        raise ValueError(f"config distributed.coordinator={cfg.coordinator!r}: jax.distributed.initialize "
                         f"failed ({e}); {hint}") from e
    return jax.process_count() > 1


def is_main() -> bool:
    """Whether this process writes logs and files (process 0; always true in a one-process run)."""
    return jax.process_index() == 0


def _process0_says(ok: bool) -> bool:
    """Process 0's ``ok``, on every process (a collective: every process must call it)."""
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


def main_first(fn, name: str):
    """``fn()`` on process 0, then on the others once it finished (e.g. building a shared data cache).
    If it fails on process 0, every process stops: process 0 with the error, the others saying so
    (not waiting at a barrier process 0 never reaches)."""
    if jax.process_count() == 1:
        return fn()
    if is_main():
        try:
            out = fn()
        except BaseException:
            _process0_says(False)
            raise
        _process0_says(True)
        return out
    if not _process0_says(True):
        raise RuntimeError(f"{name}: process 0 failed (its output names the error); process "
                           f"{jax.process_index()} stops too")
    return fn()
