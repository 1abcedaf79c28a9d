"""Orbax checkpoints: ``latest`` (every epoch, for resume) and ``best`` (teacher validation AUC).

Each checkpoint holds the train state and a JSON ``meta`` (epoch, learning rate, plateau counters,
history) so a resumed run continues exactly where it stopped. ``meta["arrays"]`` records, per
array of the state, its shape, dtype and two sums of its 32-bit words w_i (i = 1..n, arithmetic
mod 2³²): Σ w_i and Σ i·w_i. A restore first compares the shapes with the model's (a changed config
is an error listing the arrays, before any array is read), then recomputes the sums, so bytes
damaged inside an array file (which orbax itself does not notice) are an error naming the array,
not a model that silently predicts NaN. Readers that only predict (``load_run``, a run's final evaluation)
read the parameters and BatchNorm statistics alone (``restore_variables``), not Adam's moments.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    pass


def _state_tree(state) -> dict:
    return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats, "opt_state": state.opt_state}


def _words(x) -> jax.Array:
    """The array's bits as a flat uint32 vector (1- and 2-byte items widened, 8-byte ones split in two)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32).reshape(-1)
    size = x.dtype.itemsize
    if size < 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint8 if size == 1 else jnp.uint16).astype(jnp.uint32).reshape(-1)
    return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)


@jax.jit
def _sums(x):
    w = _words(jnp.asarray(x))
    i = jnp.arange(1, w.size + 1, dtype=jnp.uint32)
    return jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * i, dtype=jnp.uint32)])


def _leaf_sums(tree):
    """[Σ w, Σ i·w] of every array, one compiled call per array: the temporaries of one array at a time
    (one call over the whole tree held its word and index vectors for every array at once: 16× the
    parameters' bytes at the peak of loading a run). Each call ends before the next starts: over a
    mesh every call is a collective, and XLA:CPU deadlocks when more independent collective calls are
    in flight than a device may queue (32; kdef_jax/train.py ``IN_FLIGHT_STEPS``)."""
    return jax.tree.map(lambda x: jax.block_until_ready(_sums(x)), tree)


def state_checksums(tree) -> dict:
    """{array path: [Σ w_i, Σ i·w_i] mod 2³²} of a state tree (exact: integer sums in any order agree)."""
    out = jax.tree_util.tree_flatten_with_path(_leaf_sums(tree))[0]
    # every process holds the replicated sums: read its own copy (no cross-host gather)
    return {jax.tree_util.keystr(p): [int(v) for v in np.asarray(s.addressable_data(0))] for p, s in out}


