"""Orbax checkpoints: ``latest`` (every epoch, for resume) and ``best`` (teacher validation AUC).

Each checkpoint holds the train state and a JSON ``meta`` (epoch, learning rate, plateau counters,
history) so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    pass


def _state_tree(state) -> dict:
    return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats, "opt_state": state.opt_state}


class Checkpoints:
    def __init__(self, workdir: str | Path):
        root = Path(workdir).resolve() / "checkpoints"
        self.root = root
        sync = dict(enable_async_checkpointing=False, create=True)
        self.latest = ocp.CheckpointManager(root / "latest", options=ocp.CheckpointManagerOptions(max_to_keep=1, **sync))
        self.best = ocp.CheckpointManager(
            root / "best",
            options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m["val_auc"], best_mode="max", **sync),
        )

    def exists(self) -> bool:
        return self.latest.latest_step() is not None or self.best.latest_step() is not None

    def save(self, epoch: int, state, meta: dict, *, best_auc: float | None = None) -> None:
        args = ocp.args.Composite(state=ocp.args.StandardSave(_state_tree(state)), meta=ocp.args.JsonSave(meta))
        self.latest.save(epoch, args=args, force=True)
        if best_auc is not None:
            args = ocp.args.Composite(state=ocp.args.StandardSave(_state_tree(state)), meta=ocp.args.JsonSave(meta))
            self.best.save(epoch, args=args, metrics={"val_auc": float(best_auc)}, force=True)

    def _restore(self, mngr, which: str, template):
        step = mngr.latest_step() if which == "latest" else (mngr.best_step() or mngr.latest_step())
        if step is None:
            return None
        try:
            out = mngr.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(_state_tree(template)), meta=ocp.args.JsonRestore()),
            )
        except Exception as e:  # noqa: BLE001 - any orbax/tensorstore failure means unusable
            raise CheckpointError(
                f"cannot restore the {which} checkpoint {self.root / which / str(step)}: it is corrupt or was "
                f"written by a different model/config ({type(e).__name__}: {str(e)[:300]}). Move it aside "
                f"or start a new workdir."
            ) from e
        t = out["state"]
        state = template.replace(step=t["step"], params=t["params"], batch_stats=t["batch_stats"], opt_state=t["opt_state"])
        return state, dict(out["meta"]), step

    def restore_latest(self, template):
        return self._restore(self.latest, "latest", template)

    def restore_best(self, template):
        return self._restore(self.best, "best", template)

    def close(self):
        self.latest.close()
        self.best.close()
