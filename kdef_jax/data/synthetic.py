"""Built-in synthetic CTR data, written straight into the cache format (no download, any machine).

Ids of field f are Zipf-distributed over 1..n_f (n_f = vocab_size − 2; PAD and OOV rows exist but
OOV is drawn with probability ``oov_rate``). Labels come from a planted logistic model

    logit = b + Σ_f w_f[x_f] + Σ_{(a,b) ∈ pairs} ⟨v_a[x_a], v_b[x_b]⟩ / √r,   y ~ Bernoulli(σ(logit)),

with w ~ N(0, 0.3²), v ~ N(0, 0.6²) of rank r = 4, ``pairs`` min(num_pairs, F(F−1)/2) distinct
unordered pairs of fields, and b calibrated to the requested positive rate.
So the data has first-order and pairwise signal a CTR model can learn, and a known Bayes AUC.
Same spec → byte-identical arrays.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from kdef_jax.data import checksums
from kdef_jax.data.atomic_dir import building
from kdef_jax.data.feature_map import FeatureMap, FieldSpec

# Criteo_x4_10 embedding-table sizes (PAD + OOV included): C1-C26 from the public FuxiCTR feature
# map; I1-I13 are shaped like it and sum so the total is Criteo's 910,747 rows (spec §1.1).
CRITEO_VOCAB = (
    44, 99, 101, 58, 220, 105, 73, 67, 92, 7, 29, 46, 80,
    1446, 554, 157339, 117822, 306, 18, 11882, 630, 5, 39530, 5131, 156656,
    3176, 28, 11043, 148913, 12, 4560, 2003, 5, 154564, 18, 17, 53031, 82, 40955,
)
SMALL_VOCAB = (2000, 1200, 800, 400, 120, 60, 30, 12, 7, 4, 3000, 150, 24, 9, 500, 40)
# 2: pairs are distinct (version 1 could draw a pair twice: a doubled term, one interaction fewer)
GENERATOR_VERSION = 2


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    vocab_sizes: tuple = SMALL_VOCAB
    num_train: int = 100_000
    num_valid: int = 20_000
    num_test: int = 20_000
    seed: int = 2024
    positive_rate: float = 0.25
    zipf_exponent: float = 1.05
    num_pairs: int = 8
    oov_rate: float = 0.0
    chunk_rows: int = 250_000

    def key(self) -> str:
        """The cache's name: the spec and the generator's version (a new version never reads an old cache)."""
        blob = json.dumps({**dataclasses.asdict(self), "generator": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _zipf_ids(rng, n_tokens: int, size: int, s: float) -> np.ndarray:
    """0-based ranks r in 0..n_tokens−1 with P(r) ∝ (r + 1)^(−s) (the caller maps ranks to ids)."""
    cdf = np.cumsum(np.arange(1, n_tokens + 1, dtype=np.float64) ** (-s))
    cdf /= cdf[-1]
    r = np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), n_tokens - 1)
    return r


class _Planted:
    def __init__(self, spec: SyntheticSpec):
        rng = np.random.default_rng([spec.seed, 0])
        self.spec = spec
        self.n = [v - 2 for v in spec.vocab_sizes]
        if min(self.n) < 1:
            raise ValueError(f"synthetic: every vocab size must be >= 3, got {spec.vocab_sizes}")
        if spec.num_train < 1:  # the bias is calibrated on training rows
            raise ValueError(f"synthetic: num_train must be >= 1, got {spec.num_train}")
        f = len(self.n)
        self.perm = [rng.permutation(n) + 1 for n in self.n]  # rank -> id
        self.w = [rng.normal(0.0, 0.3, size=n + 2) for n in self.n]
        self.pairs = []  # drawn one by one, a repeat drawn again: the same pairs as version 1 where it drew none
        while len(self.pairs) < min(spec.num_pairs, f * (f - 1) // 2):
            a, b = rng.choice(f, 2, replace=False)
            if (a, b) not in self.pairs and (b, a) not in self.pairs:
                self.pairs.append((a, b))
        self.v = {}
        for a, b in self.pairs:
            for j in (a, b):
                if j not in self.v:
                    self.v[j] = rng.normal(0.0, 0.6, size=(self.n[j] + 2, 4))
        self.bias = 0.0
        x = self.ids(np.random.default_rng([spec.seed, 1]), min(200_000, spec.num_train))
        z = self.logit(x)
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if np.mean(1 / (1 + np.exp(-(z + mid)))) > spec.positive_rate else (mid, hi)
        self.bias = 0.5 * (lo + hi)

    def ids(self, rng, size: int) -> np.ndarray:
        cols = []
        for j, n in enumerate(self.n):
            c = self.perm[j][_zipf_ids(rng, n, size, self.spec.zipf_exponent)]
            if self.spec.oov_rate > 0:
                c = np.where(rng.random(size) < self.spec.oov_rate, n + 1, c)
            cols.append(c.astype(np.int32))
        return np.stack(cols, axis=1)

    def logit(self, x: np.ndarray) -> np.ndarray:
        z = np.full(x.shape[0], self.bias)
        for j in range(x.shape[1]):
            z += self.w[j][x[:, j]]
        for a, b in self.pairs:
            z += np.einsum("ij,ij->i", self.v[a][x[:, a]], self.v[b][x[:, b]]) / 2.0
        return z


def build_synthetic(spec: SyntheticSpec, cache_root: str | os.PathLike, dataset_id: str = "synthetic", log=print) -> Path:
    """Write the synthetic dataset as a cache directory (reused if it exists)."""
    final = Path(cache_root) / f"{dataset_id}-{spec.key()}"
    if (final / "feature_map.json").exists():
        return final
    log(f"[data] generating {dataset_id} ({spec.num_train:,}/{spec.num_valid:,}/{spec.num_test:,} rows) into {final}")
    planted = _Planted(spec)
    rows = {"train": spec.num_train, "valid": spec.num_valid, "test": spec.num_test}
    pos, bayes = {}, {}
    with building(final, log=log) as tmp:
        for si, (split, n) in enumerate(rows.items()):
            if not n:  # no rows, no files: feature_map.json lists only the splits that have rows
                continue
            x_out = np.lib.format.open_memmap(tmp / f"{split}_x.npy", "w+", np.int32, (n, len(planted.n)))
            y_out = np.lib.format.open_memmap(tmp / f"{split}_y.npy", "w+", np.float32, (n,))
            for ci, start in enumerate(range(0, n, spec.chunk_rows)):
                m = min(spec.chunk_rows, n - start)
                rng = np.random.default_rng([spec.seed, 2 + si, ci])
                x = planted.ids(rng, m)
                p = 1.0 / (1.0 + np.exp(-planted.logit(x)))
                x_out[start : start + m] = x
                y_out[start : start + m] = (rng.random(m) < p).astype(np.float32)
                if split == "test" and ci == 0:
                    from kdef_jax.metrics import auc

                    bayes["test_first_chunk"] = auc(y_out[start : start + m], p)
            x_out.flush()
            y_out.flush()
            pos[split] = float(np.mean(y_out))
            del x_out, y_out
        checksums.write(tmp)
        fields = tuple(FieldSpec(name=f"f{j}", type="categorical", vocab_size=v) for j, v in enumerate(spec.vocab_sizes))
        FeatureMap(
            dataset_id=dataset_id,
            fields=fields,
            num_rows={k: v for k, v in rows.items() if v},
            positive_rate={k: v for k, v in pos.items() if rows[k]},
            info={"synthetic": dataclasses.asdict(spec), "bayes_auc": bayes},
        ).save(tmp / "feature_map.json")
    return final