def _shapes(tree) -> dict:
    """{array path: [shape, dtype]} (no array is read)."""
    return {jax.tree_util.keystr(p): [list(np.shape(x)), str(jnp.result_type(x))]
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def array_records(tree) -> dict:
    """{array path: {"shape", "dtype", "sums"}}: what ``meta["arrays"]`` holds."""
    sums = state_checksums(tree)
    return {k: {"shape": shape, "dtype": dtype, "sums": sums[k]} for k, (shape, dtype) in _shapes(tree).items()}


def _listed(items: list) -> str:
    return "; ".join(items[:3]) + (f"; and {len(items) - 3} more" if len(items) > 3 else "")


def _check_shapes(template, records: dict, where: Path) -> None:
    want = _shapes(template)
    diff = [f"{k}: checkpoint {tuple(r['shape'])} {r['dtype']}, this config "
            + (f"{tuple(want[k][0])} {want[k][1]}" if k in want else "has no such array")
            for k, r in records.items() if k not in want or want[k] != [r["shape"], r["dtype"]]]
    diff += [f"{k}: not in the checkpoint" for k in want if k not in records]
    if diff:
        raise CheckpointError(
            f"the checkpoint {where} was written by a different model/config ({len(diff)} arrays differ: "
            f"{_listed(diff)}). Use the config it was written with (the run's config.json; its feature_map.json sets the "
            f"embedding table's rows) or start a new workdir."
        )


def _check_records(records, which: str, where: Path) -> None:
    """``meta["arrays"]`` as :func:`array_records` writes it, else a CheckpointError (a damaged meta file)."""
    def well_formed(r) -> bool:
        return (isinstance(r, dict) and isinstance(r.get("shape"), list) and all(isinstance(n, int) for n in r["shape"])
                and isinstance(r.get("dtype"), str) and isinstance(r.get("sums"), list) and len(r["sums"]) == 2)

    bad = [str(k) for k, r in records.items() if not well_formed(r)] if isinstance(records, dict) else ["(all)"]
    if bad:
        raise CheckpointError(f"cannot read the {which} checkpoint {where}: the array records in its meta are damaged "
                              f"({len(bad)} malformed: {_listed(bad)}). Move it aside or start a new workdir.")


def _verify(tree, records: dict, where: Path) -> None:
    got = state_checksums(tree)
    bad = [k for k, r in records.items() if got.get(k) != r["sums"]]
    if bad:
        raise CheckpointError(
            f"the checkpoint {where} is corrupt: {len(bad)} of its {len(records)} arrays ({_listed(bad)}) differ "
            f"from the checksums written with them (its files were damaged after saving). Move it aside "
            f"or start a new workdir."
        )


def _closed_loop(e) -> bool:
    return isinstance(e, RuntimeError) and str(e) == "Event loop is closed"


@contextlib.contextmanager
def _closed_loop_errors_muted():
    """A failed restore or save leaves tensorstore reads or writes in flight; as they finish, their
    callbacks find orbax's event loop closed and print "RuntimeError: Event loop is closed" tracebacks
    (through sys.unraisablehook or sys.excepthook) around the real error. Within this block exactly those
    are dropped; every other exception still reaches the hooks."""
    unraisable, excepthook = sys.unraisablehook, sys.excepthook
    sys.unraisablehook = lambda u: None if _closed_loop(u.exc_value) else unraisable(u)
    sys.excepthook = lambda t, v, tb: None if _closed_loop(v) else excepthook(t, v, tb)
    try:
        yield
    finally:
        sys.unraisablehook, sys.excepthook = unraisable, excepthook


def _orbax_noise(record) -> bool:
    """orbax's log of a failed save thread, and asyncio's of a failed read or write task nobody awaited
    (each error is raised to the caller too)."""
    msg = str(record.msg)
    return "_SignalingThread.run() raised an exception" in msg or "exception was never retrieved" in msg


def _orbax_quietly(call):
    """``call()``: an orbax read or write. On a failure it raises its error once, without the noise
    around it: the closed event loop tracebacks (``_closed_loop_errors_muted``), orbax's logged copy of
    a save thread's error with its traceback (~450 lines on a full disk) and asyncio's of the failed
    tasks nobody awaited. The error keeps its traceback as text (a note) but not its frames, which hold
    those in-flight tasks: they are freed, and given time to finish, while all that is muted (a context
    manager could not: the ``with`` statement holds the traceback until its exit returns)."""
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]

    def keep(record) -> bool:
        return not _orbax_noise(record)

    for logger in loggers:
        logger.addFilter(keep)
    try:
        with _closed_loop_errors_muted():
            failure = None
            try:
                return call()
            except Exception as e:  # noqa: BLE001 - re-raised below
                e.add_note("".join(traceback.format_exception(e)).rstrip())
                chained, seen = e, set()
                while chained is not None and id(chained) not in seen:
                    seen.add(id(chained))
                    chained.__traceback__ = None
                    chained = chained.__cause__ or chained.__context__
                failure = e
            gc.collect()  # the frames, and the failed reads or writes they held, go here
            time.sleep(0.5)  # local reads and writes finish within milliseconds
            raise failure
    finally:
        for logger in loggers:
            logger.removeFilter(keep)


