"""Does a predictor file exported on one host serve on another platform? (export_run's default
``--platforms cpu,cuda,tpu``.)

    python benchmarks/served_file.py --make .gpu_carry      # here, on CPU: the file, ids and its predictions
    python benchmarks/served_file.py --check .gpu_carry --out served.json   # there (gpu_check.sh PART=open)

``--make`` builds a small KDEF model (3 MLP students [64, 64] on 8 fields, random weights with its
BatchNorm statistics perturbed), exports the ensemble's predictor with ``export.export_predictor``'s
default platforms and saves ``predictor.jaxexport``, ``ids.npy`` (512 rows) and ``expected.npy`` (the
exporting host's probabilities). ``--check`` loads the file with jax alone (no kdef_jax import), calls
it on the default device and records max |Δp| against the exporting host's probabilities.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import jax
import numpy as np

VOCAB = (50, 40, 30, 20, 60, 10, 25, 35)


def make(folder: Path) -> dict:
    from kdef_jax.export import export_predictor, make_predictor
    from kdef_jax.models.ensemble import KDEFModel, StudentGroup

    kw = (("batch_norm", True), ("dropout", 0.1), ("hidden_units", (64, 64)))
    model = KDEFModel(vocab_sizes=VOCAB, groups=(StudentGroup("mlp", 3, kw),), embedding_dim=8, embedding_init_std=0.3)
    rng = np.random.default_rng(0)
    ids = np.stack([rng.integers(0, v, 512) for v in VOCAB], 1).astype(np.int32)
    variables = model.init(jax.random.PRNGKey(0), ids[:2], False)
    stats = jax.tree.map(lambda x: x + 0.1 * jax.random.uniform(jax.random.PRNGKey(1), x.shape), variables["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": stats}
    blob = export_predictor(model, variables, len(VOCAB))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictor.jaxexport").write_bytes(blob)
    np.save(folder / "ids.npy", ids)
    np.save(folder / "expected.npy", np.asarray(make_predictor(model, variables)(ids)))
    return {"folder": str(folder), "bytes": len(blob), "platforms": list(jax.export.deserialize(blob).platforms),
            "made_on": jax.default_backend()}


def check(folder: Path) -> dict:
    exp = jax.export.deserialize((folder / "predictor.jaxexport").read_bytes())
    ids = np.load(folder / "ids.npy")
    got = np.asarray(exp.call(jax.device_put(ids)))
    want = np.load(folder / "expected.npy")
    return {"platform": jax.default_backend(), "device": str(jax.devices()[0].device_kind), "host": platform.node(),
            "file_platforms": list(exp.platforms), "rows": int(ids.shape[0]),
            "max_abs_diff": float(np.max(np.abs(got.astype(np.float64) - want))), "jax": jax.__version__}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make", type=Path, help="write the file, ids and expected probabilities into this folder")
    ap.add_argument("--check", type=Path, help="serve the file in this folder on the default device")
    from kdef_jax.run_files import output_file_arg, write_json

    ap.add_argument("--out", default=None, type=output_file_arg, help="JSON path for the record of --make or --check")
    a = ap.parse_args(argv)

    if (a.make is None) == (a.check is None):
        ap.error("give exactly one of --make and --check")
    if a.make is not None and a.make.exists() and not a.make.is_dir():
        ap.error(f"--make {a.make}: a file, not a folder")
    if a.check is not None:
        missing = [n for n in ("predictor.jaxexport", "ids.npy", "expected.npy") if not (a.check / n).is_file()]
        if missing:
            ap.error(f"--check {a.check}: no {', '.join(missing)} there (write them with --make {a.check})")
    record = make(a.make) if a.make else check(a.check)
    if a.make:
        print(f"wrote {a.make}/predictor.jaxexport ({record['bytes']:,} bytes, platforms {','.join(record['platforms'])}), "
              f"ids.npy, expected.npy (made on {record['made_on']})")
    else:
        print(f"served on {record['platform']} ({record['device']}): file platforms {','.join(record['file_platforms'])}, "
              f"{record['rows']} rows, max |dp| vs the exporting host {record['max_abs_diff']:.2g}")
    if a.out:
        write_json(Path(a.out), record)


if __name__ == "__main__":
    main()
