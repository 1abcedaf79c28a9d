"""Deployment: the ensemble for accuracy, or any single student for latency.

* ``extract_student(model, variables, k)`` → a one-student model and its variables (the shared
  embedding plus student k's slice of its group): the cheapest deployable network.
* ``fold_batchnorm(model, variables)`` → the same predictions with every eval-mode BatchNorm that
  follows a Dense folded into it (W' = W·diag(a), b' = b·a + β − μ·a, a = γ/√(σ²+ε)).
* ``make_predictor(model, variables, what)`` → a jitted ``ids -> probabilities`` for the ensemble
  (σ of the mean logit; ``fusion=`` for the sum / mean_prob baselines, the head's σ for a model with
  the concat head) or for one student
  (``fold_bn=True``: of its folded network).
* ``export_predictor(...)`` → ``jax.export`` serialization (StableHLO bytes) with a symbolic batch
  dimension, loadable without this library's Python code via ``jax.export.deserialize``.
* ``load_run(workdir)`` → the trained model, its best-epoch variables and feature map.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from kdef_jax.losses import FUSIONS, ensemble_logit, fusion_of
from kdef_jax.models.embedding import int32_ids
from kdef_jax.models.ensemble import KDEFModel, StudentGroup
from kdef_jax.models.layers import BatchNorm
from kdef_jax.models.registry import BUILT_IN


def _locate(model: KDEFModel, k: int):
    if not 0 <= k < model.num_students:
        raise ValueError(f"student index {k} out of range: the model has {model.num_students} students")
    start = 0
    for i, g in enumerate(model.groups):
        if k < start + g.count:
            return i, g, k - start
        start += g.count
    raise AssertionError("unreachable")


def check_variables(model: KDEFModel, variables: dict) -> None:
    """A ValueError unless ``variables`` hold ``model``'s parameters: each student group's leaves carry
    its count of students on their first axis, and the embedding table is [rows, embedding_dim] (variables
    of another model would otherwise fail inside the scan or gather, or for one student, slice silently)."""
    hint = "variables of another model? build the model from the run's config.json, or use load_run"
    params = variables.get("params") if isinstance(variables, dict) else None
    if not isinstance(params, dict):
        raise ValueError(f"variables must be a dict with 'params' (and 'batch_stats'), got {type(variables).__name__}")
    table = params.get("embedding", {}).get("table")
    rows = model.embedding_rows or sum(model.vocab_sizes)
    if table is None or tuple(table.shape) != (rows, model.embedding_dim):
        raise ValueError(f"variables: the embedding table is {None if table is None else tuple(table.shape)}, the "
                         f"model's is {(rows, model.embedding_dim)} ({hint})")
    for i, g in enumerate(model.groups):
        name = f"group{i}_{g.kind}"
        if name not in params:
            raise ValueError(f"variables have no {name} (the model's students: "
                             f"{', '.join(f'group{j}_{h.kind}' for j, h in enumerate(model.groups))}; {hint})")
        for col, tree in variables.items():
            counts = {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree.leaves(tree.get(name, {}))}
            if counts - {g.count}:
                raise ValueError(f"variables: {col}/{name} holds {sorted(counts - {g.count}, key=str)[0]} students, "
                                 f"the model's group {g.count} ({hint})")


def extract_student(model: KDEFModel, variables: dict, k: int):
    """(single-student KDEFModel, its variables) for student ``k`` (0-based, in [K] order)."""
    k = student_index(k, model.num_students)
    if k is None:
        raise ValueError("extract_student k='ensemble': give a student index 0..K-1")
    gi, g, j = _locate(model, k)
    check_variables(model, variables)
    name = f"group{gi}_{g.kind}"
    single = model.clone(groups=(StudentGroup(g.kind, 1, g.kwargs),), concat_head=False)
    out = {}
    for col, tree in variables.items():
        rest = {key: v for key, v in tree.items() if not key.startswith("group") and key != "concat_head"}
        if name in tree:
            out[col] = {**rest, "group0_" + g.kind: jax.tree.map(lambda x: x[j : j + 1], tree[name])}
        else:
            out[col] = rest
    return single, out


def _dense_bn_pairs(tree: dict, path=()):
    """[(path, n)] of the scopes where an MLP tower (``mlp_hidden``) put Dense_j then BatchNorm_j,
    j < n: the scope holds BatchNorm_0..BatchNorm_{n-1}, each after a Dense_j of its width."""
    found = []
    n = sum(k.startswith("BatchNorm_") for k in tree)
    if n and all(f"BatchNorm_{j}" in tree and f"Dense_{j}" in tree
                 and tree[f"Dense_{j}"]["kernel"].shape[-1] == tree[f"BatchNorm_{j}"]["scale"].shape[-1]
                 for j in range(n)):
        found.append((path, n))
    for k, v in tree.items():
        if isinstance(v, dict) and not k.startswith(("Dense_", "BatchNorm_")):
            found += _dense_bn_pairs(v, path + (k,))
    return found


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _replace(tree, path, value):
    """``tree`` with the sub-dict at ``path`` replaced by ``value`` (an empty one: removed, and so are
    the parents it leaves empty)."""
    if not path:
        return value
    sub = _replace(tree[path[0]], path[1:], value)
    out = {k: v for k, v in tree.items() if k != path[0]}
    if sub:
        out[path[0]] = sub
    return out


def _fold_scope(params: dict, stats: dict, n: int) -> dict:
    """The scope's params with BatchNorm_j (eval mode: y = x·a + β − μ·a, a = γ·(σ²+ε)^(-1/2), the
    layer's own formula) folded into Dense_j: kernel·a (per output column), bias·a + β − μ·a."""
    out = {k: v for k, v in params.items() if not k.startswith("BatchNorm_")}
    for j in range(n):
        bn, st, d = params[f"BatchNorm_{j}"], stats[f"BatchNorm_{j}"], params[f"Dense_{j}"]
        a = jax.lax.rsqrt(st["var"] + BatchNorm.epsilon) * bn["scale"]
        out[f"Dense_{j}"] = {"kernel": d["kernel"] * a[..., None, :], "bias": d["bias"] * a + (bn["bias"] - st["mean"] * a)}
    return out


