"""Every shared real dataset through its config alone: preprocess, train one KDEF (K=3) epoch, tabulate.

    python experiments/dataset_summary.py --out experiments/results/datasets_real.json   # + .md beside it

For each (config, argument) below it loads the dataset from $KDEF_DATA_DIR (default ../shared/data)
into a fresh cache, trains ONE epoch of KDEF K=3 with the config's settings, and records rows per
split, per-field vocabulary sizes (PAD and OOV included), embedding rows, preprocessing time and the
one-epoch teacher test AUC (a smoke number, not a result). The fast engines' one-time kernel compile
(numba) runs before the first config and is timed apart (``kernel_warm_up_s``), so ``preprocess_s``
is each dataset's own time wherever it stands in the list.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdef_jax.config import load_config_file, validate  # noqa: E402
from kdef_jax.data.dataset import check_source, load_dataset  # noqa: E402
from kdef_jax.data.formats import columnar  # noqa: E402
from kdef_jax.report import tolerant_stdio  # noqa: E402
from kdef_jax.run_files import write_atomic, write_json  # noqa: E402
from run_seeds import check_out, check_unique  # noqa: E402  (experiments/ is this script's folder)
from kdef_jax.train import train_and_evaluate  # noqa: E402

CONFIGS = [
    "configs/frappe.py",
    "configs/movielens.py",
    "configs/criteo.py:sample",
    "configs/criteo_bars.py:sample",
    "configs/ipinyou.py:sample",
    "configs/movielens.py:1m_sample",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON path, e.g. experiments/results/datasets_real.json (a .md beside it)")
    ap.add_argument("--configs", nargs="+", default=CONFIGS)
    a = ap.parse_args()
    try:
        check_unique("--configs", a.configs)  # a config given twice would be two identical rows
    except ValueError as e:
        ap.error(str(e))
    rows, configs = [], []
    for spec in a.configs:  # every config loaded and validated before the first one trains
        try:
            c = load_config_file(str(ROOT / spec.split(":")[0]) + (":" + spec.split(":")[1] if ":" in spec else ""))
            c.train.num_epochs, c.train.progress, c.train.plot = 1, False, False
            c.model.num_students = 3
            validate(c)
            check_source(c.data)  # its data is there: a missing dataset fails before any config trains
        except (ValueError, FileNotFoundError) as e:
            ap.error(f"{spec}: {e}")
        configs.append((spec, c))
    try:
        out = check_out(Path(a.out), kind="dataset_summary.py")
    except ValueError as e:
        ap.error(str(e))
    warm_s = warm_up_engines()
    with tempfile.TemporaryDirectory(prefix="kdef_ds_") as tmp:
        for i, (spec, c) in enumerate(configs):
            print(f"[{i + 1}/{len(configs)}] {spec}: preprocessing and one epoch", flush=True)
            c.data.cache_dir = f"{tmp}/cache"
            t0 = time.perf_counter()
            ds = load_dataset(c.data, log=lambda *x: None)
            prep = time.perf_counter() - t0
            fm = ds.feature_map
            res = train_and_evaluate(c, f"{tmp}/run_{len(rows)}", log=lambda *x: None)
            test = res["rows"][0]  # the ensemble (teacher) row
            row = {
                "config": spec,
                "dataset": fm.dataset_id,
                "num_rows": fm.num_rows,
                "fields": {f.name: f.vocab_size for f in fm.fields},
                "sequence_fields": {f.name: f.max_len for f in fm.fields if f.type == "sequence"},
                "total_vocab": fm.total_vocab,
                "dropped_by_label_rule": sum(fm.info.get("dropped_by_label_rule", {}).values()),
                "preprocess_s": round(prep, 2),
                "kernel_warm_up_s": round(warm_s, 2),  # the process's one compile, before the first config
                "one_epoch_test_auc": test.get("test_auc"),  # None when the config has no test split
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
            write_tables(out, rows)  # after every config: a sweep cut short keeps the rows it finished
    print(out.with_suffix(".md").read_text())


def warm_up_engines() -> float:
    """Seconds to compile the kernels of every fast engine installed here (once per process)."""
    t0 = time.perf_counter()
    for parser in ("native", "columnar"):
        if columnar.available(parser):
            columnar.warm_up(parser)
    return time.perf_counter() - t0


def write_tables(out: Path, rows: list) -> None:
    """``rows`` as JSON at ``out`` and as a Markdown table beside it (.md)."""
    write_json(out, rows)
    lines = ["Every shared real dataset through its config alone (`python experiments/dataset_summary.py --out experiments/results/datasets_real.json`): rows per",
             "split, vocabulary size per field (PAD and OOV rows included; `seq L` = sequence field of max_len L),",
             "embedding rows, and the teacher's test AUC after ONE KDEF (K=3) epoch — a smoke number, not a result.",
             "",
             "| config | rows train / valid / test | embedding rows | vocabulary sizes (PAD+OOV included) | 1-epoch test AUC |",
             "|---|---|---|---|---|"]
    for r in rows:
        n = r["num_rows"]
        sizes = ", ".join(f"{k} {v:,}" + (f" (seq {r['sequence_fields'][k]})" if k in r["sequence_fields"] else "")
                          for k, v in r["fields"].items())
        auc = f"{r['one_epoch_test_auc']:.4f}" if r["one_epoch_test_auc"] is not None else "n/a"
        lines.append(f"| `{r['config']}` | {n.get('train', 0):,} / {n.get('valid', 0):,} / {n.get('test', 0):,} | "
                     f"{r['total_vocab']:,} | {sizes} | {auc} |")
    write_atomic(out.with_suffix(".md"), lambda fh: fh.write("\n".join(lines) + "\n"))


if __name__ == "__main__":
    tolerant_stdio()
    main()
