"""Our train step against the authors' code, number for number: the same weights, the same batches.

    python experiments/step_parity.py --ref-venv REF/venv --kdef REF/KDEF --ref-work REF/work \
        --dataset-id frappe_mod10 --k 3 --batch 4096 --steps 8 --out experiments/results/step_parity_frappe_k3.json
    python experiments/step_parity.py --model EKTF_L --ref-venv REF/venv --kdef REF/KDEF --ref-work REF/work \
        --dataset-id frappe_mod10 --batch 4096 --steps 8 --out experiments/results/step_parity_frappe_latest.json
    python experiments/step_parity.py --ref-venv REF/venv --kdef REF/KDEF --ref-work REF/work \
        --dataset-id ml100k_u1 --k 3 --batch 4096 --steps 8 --out experiments/results/step_parity_ml100k_k3.json

(``--steps 2``: the step from the same state is step 1, whose gradient norm, 17.6 on Frappe, is clipped to
10; at step 7 it is below 10. ``ml100k_u1``: MovieLens-100K prepared as in
../shared/reference/bench/reference-perf.md, whose genres sequence field, max_len 5, exercises PAD ids
and masked average pooling; Frappe has neither.)

The reference side (experiments/step_parity_torch.py, run with ``--ref-venv``'s python) builds the
authors' EKTF through the shared harness, records its initial weights and trains ``--steps`` steps on
the first batches of a prepared split (``run_reference.py prepare``; ../shared/reference/bench/README.md),
twice: in float32, as the authors run it, and in float64, the stand-in for exact arithmetic; and it
redoes the float32 run's last step in float64 from the float32 state before it (Adam's moments
included). This side copies the weights into our model (the per-field tables into the one table at
the field offsets, each student's Linear weight transposed into its [K, in, out] kernel slice, BN γ, β
and running statistics) and compares, on the same batches:

- step 0: every student's logit, the KDEF objective, R = (λ/2)·‖E‖², the objective's gradient with
  respect to the students' logits (``kdef_loss`` alone: its λ, μ and detach points), and the gradient of
  objective + R for every parameter (``jax.grad`` of our model and ``kdef_loss``);
- ``--steps`` steps of ``kdef_jax.steps.make_train_step`` (objective + R, clipping to norm 10, Adam, BN
  running statistics): the students' logits and the loss before each step, the gradient norm, and
  eval-mode logits of a held-out batch afterwards;
- the last step again from the reference's state before it: every parameter and BN statistic after it.

Each quantity is a relative difference, max |a − b| / max |b|, to the float64 run: ours and, as the
yardstick, the authors' own float32 run. Judged: the step-0 quantities, each within max(4 × the
yardstick, 1e-6); the step-0 parameter gradients pooled (‖a − b‖ / ‖b‖ over all of them) within
max(4 × the yardstick, 2e-3); the last step's parameters pooled by kind (table, Dense kernels, output
biases, BN γ and β, BN running variances) within max(4 × the yardstick, 1e-5). The gradients are
pooled because a ReLU whose input lies within float32 rounding of 0 (|x| ~ 1e-8; dozens of inputs per
step are that close) takes either branch in float32, in either framework: one tensor's gradient then
differs by a whole row's contribution (5e-3 of its largest entry, measured). Reported only: each
tensor; the steps run freely, where both sides drift from exact arithmetic alike (Adam's first steps
move every weight by ≈ lr whatever its gradient's size, rounding-level ones included); and the Dense
biases feeding a BatchNorm (true gradient 0: Adam moves them by ±lr on rounding noise, on either side)
with the BN running means that follow them. Dropout is off on both sides (the frameworks draw
different masks). Exit status 1 when a judged quantity fails.
``--ref-npz FILE`` reuses a recording (or keeps the one made there).

``--model EKTF_L`` (KDEF_Latest: students IPNN, FinalNet, ECN; our ``model.students`` "ipnn:1,final:1,ecn:1")
does the same for the authors' EKTF_L (the ``--k`` is not read; dropout off on both sides; hidden units,
batch_norm and num_cross_layers as the recording's). The torch ``networks.0`` (ProductNetwork: its MLP_Block)
goes to group0_ipnn/dnn, ``networks.1`` (FinalNet: field gate, FinalLinear layers, BNs, fc) to
group1_final/block1, ``networks.2`` (ExponentialCrossNetwork: w_i, b_i, LayerNorms, one-channel BNs, fc) to
group2_ecn; Linear weights transposed. Every torch parameter and BN statistic of the students is used
exactly once and every leaf of ours is filled, or it is an error. Only IPNN's MLP_Block has biases feeding a
BatchNorm (FinalLinear's go through [h_a, h_b ⊙ h_a], ECN's w has none), so the last step's state is pooled
by more kinds (``STATE_KINDS_LATEST``), FinalNet's and ECN's BN running means among them.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from kdef_jax.config import base_config, use_kdef_latest  # noqa: E402
from kdef_jax.losses import kdef_loss  # noqa: E402
from kdef_jax.models.ensemble import build_model  # noqa: E402
from kdef_jax.run_files import output_file_arg, write_json  # noqa: E402
from sweep_records import check_replaceable  # noqa: E402  (experiments/ is this script's folder)
from kdef_jax.steps import make_predict_step, make_training  # noqa: E402

FACTOR, FLOOR = 4.0, 1e-6  # judged: |ours − exact| ≤ max(FACTOR·|reference float32 − exact|, FLOOR), relative
# pooled rows' floors (the module docstring says why the gradients are pooled): measured 2e-4 to 5e-4 for
# both sides' step-0 gradients, under 1e-5 for one step from the same state (Frappe, batch 4096, K = 3 and 10)
POOLED_FLOOR = {"gradient": 2e-3, "state": 1e-5}
STATE_KINDS = {"embedding table": "^embedding", "Dense kernels": "kernel", "output biases": "Dense_.*bias",
               "BN γ and β": "params:.*BatchNorm", "BN running variances": "var"}  # the pre-BN biases are not pooled
# EKTF_L (IPNN, FinalNet, ECN): its biases feeding no BatchNorm directly (FinalLinear's: [h_a, h_b ⊙ h_a] is
# not shift-invariant; the gate's; the output layers'), ECN's b_i and LayerNorms, and the BN running means
# that no pre-BN bias moves (FinalNet's, ECN's) have real gradients, so they are pooled too
STATE_KINDS_LATEST = {"embedding table": "^embedding", "Dense/FinalLinear/gate/ECN kernels": "kernel",
                      "biases (not pre-BN)": r"(Dense_\d+|linear|fc)/bias", "BN γ and β": r"params:.*(BatchNorm_\d+|bn_\d+)/",
                      "ECN b and LayerNorm": r"(/b_\d+\[|ln_\d+/)", "BN running means (FinalNet, ECN)": "batch_stats:.*mean",
                      "BN running variances": "var"}
POOLED_GROUPS = ("step 0 gradient", "from the same state")  # their rows outside the pool: pre-BN biases, BN means


def record_reference(args) -> Path:
    """The reference's recording: ``--ref-npz`` if it exists, else made there (or in a temporary file)."""
    out = Path(args.ref_npz or Path(tempfile.mkdtemp(prefix="step_parity_")) / "reference.npz")
    if args.ref_npz and out.is_file():
        return out
    cmd = [str(Path(args.ref_venv) / "bin" / "python"), str(HERE / "step_parity_torch.py"), "--kdef", args.kdef,
           "--work", args.ref_work, "--dataset-id", args.dataset_id, "--model", args.model, "--k", str(args.k),
           "--batch", str(args.batch), "--steps", str(args.steps), "--out", str(out),
           "--overrides", json.dumps({"embedding_regularizer": args.embedding_l2, "hidden_units": list(args.hidden_units)})]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"step_parity: the reference side failed:\n  {' '.join(cmd)}\n{(proc.stderr or proc.stdout)[-3000:]}")
    return out


