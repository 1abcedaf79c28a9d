"""The reference side of experiments/step_parity.py: runs in the AUTHORS' environment (torch + fuxictr),
never imports kdef_jax.

    REF/venv/bin/python experiments/step_parity_torch.py --kdef REF/KDEF --work REF/work \
        --dataset-id frappe_mod10 --model EKTF --k 3 --batch 1024 --steps 8 --out /tmp/ref_steps.npz

Builds the authors' model through the shared harness (``$KDEF_REFERENCE_DIR/bench/run_reference.py``:
its ``build_model`` with the shims that run the authors' code on PyPI fuxictr; nothing of the authors'
code is copied here), with dropout off (the two frameworks draw different masks) and everything else
as the harness builds it. Then, on the first ``steps + 1`` batches of the prepared train split (file
order), it trains ``steps`` steps of the harness's train step (add_loss + R, backward, clip to norm 10,
Adam) in float32, and again from the same weights in float64, recording into one .npz (float64 keys
prefixed ``f64/``):

- ``state0/<name>``: every parameter and buffer at initialisation (the weights step_parity.py copies);
- per step: the students' logits [B, K], ``add_loss`` (the KDEF objective), the regulariser R, the
  gradient norm before clipping; at step 0 also ``grad0/<name>``, every gradient of add_loss + R, and
  ``dlogits0`` [B, K], the objective's gradient with respect to the students' logits;
- ``state_final/<name>`` after the last step, BN running statistics included, and eval-mode logits
  [B, K] of the held-out batch ``steps``;
- ``last/...``: the float32 run's state, Adam moments and step count before its last step, and
  ``last64/state_final/<name>``: that last step redone in float64 from there;
- the batches' ids [N, C] (field order; a sequence field's max_len columns, 0 = PAD), labels [N], the fields,
  their vocabulary sizes and max_lens (``meta``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REFERENCE_DIR = Path(os.environ.get("KDEF_REFERENCE_DIR") or Path(__file__).resolve().parents[2] / "shared" / "reference")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kdef", required=True, help="checkout of salmon1802/KDEF")
    ap.add_argument("--work", required=True, help="the harness's data root (run_reference.py prepare)")
    ap.add_argument("--dataset-id", required=True)
    ap.add_argument("--model", choices=["EKTF", "EKTF_L"], default="EKTF")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--overrides", default="{}", help="JSON model-parameter overrides")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sys.path.insert(0, str(REFERENCE_DIR / "bench"))
    import run_reference as rr  # the shared harness
    import torch

    ns = argparse.Namespace(kdef=args.kdef, dnn=None, work=args.work, dataset_id=args.dataset_id, threads=2, seed=args.seed)
    rr.setup_torch(ns)
    torch.use_deterministic_algorithms(True)
    fmap, data_dir = rr.load_feature_map(ns)
    fields = list(fmap.features)
    n = args.batch * (args.steps + 1)
    arrays = rr.read_split(fmap, data_dir, "train", max_rows=n)
    if len(arrays[fmap.labels[0]]) < n:
        raise SystemExit(f"the train split has fewer than {n} rows")
    overrides = {"net_dropout": 0, "net1_dropout": 0, "net2_dropout": 0, "net3_dropout": 0, "batch_size": args.batch}
    overrides.update(json.loads(args.overrides))
    batch = lambda s: {k: torch.from_numpy(v[s * args.batch:(s + 1) * args.batch]) for k, v in arrays.items()}  # noqa: E731
    m, params = rr.build_model(ns, fmap, args.model, args.k, overrides)
    state0 = {k: v.detach().clone() for k, v in m.state_dict().items()}
    rec = {f"state0/{k}": v.numpy().copy() for k, v in state0.items()}
    rec.update(record(m, torch.float32, batch, args.steps, ""))
    m64, _ = rr.build_model(ns, fmap, args.model, args.k, overrides)  # a fresh model and optimizer
    m64.load_state_dict(state0)
    rec.update(record(m64, torch.float64, batch, args.steps, "f64/"))
    m1, _ = rr.build_model(ns, fmap, args.model, args.k, overrides)  # the last step again, from the float32 run's state
    rec.update(last_step_in_float64(m1, rec, batch, args.steps))
    rec.update(
        ids=np.concatenate([arrays[f][:n].reshape(n, -1) for f in fields], axis=1),  # a sequence field: max_len columns
        labels=arrays[fmap.labels[0]][:n],
        meta=np.array(json.dumps({
            "model": args.model, "k": rr.model_k(args.model, args.k), "batch": args.batch, "steps": args.steps,
            "fields": fields, "vocab_sizes": [int(fmap.features[f]["vocab_size"]) for f in fields],
            "max_lens": [int(fmap.features[f].get("max_len", 1)) for f in fields],
            "params": {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool, list))},
            "torch": torch.__version__,
        })),
    )
    np.savez(args.out, **rec)
    print(json.dumps({"out": args.out, "losses": rec["loss"].tolist(), "losses_float64": rec["f64/loss"].tolist()}))


def snapshot(m) -> dict:
    """``m``'s state (parameters, BN buffers) and Adam's moments and step count, by parameter name."""
    rec = {f"last/state/{k}": v.detach().numpy().copy() for k, v in m.state_dict().items()}
    for name, p in m.named_parameters():
        st = m.optimizer.state.get(p, {})
        if st:
            rec[f"last/exp_avg/{name}"] = st["exp_avg"].numpy().copy()
            rec[f"last/exp_avg_sq/{name}"] = st["exp_avg_sq"].numpy().copy()
            rec["last/count"] = np.array(int(st["step"]))
    return rec


def last_step_in_float64(m, rec: dict, batch, steps: int) -> dict:
    """One float64 train step of a fresh ``m`` from the float32 run's state before its last step (its
    Adam moments included): what that step computes in exact arithmetic, prefixed ``last64/``."""
    import torch

    m.load_state_dict({k[len("last/state/"):]: torch.from_numpy(v) for k, v in rec.items() if k.startswith("last/state/")})
    in_dtype(m, torch.float64)
    for name, p in m.named_parameters():
        if f"last/exp_avg/{name}" in rec:
            m.optimizer.state[p] = {"step": torch.tensor(float(rec["last/count"])),
                                    "exp_avg": torch.from_numpy(rec[f"last/exp_avg/{name}"]).double(),
                                    "exp_avg_sq": torch.from_numpy(rec[f"last/exp_avg_sq/{name}"]).double()}
    m.train()
    loss, reg, _ = train_step(m, batch(steps - 1))
    out = {f"last64/state_final/{k}": v.detach().numpy().copy() for k, v in m.state_dict().items()}
    out["last64/loss"] = np.array(loss + reg)
    return out


def in_dtype(m, dtype) -> None:
    """``m``'s parameters, buffers and labels in ``dtype`` (fuxictr makes the labels float32)."""
    m.to(dtype)
    labels = type(m).get_labels
    m.get_labels = lambda inputs: labels(m, inputs).to(dtype)


