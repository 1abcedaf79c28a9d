"""Ours vs the authors' PyTorch code, measured in ONE run on the same machine, interleaved.

    python benchmarks/side_by_side.py --ref-venv /work/ref/venv --kdef /work/ref/KDEF \
        --fuxictr /work/ref/FuxiCTR --ref-work /work/ref/work --rounds 3 --out side_by_side.json

The reference side is ``run_reference.py train`` of ``$KDEF_REFERENCE_DIR/bench`` (default
``../shared/reference/bench`` beside the checkout; EKTF = the authors' KDEF,
DNN = FuxiCTR's DNN as the K=1 point because EKTF cannot build K=1, EKTF_L with the §5.2 overrides),
one fresh process per measurement as in reference-perf.md; ours is benchmarks/train_throughput.py
with the same shapes, batch sizes and step counts. Cases alternate ours/reference within every round
so machine load hits both alike; the summary gives medians over rounds, their ratio and the median of
each round's paired ratio. ``--threads`` pins the reference's torch threads only; ours uses every core,
so compare on a machine with that many cores (the JSON records both). The JSON is rewritten after
every measurement.
Setup of the reference (venv, code, data): ../shared/reference/bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from kdef_jax.report import host_cpu, software  # noqa: E402  (no JAX backend started in this process)
from kdef_jax.run_files import output_file_arg, write_json  # noqa: E402
# the reference harness: $KDEF_REFERENCE_DIR/bench (as the tests find the reference), else ../shared beside the checkout
REFERENCE_DIR = Path(os.environ.get("KDEF_REFERENCE_DIR") or HERE.parents[1] / "shared" / "reference")
HARNESS = REFERENCE_DIR / "bench" / "run_reference.py"
LATEST_OVERRIDES = '{"num_cross_layers": 4, "net1_dropout": 0.1, "net2_dropout": 0.1, "net3_dropout": 0.1}'
# (name, K or None, batch, reference model, our train_throughput.py arguments)
CASES = [
    ("mlp_k1", 1, 10_000, "DNN", ["--ks", "1", "--variants", "group"]),
    ("kdef_k3", 3, 10_000, "EKTF", ["--ks", "3", "--variants", "group"]),
    ("kdef_k10", 10, 10_000, "EKTF", ["--ks", "10", "--variants", "group"]),
    ("kdef_latest", 3, 4_096, "EKTF_L",
     ["--students", "ipnn:1,final:1,ecn:1", "--set", "model.ecn.num_cross_layers=4", "--mflop-per-sample", "15.08"]),
]


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            return json.loads(line)
    raise ValueError(f"no JSON line in output:\n{text[-2000:]}")


def _output(cmd: list) -> str:
    """stdout of ``cmd``; a failure ends the run with the command and the tail of its stderr (the
    measurements so far are in --out already)."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"side_by_side: this measurement failed (exit status {proc.returncode}):\n  {' '.join(cmd)}\n"
                         + (proc.stderr or proc.stdout)[-3000:])
    return proc.stdout


def ours(case, steps: int) -> float:
    name, k, batch, _, extra = case
    cmd = [sys.executable, str(HERE / "train_throughput.py"), "--batch", str(batch),
           "--steps", str(steps), "--rounds", "1", "--warmup", "3", "--out", os.devnull, *extra]
    out = _output(cmd)
    rec = json.loads(out[out.index("{"):])
    row = rec["rows"][0]
    return row["samples_per_s"] if "samples_per_s" in row else row["group"]["samples_per_s"]