def our_config(meta: dict):
    p = meta["params"]
    c = base_config()
    if meta.get("model", "EKTF") == "EKTF_L":  # KDEF_Latest: IPNN, FINAL 1B with field gate, ECN (dropout off)
        assert all(p.get(f"net{i}_dropout", 0) == 0 for i in (1, 2, 3)), "the recording has dropout on"
        use_kdef_latest(c, dropouts=(0.0, 0.0, 0.0), num_cross_layers=int(p["num_cross_layers"]))
        c.model.ecn.batch_norm = bool(p["batch_norm"])
        c.model.final.gate_init = "xavier"  # as the harness builds it; the weights are copied anyway
    else:
        c.model.students = f"mlp:{meta['k']}"
    c.model.hidden_units = tuple(p["hidden_units"])
    c.model.dropout = 0.0
    c.model.batch_norm = bool(p["batch_norm"])
    c.model.embedding_dim = p["embedding_dim"]
    c.optim.learning_rate = p["learning_rate"]
    c.optim.embedding_l2 = p["embedding_regularizer"]
    c.train.batch_size = meta["batch"]
    return c


def feature_map(meta: dict) -> types.SimpleNamespace:
    """The recording's fields as our model reads them: vocabulary sizes and max_lens (a sequence field,
    e.g. MovieLens genres, has max_len ids per row, 0 = PAD; None: every field one id, as in recordings
    made before max_lens was recorded)."""
    lens = meta.get("max_lens")
    return types.SimpleNamespace(vocab_sizes=tuple(meta["vocab_sizes"]),
                                 max_lens=tuple(lens) if lens and max(lens) > 1 else None)