def fold_batchnorm(model: KDEFModel, variables: dict):
    """(model, variables) predicting as before (up to float rounding) with the BatchNorm after each
    hidden Dense of every MLP tower folded into that Dense: at inference BN is the affine map
    x·a + (β − μ·a), so Dense-then-BN is one Dense. A smaller program (no a per layer to compute) and
    4·Σu fewer variables (γ, β, μ, σ²) per student; the group is rebuilt with ``batch_norm=False``.

    Folded: MLP students and the MLP towers of IPNN, Wide&Deep, DeepFM, xDeepFM, AutoInt, AFN, DCN and
    DCNv2 (a group is folded only when its BatchNorms are exactly those its ``batch_norm`` switch
    removes, checked against the rebuilt module's variable shapes). Left as they are: FINAL (its
    BatchNorm follows a FINAL block, not a Dense), ECN's scalar BatchNorms, AFN's logarithmic layer's.
    Kinds of the user's own (``register_student``) are left as they are: where their BatchNorms sit is
    not known. For serving only: the folded model has no training-mode BatchNorm."""
    params, stats = dict(variables["params"]), dict(variables.get("batch_stats", {}))
    groups = []
    for i, g in enumerate(model.groups):
        name = f"group{i}_{g.kind}"
        kwargs = dict(g.kwargs)
        known = g.kind in BUILT_IN
        pairs = _dense_bn_pairs(params[name]) if known and kwargs.get("batch_norm") and name in stats else []
        if not pairs:
            groups.append(g)
            continue
        gp, gs = params[name], stats[name]
        for path, n in pairs:
            gp = _replace(gp, path, _fold_scope(_get(gp, path), _get(gs, path), n))
            gs = _replace(gs, path, {k: v for k, v in _get(gs, path).items() if not k.startswith("BatchNorm_")})
        folded = StudentGroup(g.kind, g.count, tuple(sorted({**kwargs, "batch_norm": False}.items())))
        if _group_shapes(model, folded) != _shapes({"params": gp, "batch_stats": gs or {}}):
            groups.append(g)  # its switch removes other BatchNorms too (or keeps some): not an MLP tower
            continue
        groups.append(folded)
        params[name] = gp
        if gs:
            stats[name] = gs
        else:
            del stats[name]
    out = {**variables, "params": params}
    if "batch_stats" in variables:
        out["batch_stats"] = stats
    return model.clone(groups=tuple(groups)), out