class Checkpoints:
    """``create=False`` (readers: export, score) opens a workdir without creating its folders."""

    def __init__(self, workdir: str | Path, *, create: bool = True):
        root = Path(workdir).resolve() / "checkpoints"
        self.root = root
        sync = dict(enable_async_checkpointing=False, create=create)
        self.latest = self._manager(root / "latest", ocp.CheckpointManagerOptions(max_to_keep=1, **sync), create)
        # best keeps its NEWEST save, not orbax's best_fn ranking: the plateau rule decides what is best
        # (a resumed run with a changed learning rate may well save a lower AUC than a crashed one did)
        self.best = self._manager(root / "best", ocp.CheckpointManagerOptions(max_to_keep=1, **sync), create)

    @staticmethod
    def _manager(path: Path, options, create: bool):
        return ocp.CheckpointManager(path, options=options) if create or path.is_dir() else None

    @staticmethod
    def _step(mngr):
        return None if mngr is None else mngr.latest_step()

    def steps(self) -> dict:
        """{"latest": epoch or None, "best": epoch or None}: what the workdir holds."""
        return {"latest": self._step(self.latest), "best": self._step(self.best)}

    def save(self, epoch: int, state, meta: dict, *, best_auc: float | None = None) -> None:
        tree = _state_tree(state)
        meta = {**meta, "arrays": array_records(tree)}

        def args():
            return ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))

        # best first, both with the same state and meta: a crash between the two saves leaves best one
        # epoch ahead of latest, and resume continues from it (``restore_newest``); the reverse order
        # would lose that best
        if best_auc is not None:  # a failure (a full disk) is its one error, not ~450 lines of orbax's
            _orbax_quietly(lambda: self._replace(self.best, epoch).save(epoch, args=args(), metrics={"val_auc": float(best_auc)},
                                                                        force=True))
        _orbax_quietly(lambda: self._replace(self.latest, epoch).save(epoch, args=args(), force=True))

    @staticmethod
    def _replace(mngr, epoch: int):
        if epoch in mngr.all_steps():
            mngr.delete(epoch)
        return mngr

    def _restore(self, mngr, which: str, template, attempts: int = 3):
        """(state, meta, epoch) of ``which``'s newest step, or None. A reader (score_run, export_run) may
        read a run still training, whose next save deletes the step being read: when the step it failed
        on is gone, the newer one is read instead (a step that is still there and fails is damaged)."""
        for _ in range(attempts):
            step = self._step(mngr)
            if step is None:
                return None
            try:
                return self._restore_step(mngr, which, step, template)
            except CheckpointError:
                mngr.reload()  # the steps on disk now, not those listed when the manager opened
                if self._step(mngr) == step and (self.root / which / str(step)).is_dir():
                    raise
        raise CheckpointError(f"the {which} checkpoint in {self.root / which} was replaced {attempts} times while "
                              f"being read: a run is still training there and saving faster than it is read; run "
                              f"this again (or when the run has ended)")

    def _restore_step(self, mngr, which: str, step: int, template):
        """``template`` a TrainState (the whole state) or a dict of some of its parts, e.g. {"params",
        "batch_stats"}: only those arrays are read, shape-checked and verified."""
        where = self.root / which / str(step)
        partial = isinstance(template, dict)
        tree = template if partial else _state_tree(template)
        try:  # the JSON meta alone first: its array shapes tell a changed config before any array is read
            meta = dict(mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
        except Exception as e:  # noqa: BLE001 - any orbax failure means unusable
            raise CheckpointError(f"cannot read the {which} checkpoint {where}: it is corrupt "
                                  f"({type(e).__name__}: {str(e)[:300]}). Move it aside or start a new workdir.") from None
        records = meta.pop("arrays", None)
        if records is not None:  # checkpoints written before these records existed restore unchecked
            _check_records(records, which, where)
            if partial:
                records = {k: r for k, r in records.items() if any(k.startswith(f"['{part}']") for part in tree)}
            _check_shapes(tree, records, where)
        failure = None
        def read():
            if partial:  # its own reader: the manager's "state" handler is the whole-tree one a save registered
                with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
                    return {"state": reader.restore(where / "state", args=ocp.args.PyTreeRestore(
                        tree, restore_args=ocp.checkpoint_utils.construct_restore_args(tree), partial_restore=True))}
            return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(tree)))

        try:
            out = _orbax_quietly(read)
        except Exception as e:  # noqa: BLE001 - any orbax/tensorstore failure means unusable
            failure = f"{type(e).__name__}: {str(e)[:300]}"
        if failure is not None:
            raise CheckpointError(
                f"cannot restore the {which} checkpoint {where}: it is corrupt or was written by a different "
                f"model/config ({failure}). Move it aside or start a new workdir."
            )
        t = out["state"]
        if records is not None:
            _verify(t, records, where)
        if partial:
            return dict(t), meta, step
        state = template.replace(step=t["step"], params=t["params"], batch_stats=t["batch_stats"], opt_state=t["opt_state"])
        return state, meta, step

    def restore_latest(self, template):
        return self._restore(self.latest, "latest", template)

    def restore_newest(self, template):
        """(state, meta, epoch, "latest" or "best") from whichever holds the later epoch (latest on a tie),
        or None: what resume continues from. Both hold the full state and meta of their epoch."""
        steps = self.steps()
        which = "best" if (steps["best"] or 0) > (steps["latest"] or 0) else "latest"
        out = self._restore(getattr(self, which), which, template)
        return None if out is None else (*out, which)

    def restore_best(self, template):
        return self._restore(self.best, "best", template)

    def restore_variables(self, which: str, template: dict):
        """({"params", "batch_stats"}, meta, epoch) of ``which`` ("best" or "latest"), or None: what a
        prediction needs, without reading the optimizer state (Adam's moments: twice the parameters' bytes).
        ``template``: those two trees, as arrays or ShapeDtypeStructs (their shardings place the result)."""
        return self._restore(getattr(self, which), which, {k: template[k] for k in ("params", "batch_stats")})

    def close(self):
        for m in (self.latest, self.best):
            if m is not None:
                m.close()