def mlp_layers(names: list, prefix: str) -> tuple[list, list]:
    """The torch module prefixes of one MLP_Block's Linear layers and BatchNorms, in module order."""
    index = indices(names, prefix)
    linear = [f"{prefix}{i}." for i in index if f"state0/{prefix}{i}.weight" in names and f"state0/{prefix}{i}.running_mean" not in names]
    bn = [f"{prefix}{i}." for i in index if f"state0/{prefix}{i}.running_mean" in names]
    return linear, bn


# torch buffers that are neither parameters nor BN statistics (constants of the architecture)
CONSTANT_BUFFERS = (".num_batches_tracked", ".inner_product_layer.triu_mask")


def indices(names: list, prefix: str) -> list:
    """The sorted integer module indices directly under ``prefix`` (a ModuleList / ParameterList)."""
    return sorted({int(n[len("state0/" + prefix):].split(".")[0]) for n in names if n.startswith("state0/" + prefix)})


def bn_pairs(ours: tuple, k: int, t: str) -> list:
    """A BatchNorm's γ, β and running statistics: torch prefix ``t`` → our module path ``ours``."""
    return [("params", ours + ("scale",), k, t + "weight", None), ("params", ours + ("bias",), k, t + "bias", None),
            ("batch_stats", ours + ("mean",), k, t + "running_mean", None),
            ("batch_stats", ours + ("var",), k, t + "running_var", None)]


def linear_pairs(ours: tuple, k: int, t: str, bias: bool = True) -> list:
    """A torch Linear (weight [out, in]) → our Dense (kernel [in, out], bias)."""
    return [("params", ours + ("kernel",), k, t + "weight", np.transpose)] + (
        [("params", ours + ("bias",), k, t + "bias", None)] if bias else [])


def mlp_block_pairs(names: list, torch_prefix: str, ours: tuple, k: int) -> list:
    """FuxiCTR's MLP_Block (``<prefix>mlp.<i>``) → our MLP tower (Dense_j, BatchNorm_j) at ``ours``."""
    linear, bn = mlp_layers(names, torch_prefix + "mlp.")
    pairs = []
    for j, t in enumerate(linear):
        pairs += linear_pairs(ours + (f"Dense_{j}",), k, t)
    for j, t in enumerate(bn):
        pairs += bn_pairs(ours + (f"BatchNorm_{j}",), k, t)
    return pairs