def _shapes(tree):
    return jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), tree)


def _group_shapes(model: KDEFModel, group: StudentGroup):
    """Variable shapes of ``group`` built alone in ``model``'s embedding: its params and batch_stats."""
    probe = model.clone(groups=(group,), concat_head=False)
    ids = jnp.ones((2, sum(model.max_lens) if model.max_lens is not None else len(model.vocab_sizes)), jnp.int32)
    v = jax.eval_shape(lambda: probe.init(jax.random.PRNGKey(0), ids, False))
    sub = {col: v.get(col, {}).get(f"group0_{group.kind}", {}) for col in ("params", "batch_stats")}
    return _shapes(sub)


class Predictor(functools.partial):
    """A jitted ``apply(variables, ids)`` bound to its variables (``.func``, ``.args``: to lower it). ``ids``:
    integers [batch, columns] (else a ValueError). Ids wider than int32, and uint32 ones, are clipped into
    int32 first: JAX narrows them otherwise (x64 off), so 2**32 + 1 would read id 1 and uint32 2**31 a
    negative row, where any id outside a field's range must read its OOV row. An empty batch gives empty
    probabilities."""

    def __call__(self, ids):
        if isinstance(ids, (list, tuple)):
            ids = np.asarray(ids)
        kind = getattr(getattr(ids, "dtype", None), "kind", None)
        if kind not in ("i", "u") or np.ndim(ids) != 2:
            raise ValueError(f"ids: an integer array [batch, columns], got {getattr(ids, 'dtype', type(ids).__name__)} "
                             f"of shape {np.shape(ids)}")
        if ids.dtype != np.int32:  # on the host for numpy ids, on the device for device ones (x64)
            ids = int32_ids(ids, np if isinstance(ids, np.ndarray) else jnp)
        rows = np.shape(ids)[0]
        if isinstance(rows, int) and rows == 0:  # (a symbolic batch dimension when exported: never 0)
            return jnp.zeros((0,), jnp.float32)
        return super().__call__(ids)


def student_index(what, num_students: int) -> int | None:
    """``what`` (make_predictor's): None for "ensemble", else the student index it names (an int, or a
    string of one); anything else is a ValueError saying what is allowed."""
    if isinstance(what, str) and what == "ensemble":
        return None
    if isinstance(what, (int, np.integer)) and not isinstance(what, bool):
        k = int(what)
    elif isinstance(what, str) and what.strip().lstrip("-").isdigit():
        k = int(what)
    else:
        raise ValueError(f"what={what!r}: use 'ensemble' or a student index 0..{num_students - 1} (a run's best "
                         f"student is results.json's best_student_index)")
    return k


def make_predictor(model: KDEFModel, variables: dict, what: str | int = "ensemble", fold_bn: bool = False,
                   fusion: str | None = None) -> Predictor:
    """Jitted ``ids [B, C] int32 -> probabilities [B]`` of the ensemble or of student ``what``;
    ``fold_bn``: of its BatchNorm-folded network (``fold_batchnorm``; the same predictions up to float
    rounding, fewer ops). ``fusion``: how the students form the ensemble, σ(``ensemble_logit(z, fusion)``);
    a run's is ``results["fusion"]`` (``fusion_of(loss.variant)``: σ(mean z) but for the sum, mean_prob
    and concat baselines); None: "concat" for a model with the concat head, else "mean_logit"."""
    if fusion is not None and fusion not in FUSIONS:
        raise ValueError(f"fusion {fusion!r} is not one of {FUSIONS}")
    k = student_index(what, model.num_students)
    if k is not None:
        model, variables = extract_student(model, variables, k)  # (which checks the variables)
        fusion = "mean_logit"  # one student: σ(z_k)
    else:
        check_variables(model, variables)
        fusion = fusion or ("concat" if model.concat_head else "mean_logit")
        if (fusion == "concat") != model.concat_head:
            raise ValueError(f"fusion {fusion!r} for a model {'with' if model.concat_head else 'without'} the concat "
                             f"head: a model with the head predicts by it (fusion 'concat'), and only such a model can")
    if fold_bn:
        model, variables = fold_batchnorm(model, variables)

    @jax.jit
    def apply(variables, ids):
        logits = model.apply(variables, ids, False, None)
        return jax.nn.sigmoid(ensemble_logit(logits, fusion))

    return Predictor(apply, variables)