def train_step(m, inputs, after_backward=None) -> tuple[float, float, float]:
    """The harness's train step (add_loss + R, backward, clip to norm 10, Adam), written out to record its
    parts: (add_loss, R, the gradient norm before clipping); ``after_backward()`` runs before the clipping."""
    import torch

    m.optimizer.zero_grad()
    loss = m.add_loss(inputs)
    reg = m.regularization_loss()
    (loss + reg).backward()
    if after_backward is not None:
        after_backward()
    norm = float(torch.nn.utils.clip_grad_norm_(m.parameters(), m._max_gradient_norm))
    m.optimizer.step()
    return loss.item(), (reg.item() if torch.is_tensor(reg) else float(reg)), norm


def keep_gradients(m, captured: dict, rec: dict) -> None:
    """Step 0's gradients before clipping: every parameter's, and the objective's w.r.t. the logits [B, K]."""
    import torch

    rec.update({f"grad0/{k}": p.grad.numpy().copy() for k, p in m.named_parameters() if p.grad is not None})
    rec["dlogits0"] = torch.cat([z.grad for z in captured["tensors"]], dim=-1).numpy().copy()


def record(m, dtype, batch, steps: int, prefix: str) -> dict:
    """Train ``m`` ``steps`` steps in ``dtype`` (the harness's train step, written out to record its parts);
    the recorded arrays, their names prefixed with ``prefix``."""
    import torch

    in_dtype(m, dtype)
    captured = {}
    forward = m.forward

    def capture(inputs):  # add_loss calls self.forward once per step: keep its student logits
        out = forward(inputs)
        captured["logits"] = torch.cat(out["logits_stu"], dim=-1).detach().numpy().copy()  # [B, K]
        if torch.is_grad_enabled():
            for z in out["logits_stu"]:
                z.retain_grad()  # the loss's gradient with respect to each student's logits
            captured["tensors"] = out["logits_stu"]
        return out

    m.forward = capture
    rec, logits, losses, regs, norms = {}, [], [], [], []
    m.train()
    for s in range(steps):
        if s == steps - 1 and prefix == "":  # the last step starts from here: the float64 run redoes it from this state
            rec.update(snapshot(m))
        loss, reg, norm = train_step(m, batch(s), (lambda: keep_gradients(m, captured, rec)) if s == 0 else None)
        logits.append(captured["logits"])
        losses.append(loss)
        regs.append(reg)
        norms.append(norm)
    rec.update({f"state_final/{k}": v.detach().numpy().copy() for k, v in m.state_dict().items()})
    m.eval()
    with torch.no_grad():
        m.forward(batch(steps))
    rec.update(train_logits=np.stack(logits), loss=np.array(losses), reg=np.array(regs), grad_norm=np.array(norms),
               eval_logits=captured["logits"])
    return {prefix + k: v for k, v in rec.items()}


if __name__ == "__main__":
    main()
