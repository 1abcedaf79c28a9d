"""Training-loader benchmark: rows/s of shuffled int32 Criteo-shaped batches from the memmap cache.

    python benchmarks/loader.py --out benchmarks/results/loader.json   # 2M rows x 39 fields, batch 10,000
    python benchmarks/loader.py --rows 500000 --batch-size 4096 --out /tmp/loader.json

Builds (once, in --cache-dir) the synthetic Criteo-shaped cache (39 int32 columns, Criteo_x4 vocab
sizes), then times full epochs of ``iterate_batches(split, B, order=epoch_permutation(...))`` —
the exact training path: per-epoch permutation, fancy indexing into the memmap, padded last batch —
without and with ``prefetch`` (background thread). Each configuration is timed on ``--epochs``
epochs after one warm-up epoch (page cache warm, as in training after the first epoch).
Target (issue 3): ≥ 1M rows/s on 2 cores. Also times ``open_cache`` with and without the check of the
cache's checksums (kdef_jax/data/checksums.py; page cache warm): the start-up cost of that check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdef_jax.data.dataset import open_cache  # noqa: E402
from kdef_jax.data.loader import epoch_permutation, iterate_batches, prefetch  # noqa: E402
from kdef_jax.data.synthetic import CRITEO_VOCAB, SyntheticSpec, build_synthetic  # noqa: E402
from kdef_jax.run_files import output_file_arg  # noqa: E402
from kdef_jax.report import host_cpu  # noqa: E402
from kdef_jax.run_files import write_json  # noqa: E402


def run_epoch(split, batch_size: int, epoch: int, prefetch_size: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    rows = 0
    order = epoch_permutation(len(split), 2024, epoch)
    for b in prefetch(iterate_batches(split, batch_size, order=order), prefetch_size):
        rows += int(b["mask"].sum())
    return rows, time.perf_counter() - t0


def open_cache_seconds(path: Path, repeats: int = 5) -> dict:
    """Median seconds of ``open_cache`` with and without the checksum check, and the check's GiB/s."""
    def median_s(verify: bool) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            open_cache(path, verify=verify)
            times.append(time.perf_counter() - t0)
        return sorted(times)[repeats // 2]

    size = sum(p.stat().st_size for p in path.glob("*.npy"))
    median_s(True)  # warm the page cache
    checked, plain = median_s(True), median_s(False)
    return {"bytes": size, "verify_s": round(checked, 4), "no_verify_s": round(plain, 4),
            "check_gib_per_s": round(size / 2**30 / max(checked - plain, 1e-9), 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[10_000, 4096])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "kdef_bench_loader"))
    ap.add_argument("--out", required=True, type=output_file_arg, help="JSON path, e.g. benchmarks/results/loader.json")
    a = ap.parse_args()
    if a.rows < 1 or a.epochs < 1 or min(a.batch_size) < 1:
        ap.error("--rows, --epochs and --batch-size must be >= 1")
    spec = SyntheticSpec(vocab_sizes=CRITEO_VOCAB, num_train=a.rows, num_valid=1000, num_test=1000, seed=7)
    path = build_synthetic(spec, a.cache_dir, dataset_id="loader_bench_criteo", log=print)
    ds = open_cache(path)
    opening = open_cache_seconds(path)
    print(json.dumps({"open_cache": opening}), flush=True)
    split = ds.splits["train"]
    results = []
    for bs in a.batch_size:
        for pf in (0, 2):
            run_epoch(split, bs, 0, pf)  # warm-up
            rows, secs = 0, 0.0
            for e in range(1, a.epochs + 1):
                r, s = run_epoch(split, bs, e, pf)
                rows, secs = rows + r, secs + s
            res = {"batch_size": bs, "prefetch": pf, "rows": rows, "seconds": round(secs, 3),
                   "rows_per_s": round(rows / secs), "loadavg": [round(x, 2) for x in os.getloadavg()]}
            print(json.dumps(res), flush=True)
            results.append(res)
            write_json(Path(a.out), {"shape": list(split.x.shape), "dtype": str(split.x.dtype), "cpu_count": os.cpu_count(),
                                     "cpu": host_cpu(), "open_cache": opening, "runs": results})  # after every point: a cut-short run keeps it


if __name__ == "__main__":
    main()