EXPORT_PLATFORMS = ("cpu", "cuda", "tpu")  # lowered on any host; beside cpu, cuda adds ~300 bytes, tpu ~100


def export_predictor(model: KDEFModel, variables: dict, num_columns: int, what: str | int = "ensemble",
                     fold_bn: bool = False, fusion: str | None = None, platforms=EXPORT_PLATFORMS) -> bytes:
    """Serialized ``jax.export`` of the predictor (``make_predictor``'s arguments), batch dimension symbolic,
    lowered for each of ``platforms`` (jax.export names: cpu, cuda, rocm, tpu): a file exported on a CPU
    host serves on a GPU or TPU too."""
    platforms = tuple(p.strip() for p in platforms.split(",")) if isinstance(platforms, str) else tuple(platforms)
    bad = [p for p in platforms if p not in ("cpu", "cuda", "rocm", "tpu")]
    if not platforms or bad:
        raise ValueError(f"export platforms {platforms}: name one or more of cpu, cuda, rocm, tpu")
    if not isinstance(num_columns, (int, np.integer)) or isinstance(num_columns, bool) or num_columns < 1:
        raise ValueError(f"num_columns {num_columns!r}: the number of id columns, an integer >= 1 (feature map's num_columns)")
    predict = jax.jit(make_predictor(model, variables, what, fold_bn, fusion))  # variables become constants
    (b,) = jax.export.symbolic_shape("b")
    exp = jax.export.export(predict, platforms=platforms)(jax.ShapeDtypeStruct((b, num_columns), jnp.int32))
    return exp.serialize()


def load_exported(source):
    """The callable ``ids -> probabilities`` of a serialized predictor: ``source`` is its bytes
    (:func:`export_predictor`) or the path of a ``.jaxexport`` file (``kdef_jax.export_run``). Host ids
    wider than int32 are clipped first, as :class:`Predictor` does; ids of another column count than
    the file's are a ValueError saying both. Anything that is not such a serialization (a truncated or
    foreign file, a function of another signature) is a ValueError naming the file."""
    if isinstance(source, (str, os.PathLike)):
        where, blob = os.fspath(source), Path(source).read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        where, blob = "load_exported", bytes(source)
    else:
        raise TypeError(f"load_exported: the bytes of export_predictor or a .jaxexport file's path, "
                        f"got {type(source).__name__}")
    what = "not a jax.export serialization (export_predictor's bytes, or kdef_jax.export_run's .jaxexport file)"
    try:
        exported = jax.export.deserialize(blob)
    except Exception as e:  # noqa: BLE001 - flatbuffers raises struct.error, AttributeError, ...: report one way
        raise ValueError(f"{where}: {what}; reading it failed ({type(e).__name__}: {e})") from None
    ins, outs = exported.in_avals, exported.out_avals
    if (len(ins) != 1 or len(ins[0].shape) != 2 or not jnp.issubdtype(ins[0].dtype, jnp.integer)
            or not isinstance(ins[0].shape[1], int) or len(outs) != 1 or len(outs[0].shape) != 1):
        raise ValueError(f"{where}: a function of {ins} -> {outs}, not a predictor of ids [batch, columns] -> "
                         f"probabilities [batch] (export_predictor's)")
    columns = ins[0].shape[1]

    def call(_, ids):
        if ids.shape[1] != columns:
            raise ValueError(f"ids: {columns} columns (the file's input, one per field), got shape {tuple(ids.shape)}")
        return exported.call(ids)  # (int32: Predictor's __call__ made them so)

    return Predictor(call, None)


