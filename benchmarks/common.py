"""Shared pieces of the benchmarks: Criteo-shaped models and batches, timing, JSON output."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from kdef_jax.config import apply_overrides, base_config
from kdef_jax.data.synthetic import CRITEO_VOCAB
from kdef_jax.models.ensemble import KDEFModel, StudentGroup
from kdef_jax import run_files, runtime
from kdef_jax.report import host_cpu

runtime.tune_cpu_runtime()  # as the training code does on import: every benchmark measures the tuned runtime

HIDDEN = (400, 400, 400)
EMB_DIM = 16
# Multiply-accumulates of one MLP student per sample (624→400→400→400→1), as the reference counts.
MLP_MACS = 624 * 400 + 400 * 400 + 400 * 400 + 400


def mlp_group(count: int, dropout: float = 0.1, batch_norm: bool = True, dropout_rng: str = "hash") -> StudentGroup:
    kw = {"hidden_units": HIDDEN, "dropout": dropout, "batch_norm": batch_norm, "dropout_rng": dropout_rng}
    return StudentGroup("mlp", count, tuple(sorted(kw.items())))


def criteo_model(groups, vocab=CRITEO_VOCAB) -> KDEFModel:
    return KDEFModel(vocab_sizes=vocab, groups=tuple(groups), embedding_dim=EMB_DIM)


def spec_groups(spec: str, overrides=()) -> tuple:
    """Student groups for a spec like "ipnn:1,final:1,ecn:1" with config overrides "model.ecn.num_cross_layers=4"
    (each parsed as its field's type; an unknown key or a bad value is an error naming it)."""
    from kdef_jax.models.ensemble import groups_from_config

    c = base_config()
    c.model.students = spec
    apply_overrides(c, overrides)
    return groups_from_config(c.model)


def checked_spec_groups(ap: argparse.ArgumentParser, args, student_only=("set",), mlp_only=()):
    """``--students`` with its ``--set`` overrides as student groups, checked before any work (an error
    names the key or value); None without ``--students``, where a flag of ``student_only`` that was
    given is an error, since nothing would read it; so is a flag of ``mlp_only`` (default None) given
    with ``--students``."""
    given = [f"--{name.replace('_', '-')}" for name in mlp_only if getattr(args, name) is not None]
    if args.students and given:
        ap.error(f"{' '.join(given)}: not with --students (the K-MLP benchmark's, which --students replaces)")
    if not args.students:
        given = [f"--{name.replace('_', '-')}" for name in student_only if getattr(args, name)]
        if given:
            ap.error(f"{' '.join(given)}: only with --students (the K-MLP benchmark does not read it)")
        return None
    try:
        return spec_groups(args.students, args.set)
    except ValueError as e:
        ap.error(f"--students {args.students} --set {' '.join(args.set)}: {e}")


def criteo_batches(batch_size: int, n: int = 4, seed: int = 0, vocab=CRITEO_VOCAB) -> list:
    """``n`` distinct batches of Zipf-ish ids (heavier on small ids, as real CTR data)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cols = [np.minimum((rng.pareto(1.0, batch_size) * 3).astype(np.int64) + 1, v - 1) for v in vocab]
        out.append(
            {
                "ids": np.stack(cols, 1).astype(np.int32),
                "y": (rng.random(batch_size) < 0.25).astype(np.float32),
                "mask": np.ones(batch_size, np.float32),
            }
        )
    return out


def default_train_config():
    c = base_config()
    c.optim.embedding_l2 = 1e-5  # EKTF_Criteo
    return c


class Runner:
    """One benchmarked call: ``fn(*args)``, or with ``carry`` a step ``carry = fn(carry, *args)[0]``,
    cycling through ``args_list``. ``sync_each``: block on every call's result (a latency: dispatch, run
    and wait, one call at a time), not on the last one only (back-to-back calls: a throughput)."""

    def __init__(self, fn, args_list, carry=None, sync_each: bool = False):
        self.fn, self.args_list, self.carry, self.i, self.sync_each = fn, args_list, carry, 0, sync_each
        self.first_call_s = None  # the first call's seconds: compilation (and XLA:GPU autotuning) included

    def run(self, k: int) -> float:
        """Seconds for ``k`` calls, the device work included (blocks on the last result)."""
        t0 = time.perf_counter()
        out = None
        for _ in range(k):
            a = self.args_list[self.i % len(self.args_list)]
            self.i += 1
            if self.carry is None:
                out = self.fn(*a)
            else:
                self.carry, out = self.fn(self.carry, *a)
            if self.sync_each:
                jax.block_until_ready(out)
        jax.block_until_ready(out if self.carry is None else (self.carry, out))
        return time.perf_counter() - t0


def time_interleaved(runners, *, warmup: int = 2, steps: int = 10, rounds: int = 3, min_round_s: float = 0.0) -> list:
    """[(median, min, max) seconds per call] for each runner. All are warmed up first (compiled), then
    every round runs each one ``steps`` times, in an order that rotates from round to round, so that
    machine drift and first-after-compile effects hit every variant alike. Each runner's first call
    (compile included) is timed on its own into ``runner.first_call_s``. ``min_round_s`` > 0 raises a
    runner's calls per round until a round lasts at least that long (from its warm-up calls' time,
    or one extra call when ``warmup`` is 1), so a sub-millisecond GPU call is not dominated by the one
    dispatch and sync of each round; ``runner.steps`` records the count used."""
    for r in runners:
        r.first_call_s = r.run(1)
        per_call = r.run(warmup - 1) / (warmup - 1) if warmup > 1 else (r.run(1) if min_round_s > 0 else 0.0)
        r.steps = max(steps, math.ceil(min_round_s / per_call)) if min_round_s > 0 and per_call > 0 else steps
    per = [[] for _ in runners]
    n = len(runners)
    for i in range(rounds):
        for j in range(n):
            k = (i + j) % n
            per[k].append(runners[k].run(runners[k].steps) / runners[k].steps)
    return [(statistics.median(p), min(p), max(p)) for p in per]


def machine() -> dict:
    d = jax.devices()[0]
    return {
        "platform": d.platform,
        "device_kind": d.device_kind,
        "device_count": jax.device_count(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpu": host_cpu(),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "kdef_runtime": {"applied": dict(runtime.applied), "KDEF_JAX_TUNE_CPU": os.environ.get("KDEF_JAX_TUNE_CPU", "")},
    }


def layer_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments of a one-layer benchmark: a [--batch, --features] activation (one hidden layer of a
    Criteo student at batch 10,000 by default), --dropout, --steps, --rounds, --out."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=positive_int, default=10_000)
    ap.add_argument("--features", type=positive_int, default=400)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--steps", type=positive_int, default=20)
    ap.add_argument("--rounds", type=positive_int, default=5)
    ap.add_argument("--out", default=None, type=run_files.output_file_arg)
    return ap


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count of students, rows, steps or rounds)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not an integer >= 1")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a number >= 0 (seconds)."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number >= 0")
    return value


def write_json(path: str | None, record: dict, echo: bool = True) -> None:
    """Write ``record`` to ``path`` (kdef_jax.run_files.write_json: atomic, strict JSON, a device such as
    /dev/null written in place, never replaced) and print it."""
    if path:
        run_files.write_json(Path(path), record)
    if echo:
        print(json.dumps(run_files.strict_json(record), indent=1))
