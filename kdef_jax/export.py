"""Deployment: the ensemble for accuracy, or any single student for latency.

* ``extract_student(model, variables, k)`` → a one-student model and its variables (the shared
  embedding plus student k's slice of its group): the cheapest deployable network.
* ``make_predictor(model, variables, what)`` → a jitted ``ids -> probabilities`` for the ensemble
  (σ of the mean logit) or for one student.
* ``export_predictor(...)`` → ``jax.export`` serialization (StableHLO bytes) with a symbolic batch
  dimension, loadable without this library's Python code via ``jax.export.deserialize``.
* ``load_run(workdir)`` → the trained model, its best-epoch variables and feature map.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kdef_jax.models.ensemble import KDEFModel, StudentGroup


def _locate(model: KDEFModel, k: int):
    if not 0 <= k < model.num_students:
        raise ValueError(f"student index {k} out of range: the model has {model.num_students} students")
    start = 0
    for i, g in enumerate(model.groups):
        if k < start + g.count:
            return i, g, k - start
        start += g.count
    raise AssertionError("unreachable")


def extract_student(model: KDEFModel, variables: dict, k: int):
    """(single-student KDEFModel, its variables) for student ``k`` (0-based, in [K] order)."""
    gi, g, j = _locate(model, k)
    name = f"group{gi}_{g.kind}"
    single = model.clone(groups=(StudentGroup(g.kind, 1, g.kwargs),))
    out = {}
    for col, tree in variables.items():
        if name in tree:
            part = jax.tree.map(lambda x: x[j : j + 1], tree[name])
            rest = {key: v for key, v in tree.items() if not key.startswith("group")}
            out[col] = {**rest, "group0_" + g.kind: part}
        else:
            out[col] = {key: v for key, v in tree.items() if not key.startswith("group")}
    return single, out


def make_predictor(model: KDEFModel, variables: dict, what: str | int = "ensemble"):
    """Jitted ``ids [B, C] int32 -> probabilities [B]`` of the ensemble or of student ``what``."""
    if what != "ensemble":
        model, variables = extract_student(model, variables, int(what))

    @jax.jit
    def apply(variables, ids):
        logits = model.apply(variables, ids, False, None)
        return jax.nn.sigmoid(jnp.mean(logits, axis=0))

    return functools.partial(apply, variables)


def export_predictor(model: KDEFModel, variables: dict, num_columns: int, what: str | int = "ensemble") -> bytes:
    """Serialized ``jax.export`` of the predictor, batch dimension symbolic."""
    predict = jax.jit(make_predictor(model, variables, what))  # variables become constants
    (b,) = jax.export.symbolic_shape("b")
    exp = jax.export.export(predict)(jax.ShapeDtypeStruct((b, num_columns), jnp.int32))
    return exp.serialize()


def load_exported(blob: bytes):
    """The callable ``ids -> probabilities`` of a serialized predictor."""
    return jax.export.deserialize(blob).call


def load_run(workdir, checkpoint: str = "best"):
    """(model, variables, feature_map, results) of a ``train_and_evaluate`` workdir: its best epoch, or
    with ``checkpoint="latest"`` its last saved one (e.g. a run still going or cut short)."""
    if checkpoint not in ("best", "latest"):
        raise ValueError(f"load_run checkpoint={checkpoint!r}: use 'best' or 'latest'")
    import json
    from pathlib import Path

    import ml_collections

    from kdef_jax.checkpoint import Checkpoints
    from kdef_jax.data.feature_map import FeatureMap
    from kdef_jax.models.ensemble import build_model
    from kdef_jax.steps import make_training

    workdir = Path(workdir)
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    fmap = FeatureMap.load(workdir / "feature_map.json")
    model = build_model(config.model, fmap)
    template, _ = make_training(model, config, jax.random.PRNGKey(0), fmap.num_columns)
    ckpt = Checkpoints(workdir)
    try:
        restored = ckpt.restore_best(template) if checkpoint == "best" else ckpt.restore_latest(template)
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint under {workdir / 'checkpoints'}")
    state = restored[0]
    results_path = workdir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    return model, {"params": state.params, "batch_stats": state.batch_stats}, fmap, results