def reference(case, steps: int, args) -> float:
    name, k, batch, model, _ = case
    cmd = [args.ref_venv + "/bin/python", str(HARNESS), "train", "--kdef", args.kdef, "--dnn", args.fuxictr,
           "--work", args.ref_work, "--threads", str(args.threads), "--model", model, "--k", str(k),
           "--batch-size", str(batch), "--steps", str(steps), "--warmup", "3", "--repeats", "1"]
    if model == "EKTF_L":
        cmd += ["--overrides", LATEST_OVERRIDES]
    rec = _last_json(_output(cmd))
    for key in ("median_samples_per_s", "samples_per_s"):
        if key in rec:
            return float(rec[key])
    raise KeyError(f"reference JSON has no samples/s: {rec}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-venv", required=True)
    ap.add_argument("--kdef", required=True, help="export of salmon1802/KDEF")
    ap.add_argument("--fuxictr", required=True, help="export of reczoo/FuxiCTR (model_zoo/DNN)")
    ap.add_argument("--ref-work", required=True, help="run_reference.py prepare --work folder (synthetic Criteo)")
    ap.add_argument("--cases", nargs="+", default=[c[0] for c in CASES], choices=[c[0] for c in CASES])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, type=output_file_arg)
    args = ap.parse_args()
    problems = [f"--{n} {getattr(args, n)} is not >= 1" for n in ("rounds", "steps", "threads") if getattr(args, n) < 1]
    if not os.access(Path(args.ref_venv) / "bin" / "python", os.X_OK):
        problems.append(f"--ref-venv {args.ref_venv}: no bin/python there")
    problems += [f"{flag} {p}: no such folder" for flag, p in (("--kdef", args.kdef), ("--fuxictr", args.fuxictr),
                                                             ("--ref-work", args.ref_work)) if not Path(p).is_dir()]
    if not HARNESS.is_file():
        problems.append(f"the reference harness {HARNESS} is missing (set KDEF_REFERENCE_DIR to the reference folder)")
    if problems:  # before any measurement: a bad setup was found only after ours had been measured
        ap.error("; ".join(problems))
    cases = [c for c in CASES if c[0] in args.cases]
    args.reference_software = reference_software(args.ref_venv)
    if args.threads != os.cpu_count():
        print(f"note: --threads {args.threads} pins only the reference; ours uses all {os.cpu_count()} cores", flush=True)
    raw = {c[0]: {"ours": [], "reference": []} for c in cases}
    for r in range(args.rounds):
        for case in cases:
            for side in (("ours", "reference") if r % 2 == 0 else ("reference", "ours")):
                v = ours(case, args.steps) if side == "ours" else reference(case, args.steps, args)
                raw[case[0]][side].append(v)
                print(f"round {r + 1} {case[0]:12s} {side:9s} {v:10,.0f} samples/s", flush=True)
                if args.out:  # after every measurement: a run cut short keeps what it measured
                    write_json(Path(args.out), record(raw, args))
    for name, d in record(raw, args)["summary"].items():
        print(f"{name:12s} ours {d['ours_samples_per_s']:10,.0f}  reference {d['reference_samples_per_s']:10,.0f}  "
              f"speed-up {d['speedup']:5.2f}x (median of the rounds' ratios {d['speedup_paired']:5.2f}x)")


def record(raw: dict, args) -> dict:
    """The run's JSON: per case the medians over the rounds both sides finished, their ratio (``speedup``),
    each round's ratio of its back-to-back pair and their median (``speedup_paired``), and the raw samples/s
    (a run cut between a round's two halves keeps the half it measured there, outside the medians)."""
    summary = {}
    for name, d in raw.items():
        n = min(len(d["ours"]), len(d["reference"]))
        if n == 0:
            continue
        o, ref = statistics.median(d["ours"][:n]), statistics.median(d["reference"][:n])
        per_round = [a / b for a, b in zip(d["ours"][:n], d["reference"][:n])]
        summary[name] = {"ours_samples_per_s": o, "reference_samples_per_s": ref, "speedup": o / ref,
                         "speedup_per_round": per_round, "speedup_paired": statistics.median(per_round), **d}
    cases = {name: {"k": k, "batch": batch, "reference_model": model, "ours_args": extra,
                    **({"reference_overrides": LATEST_OVERRIDES} if model == "EKTF_L" else {})}
             for name, k, batch, model, extra in CASES if name in raw}
    return {"benchmark": "side_by_side", "cpu": host_cpu(), "rounds": args.rounds, "steps": args.steps,
            "reference_threads": args.threads, "ours_threads": os.cpu_count(), "cases": cases,
            "software": {"ours": software(), "reference": getattr(args, "reference_software", None)}, "summary": summary}


def reference_software(ref_venv: str) -> dict:
    """The reference environment's python, torch and fuxictr versions."""
    code = "import json, platform, torch, fuxictr; print(json.dumps({'python': platform.python_version(), " \
           "'torch': torch.__version__, 'fuxictr': getattr(fuxictr, '__version__', None)}))"
    return _last_json(_output([ref_venv + "/bin/python", "-c", code]))

if __name__ == "__main__":
    main()