def latest_pairs(names: list) -> list:
    """EKTF_L's students: networks.0 = ProductNetwork (IPNN) → group0_ipnn, networks.1 = FinalNet → group1_final
    (FINAL 1B: its one block), networks.2 = ExponentialCrossNetwork → group2_ecn; each group holds one student."""
    pairs = mlp_block_pairs(names, "networks.0.dnn.", ("group0_ipnn", "dnn"), 0)
    fin, t = ("group1_final", "block1"), "networks.1."
    pairs += linear_pairs(fin + ("field_gate", "linear"), 0, t + "field_gate.linear.")
    for j in indices(names, t + "layer."):
        pairs += linear_pairs(fin + (f"FinalLinear_{j}", "linear"), 0, f"{t}layer.{j}.linear.")
    for j in indices(names, t + "norm."):
        pairs += bn_pairs(fin + (f"BatchNorm_{j}",), 0, f"{t}norm.{j}.")
    pairs += linear_pairs(fin + ("fc",), 0, t + "fc.")
    ecn, t = ("group2_ecn",), "networks.2."
    for i in indices(names, t + "w."):
        pairs += linear_pairs(ecn + (f"w_{i}",), 0, f"{t}w.{i}.", bias=False)
        pairs.append(("params", ecn + (f"b_{i}",), 0, f"{t}b.{i}", None))
        pairs += [("params", ecn + (f"ln_{i}", "scale"), 0, f"{t}layer_norm.{i}.weight", None),
                  ("params", ecn + (f"ln_{i}", "bias"), 0, f"{t}layer_norm.{i}.bias", None)]
    for i in indices(names, t + "batch_norm."):
        pairs += bn_pairs(ecn + (f"bn_{i}",), 0, f"{t}batch_norm.{i}.")
    pairs += linear_pairs(ecn + ("fc",), 0, t + "fc.")
    return pairs


def correspondence(ref, meta: dict) -> list:
    """[(our collection, our path tuple, student index or None, torch name, transform)] for every
    parameter and BN statistic. The embedding is handled apart (one table from per-field tables).
    Every torch parameter and BN statistic of the students must be used exactly once (else an error)."""
    names = [n for n in ref.files if n.startswith("state0/")]
    if meta.get("model", "EKTF") == "EKTF_L":
        pairs = latest_pairs(names)
    else:
        pairs = []
        for k in range(meta["k"]):
            pairs += mlp_block_pairs(names, f"networks.{k}.", ("group0_mlp",), k)
    used = [p[3] for p in pairs]
    wanted = {n[len("state0/"):] for n in names if n.startswith("state0/networks.") and not n.endswith(CONSTANT_BUFFERS)}
    twice = sorted({n for n in used if used.count(n) > 1})
    if twice or set(used) != wanted:
        raise ValueError(f"step_parity: the torch-to-ours mapping of {meta.get('model', 'EKTF')} is wrong: unmapped "
                         f"{sorted(wanted - set(used))}, not in the recording {sorted(set(used) - wanted)}, mapped twice {twice}")
    return pairs


def unjudged(coll: str, path: tuple, meta: dict) -> bool:
    """Dense biases feeding a BatchNorm, and the BN running means that follow them: the hidden Dense layers
    of an MLP_Block tower (EKTF's MLPs, EKTF_L's IPNN) with BN on. FinalNet's FinalLinear biases feed BN
    through [h_a, h_b ⊙ h_a] (not shift-invariant: a real gradient) and ECN's w has no bias, so their
    biases and BN means are judged."""
    if not meta["params"]["batch_norm"] or path[0] not in ("group0_mlp", "group0_ipnn"):
        return False
    layer = path[-2]
    n_hidden = len(meta["params"]["hidden_units"])
    pre_bn = layer.startswith("Dense_") and path[-1] == "bias" and int(layer.split("_")[1]) < n_hidden
    bn_mean = coll == "batch_stats" and layer.startswith("BatchNorm_") and path[-1] == "mean"
    return pre_bn or bn_mean


def table_from(ref, stage: str, meta: dict) -> np.ndarray:
    return np.concatenate([ref[f"{stage}/embedding_layer.embedding_layer.embedding_layers.{f}.weight"] for f in meta["fields"]])


def load_into(variables: dict, ref, stage: str, pairs: list, meta: dict) -> dict:
    """``variables`` ({"params", "batch_stats"} of our model) with the reference's ``stage`` values."""
    out = jax.tree.map(np.array, variables)
    out["params"]["embedding"]["table"][:] = table_from(ref, stage, meta)
    filled = [(coll, path, k) for coll, path, k, _, _ in pairs if coll in out]
    leaves = {(coll, tuple(getattr(e, "key", e) for e in kp), k)
              for coll in out for kp, x in jax.tree_util.tree_leaves_with_path(out[coll])
              if kp[0].key != "embedding" for k in range(x.shape[0])}  # each student's slice of the count axis
    if len(filled) != len(set(filled)) or set(filled) != leaves:
        raise ValueError(f"step_parity: our variables not filled by the mapping: {sorted(leaves - set(filled))[:5]}, "
                         f"not ours: {sorted(set(filled) - leaves)[:5]}, filled twice: {len(filled) - len(set(filled))}")
    for coll, path, k, name, fn in pairs:
        if coll not in out:
            continue
        leaf = out[coll]
        for p in path[:-1]:
            leaf = leaf[p]
        value = ref[f"{stage}/{name}"]
        leaf[path[-1]][k] = (fn(value) if fn else value).reshape(leaf[path[-1]][k].shape)
    return jax.tree.map(jnp.asarray, out)


