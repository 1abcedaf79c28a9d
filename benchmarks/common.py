"""Shared pieces of the benchmarks: Criteo-shaped models and batches, timing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax
import numpy as np

from kdef_jax.config import base_config
from kdef_jax.data.synthetic import CRITEO_VOCAB
from kdef_jax.models.ensemble import KDEFModel, StudentGroup

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
    """Student groups for a spec like "ipnn:1,final:1,ecn:1" with config overrides "model.ecn.num_cross_layers=4"."""
    from kdef_jax.models.ensemble import groups_from_config

    c = base_config()
    c.model.students = spec
    for item in overrides:
        key, _, value = item.partition("=")
        node = c
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = type(node[leaf])(float(value) if isinstance(node[leaf], float) else int(value))
    return groups_from_config(c.model)


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


def time_calls(fn, args_list, *, warmup: int = 2, steps: int = 10, rounds: int = 3, carry=None):
    """Median seconds per call over ``rounds`` rounds of ``steps`` calls (after ``warmup``).

    With ``carry`` the call is ``carry = fn(carry, args)[0]`` (a train step threading its state).
    """
    def run(k, c):
        for i in range(k):
            a = args_list[i % len(args_list)]
            if c is None:
                out = fn(*a)
            else:
                c, out = fn(c, *a)
        jax.block_until_ready(out if c is None else (c, out))
        return c

    carry = run(warmup, carry)
    per_round = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        carry = run(steps, carry)
        per_round.append((time.perf_counter() - t0) / steps)
    return statistics.median(per_round), min(per_round), max(per_round), carry


def machine() -> dict:
    d = jax.devices()[0]
    return {
        "platform": d.platform,
        "device_kind": d.device_kind,
        "device_count": jax.device_count(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
    }


def write_json(path: str | None, record: dict, echo: bool = True) -> None:
    """Write ``record`` to ``path`` (atomically: a run killed mid-write keeps the previous file) and print it."""
    text = json.dumps(record, indent=1)
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text + "\n")
        os.replace(tmp, path)
    if echo:
        print(text)
