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


def multi_process() -> bool:
    """Whether this process is one of several of a ``jax.distributed`` run."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def stop_if_multi_process(error: BaseException, status: int) -> None:
    """After ``error`` was printed: in a multi-process run, end this process now (``os._exit(status)``),
    else return. A process that raised mid-epoch would otherwise wait at jax.distributed's shutdown
    barrier while the others wait in a collective for it: every process hung 5 minutes, then JAX
    aborted them with C++ stack dumps. Exiting closes its collective connections instead, so the
    others' next collective fails at once ('Gloo ... Connection reset by peer') and they stop too,
    each saying why (measured: a failure in the third batch of one of two processes ended both in
    ~20 s). Every run file is written atomically before this point."""
    if not multi_process():
        return
    from kdef_jax.run_files import exit_now

    peer = "Connection reset by peer" in str(error) or "Connection closed by peer" in str(error)
    exit_now(f"process {jax.process_index()} of {jax.process_count()} stops"
             + (" (another process failed first: its output names the error)" if peer else
                "; the other processes stop at their next collective"), status)


def check_same_everywhere(parts: dict) -> None:
    """In a multi-process run, the same ValueError on every process unless all of them pass equal ``parts``
    ({name: JSON-able value}, e.g. the config and a fingerprint of the data); it names each part that
    differs and the processes whose part is not process 0's. Processes with another config or other data
    compile other programs or take other numbers of batches: one of them would wait in a collective the
    others never enter (a different test split hung the end of a run until jax's 300 s shutdown barrier).
    A collective: every process must call it, at the same point."""
    if not multi_process():
        return
    import hashlib
    import json

    import numpy as np
    from jax.experimental import multihost_utils

    digest = [int.from_bytes(hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).digest()[:4], "little")
              & 0x7FFFFFFF for v in parts.values()]  # 31 bits: an int32 under JAX's default (no x64)
    every = np.asarray(multihost_utils.process_allgather(np.asarray(digest, np.int32))).reshape(jax.process_count(), -1)
    differ = {name: [p for p in range(len(every)) if every[p, j] != every[0, j]] for j, name in enumerate(parts)}
    differ = {name: procs for name, procs in differ.items() if procs}
    if differ:
        raise ValueError("the processes of this run do not all have the same " + "; ".join(
            f"{name} (process{'es' if len(procs) > 1 else ''} {', '.join(map(str, procs))} "
            f"{'differ' if len(procs) > 1 else 'differs'} from process 0)"
            for name, procs in differ.items()) + ": every process needs the same config and the same data files")


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