def read(tree: dict, coll: str, path: tuple, k: int) -> np.ndarray:
    leaf = tree[coll]
    for p in path:
        leaf = leaf[p]
    return np.asarray(leaf[k])


def with_adam_moments(opt_state, mu, nu, count: int):
    """``make_optimizer``'s state (clipping, injected Adam) with Adam's moments and step count replaced."""
    clip, inject = opt_state
    adam, rest = inject.inner_state
    adam = adam._replace(count=jnp.asarray(count, adam.count.dtype), mu=mu, nu=nu)
    return (clip, inject._replace(inner_state=(adam, rest)))


def rel(a, b) -> float:
    """max |a − b| over max |b| (max |a − b| where b is all 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = float(np.max(np.abs(a - b))) if b.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return d / scale if scale > 0 else d


def judge(rows: list, what: str, name: str, ours, ref32, ref64, judged: bool = True, pooled: bool = False) -> None:
    """A row: ours and the authors' float32 run, each against the authors' float64 run (the exact
    arithmetic's stand-in); judged: ours may be off by at most FACTOR × what float32 costs the reference,
    or by FLOOR. ``pooled``: its squared differences join its group's pooled row (``pool``)."""
    err, yard = rel(ours, ref64), rel(ref32, ref64)
    o, r32, r64 = (np.asarray(x, np.float64) for x in (ours, ref32, ref64))
    rows.append({"what": what, "name": name, "ours_vs_exact": err, "reference_vs_exact": yard,
                 "ours_vs_reference": rel(ours, ref32), "sq_ours": float(np.sum((o - r64) ** 2)),
                 "sq_reference": float(np.sum((r32 - r64) ** 2)), "sq_exact": float(np.sum(r64 ** 2)),
                 "pooled": pooled, "noise": not (judged or pooled) and any(g in what for g in POOLED_GROUPS),
                 "ok": bool(err <= max(FACTOR * yard, FLOOR)) if judged else None})


def pool(rows: list, what: str, name: str, floor: float, pattern: str = "") -> None:
    """One judged row for ``what``: ‖ours − exact‖ / ‖exact‖ over the elements of every pooled row whose
    name matches the regular expression ``pattern``, which must stay within max(FACTOR × the authors'
    float32 figure, ``floor``)."""
    rs = [r for r in rows if r["what"] == what and r["pooled"] and re.search(pattern, r["name"])]
    exact = sum(r["sq_exact"] for r in rs)
    err, yard = (float(np.sqrt(sum(r[k] for r in rs) / exact)) for k in ("sq_ours", "sq_reference"))
    rows.append({"what": what, "name": name, "ours_vs_exact": err, "reference_vs_exact": yard, "ours_vs_reference": None,
                 "pooled": False, "ok": bool(err <= max(FACTOR * yard, floor))})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-venv", help="the reference's virtual environment (torch, fuxictr)")
    ap.add_argument("--kdef", help="checkout of salmon1802/KDEF")
    ap.add_argument("--ref-work", help="the harness's data root holding the prepared --dataset-id")
    ap.add_argument("--dataset-id", default="frappe_mod10")
    ap.add_argument("--ref-npz", default=None, help="a recording of step_parity_torch.py: reused if it exists, else written there")
    ap.add_argument("--model", choices=["EKTF", "EKTF_L"], default="EKTF",
                    help="EKTF (--k MLP students) or EKTF_L (KDEF_Latest: IPNN, FinalNet, ECN; --k is not read)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--embedding-l2", type=float, default=0.01)
    ap.add_argument("--hidden-units", type=int, nargs="+", default=[400, 400, 400])
    ap.add_argument("--out", default=None, type=output_file_arg)
    args = ap.parse_args()
    if args.out:
        try:
            check_replaceable(Path(args.out), "step_parity.py")
        except ValueError as e:
            ap.error(str(e))
    if not (args.ref_npz and Path(args.ref_npz).is_file()) and not (args.ref_venv and args.kdef and args.ref_work):
        ap.error("give --ref-venv, --kdef and --ref-work (or an existing --ref-npz)")
    path = record_reference(args)
    try:
        compare(args, np.load(path))
    finally:
        if not args.ref_npz:  # a temporary recording (~60 MB at K=3)
            shutil.rmtree(path.parent, ignore_errors=True)


def compare(args, ref) -> None:
    meta = json.loads(str(ref["meta"]))
    c = our_config(meta)
    fm = feature_map(meta)
    model = build_model(c.model, fm)
    state, train_step = make_training(model, c, jax.random.PRNGKey(0), sum(fm.max_lens or [1] * len(fm.vocab_sizes)))
    pairs = correspondence(ref, meta)
    v0 = load_into({"params": state.params, "batch_stats": state.batch_stats}, ref, "state0", pairs, meta)
    ids, labels, b, steps = ref["ids"].astype(np.int32), ref["labels"].astype(np.float32), meta["batch"], meta["steps"]
    batches = [{"ids": jnp.asarray(ids[s * b:(s + 1) * b]), "y": jnp.asarray(labels[s * b:(s + 1) * b]),
                "mask": jnp.ones((b,), jnp.float32)} for s in range(steps + 1)]
    lam = float(c.optim.embedding_l2)
    rows = []

    @jax.jit
    def objective(params, batch_stats, batch):
        """(KDEF objective, R, logits [K, B]) in train mode, as the train step computes them."""
        logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, batch["ids"], True, batch["mask"],
                                rngs={"dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"])
        loss, _ = kdef_loss(logits, batch["y"], mask=batch["mask"])
        return loss, 0.5 * lam * jnp.sum(jnp.square(params["embedding"]["table"])), logits

    def both(key: str, fn=None):  # (the reference's float32 value, its float64 value) of a recorded array
        r32, r64 = ref[key], ref["f64/" + key]
        return (fn(r32), fn(r64)) if fn else (r32, r64)

    # step 0: logits, objective, R, every gradient of objective + R
    loss0, reg0, logits0 = objective(v0["params"], v0["batch_stats"], batches[0])
    grads = jax.grad(lambda p: sum(objective(p, v0["batch_stats"], batches[0])[:2]))(v0["params"])
    judge(rows, "step 0", "logits [B, K]", np.asarray(logits0).T, *both("train_logits", lambda x: x[0]))
    judge(rows, "step 0", "KDEF objective", loss0, *both("loss", lambda x: x[0]))
    judge(rows, "step 0", "R = (λ/2)·‖E‖²", reg0, *both("reg", lambda x: x[0]))
    dlogits = jax.grad(lambda z: kdef_loss(z, batches[0]["y"], mask=batches[0]["mask"])[0])(logits0)
    judge(rows, "step 0", "d objective / d logits [B, K]", np.asarray(dlogits).T, *both("dlogits0"))
    judge(rows, "step 0 gradient", "embedding table", grads["embedding"]["table"],
          table_from(ref, "grad0", meta), table_from(ref, "f64/grad0", meta), judged=False, pooled=True)
    for coll, path, k, name, fn in pairs:
        if coll == "params":
            judge(rows, "step 0 gradient", f"{'/'.join(path)}[{k}]", read({"p": grads}, "p", path, k),
                  *both(f"grad0/{name}", fn), judged=False, pooled=not unjudged(coll, path, meta))

    # the library's train step, step by step
    state = state.replace(params=v0["params"], batch_stats=v0["batch_stats"])
    our_losses, our_norms, our_logits = [], [], []
    for s in range(steps):
        our_logits.append(np.asarray(objective(state.params, state.batch_stats, batches[s])[2]).T)
        state, metrics = train_step(state, batches[s], jax.random.PRNGKey(0))
        our_losses.append(float(metrics["loss"]))
        our_norms.append(float(metrics["grad_norm"]))
    span = f"steps 0-{steps - 1}"
    judge(rows, span, "logits before each step", np.stack(our_logits), *both("train_logits"), judged=False)
    judge(rows, span, "loss (objective + R)", our_losses, ref["loss"] + ref["reg"], ref["f64/loss"] + ref["f64/reg"], judged=False)
    judge(rows, span, "gradient norm before clipping", our_norms, *both("grad_norm"), judged=False)
    eval_logits = make_predict_step(model)(state.params, state.batch_stats, batches[steps]["ids"])
    judge(rows, "eval after training", "logits of a held-out batch", np.asarray(eval_logits).T, *both("eval_logits"), judged=False)

    # the last step again, from the reference's state before it (its Adam moments included): one step's
    # arithmetic, without the drift that the steps before it accumulate on either side
    params_pairs = [p for p in pairs if p[0] == "params"]
    start = load_into({"params": state.params, "batch_stats": state.batch_stats}, ref, "last/state", pairs, meta)
    mu, nu = (load_into({"params": state.params}, ref, f"last/{m}", params_pairs, meta)["params"] for m in ("exp_avg", "exp_avg_sq"))
    forced = state.replace(params=start["params"], batch_stats=start["batch_stats"],
                           opt_state=with_adam_moments(state.opt_state, mu, nu, int(ref["last/count"])))
    forced, _ = train_step(forced, batches[steps - 1], jax.random.PRNGKey(0))
    final = {"params": forced.params, "batch_stats": forced.batch_stats}
    last = f"step {steps - 1} {POOLED_GROUPS[1]}"
    judge(rows, last, "embedding table", final["params"]["embedding"]["table"],
          table_from(ref, "state_final", meta), table_from(ref, "last64/state_final", meta), judged=False, pooled=True)
    for coll, path, k, name, fn in pairs:
        r32, r64 = ref[f"state_final/{name}"], ref[f"last64/state_final/{name}"]
        judge(rows, last, f"{coll}:{'/'.join(path)}[{k}]", read(final, coll, path, k),
              fn(r32) if fn else r32, fn(r64) if fn else r64, judged=False, pooled=not unjudged(coll, path, meta))
    pool(rows, "step 0 gradient", "every gradient, pooled", POOLED_FLOOR["gradient"])
    for kind, pattern in (STATE_KINDS_LATEST if meta.get("model", "EKTF") == "EKTF_L" else STATE_KINDS).items():
        pool(rows, last, f"{kind}, pooled", POOLED_FLOOR["state"], pattern)


    judged = [r for r in rows if r["ok"] is not None]
    failed = [r for r in judged if not r["ok"]]
    shown, worst = [r for r in rows if r["ok"] is not None], {}
    for r in rows:  # per kind of quantity, of the rows reported only: the one where ours is furthest from exact
        if r["ok"] is None and not r.get("noise") and (r["what"] not in worst or r["ours_vs_exact"] > worst[r["what"]]["ours_vs_exact"]):
            worst[r["what"]] = r
    print(f"relative difference (max |a − b| / max |b|; pooled: ‖a − b‖ / ‖b‖) to the authors' code run in float64\n"
          f"{'what':28s} {'quantity':42s} {'ours':>9s} {'authors f32':>12s}  judged")
    for r in shown + sorted(worst.values(), key=lambda r: [x["what"] for x in rows].index(r["what"])):
        verdict = "not judged" if r["ok"] is None else ("ok" if r["ok"] else "FAILED")
        name = r["name"] if r["ok"] is not None else "worst: " + r["name"]
        print(f"{r['what'][:28]:28s} {name[:42]:42s} {r['ours_vs_exact']:9.1e} {r['reference_vs_exact']:12.1e}  {verdict}")
    print(f"{len(judged) - len(failed)} of {len(judged)} judged quantities within max({FACTOR:g} × the authors' float32 "
          f"difference, a floor)" + (f"; beyond it: {', '.join(r['what'] + ' ' + r['name'] for r in failed)}" if failed else ""))
    if args.out:
        write_json(args.out, {"experiment": "step_parity", "reference": meta, "jax": jax.__version__, "factor": FACTOR,
                              "floor": FLOOR, "ours": {"loss": our_losses, "grad_norm": our_norms},
                              "reference_loss": (ref["loss"] + ref["reg"]).tolist(),
                              "reference_float64_loss": (ref["f64/loss"] + ref["f64/reg"]).tolist(),
                              "rows": rows, "judged": len(judged), "failed": len(failed)})
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