def load_run(workdir, checkpoint: str = "best", *, warn=None):
    """(model, variables, feature_map, results) of a ``train_and_evaluate`` workdir: its best epoch, or
    with ``checkpoint="latest"`` its last saved one (e.g. a run still going or cut short). ``warn(text)``
    (default: a line on stderr) gets a warning for student code changed since the run recorded it."""
    if checkpoint not in ("best", "latest"):
        raise ValueError(f"load_run checkpoint={checkpoint!r}: use 'best' or 'latest'")
    from kdef_jax.checkpoint import Checkpoints
    from kdef_jax.run_files import read_json, read_run_config, student_code_changes
    from kdef_jax.data.feature_map import FeatureMap
    from kdef_jax.models.ensemble import build_model
    from kdef_jax.steps import initial_state

    workdir = Path(workdir)
    config = read_run_config(workdir)
    fmap = FeatureMap.load(workdir / "feature_map.json")
    model = build_model(config.model, fmap, concat_head=fusion_of(config.loss.variant) == "concat")
    for warning in student_code_changes(workdir, config.model.student_modules):  # the modules are imported now
        (warn or (lambda text: print(text, file=sys.stderr)))(warning)
    # the restore's template as shapes and dtypes only (a real initial state would sit in memory beside the
    # restored one), placed on this host's first device: without a sharding orbax would restore onto the
    # saving run's device topology (a run of many devices or processes); the variables alone are read
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shapes = jax.eval_shape(lambda: initial_state(model, config, jax.random.PRNGKey(0), fmap.num_columns)[0])
    template = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=here),
                            {"params": shapes.params, "batch_stats": shapes.batch_stats})
    ckpt = Checkpoints(workdir, create=False)  # reading a run creates nothing in it
    try:
        steps = ckpt.steps()
        restored = ckpt.restore_variables(checkpoint, template)
    finally:
        ckpt.close()
    if restored is None:
        other = "latest" if checkpoint == "best" else "best"
        hint = (f"; checkpoints/{other} holds epoch {steps[other]} (checkpoint={other!r}, score_run --checkpoint "
                f"{other})" if steps[other] is not None else "")
        raise FileNotFoundError(f"no {checkpoint} checkpoint under {ckpt.root / checkpoint}{hint}")
    variables = restored[0]
    results_path = workdir / "results.json"
    results = check_results(read_json(results_path), results_path, config, model.num_students) if results_path.exists() else {}
    return model, variables, fmap, results


def check_results(results, path, config, num_students: int) -> dict:
    """``results`` (read from ``path``) checked to be the results of the run of ``config`` (dataset,
    variant, K) with a best student in [0, K): a damaged or another run's file is a ValueError naming it."""
    if not isinstance(results, dict):
        raise ValueError(f"{path}: not a run's results (a JSON object); the file is damaged")
    ours = {"dataset": config.data.name, "variant": config.loss.variant, "num_students": num_students}
    ours = {k: v for k, v in ours.items() if k in results}  # what the run's version of results.json records
    theirs = {k: results[k] for k in ours}
    if theirs != ours:
        raise ValueError(f"{path}: the results of another run ({theirs}; this run's config.json and checkpoint: "
                         f"{ours}); the file was replaced or damaged")
    rows = results.get("rows")
    if not (isinstance(rows, list) and len(rows) == 1 + num_students and all(isinstance(r, dict) for r in rows)):
        raise ValueError(f"{path}: no results table of the ensemble and its {num_students} students ('rows'); "
                         f"the file is damaged")
    best = results.get("best_student_index")
    if best is not None and (not isinstance(best, int) or isinstance(best, bool) or not 0 <= best < num_students):
        raise ValueError(f"{path}: best_student_index {best!r} is not a student 0..{num_students - 1}; the file is damaged")
    return results
