"""Command line: a trained run → one serialized predictor file for serving.

    python -m kdef_jax.export_run --workdir runs/frappe --what best --fold-bn

Loads the run's best epoch (``export.load_run``), builds the predictor of the ensemble (formed as
the run's loss.variant forms it: ``kdef_jax.losses.fusion_of``), of the best student by validation
AUC (``--what best``, from results.json) or of student K (``--what K``), optionally with BatchNorm
folded into the Dense layers (``--fold-bn``), and writes its ``jax.export``
serialization (StableHLO with the weights as constants, batch dimension symbolic, lowered for
``--platforms``, by default cpu, cuda and tpu) to ``--out``
(default ``<workdir>/predictor_<ensemble|studentK>[_folded].jaxexport``), plus ``<out>.json``: which network, its input
columns, the feature map to encode raw rows with, and a check that the reloaded file predicts what
the library does on random ids (max |Δp|). Serve it with ``jax.export.deserialize(blob).call(ids)``
(ids int32 [B, C]: field by field, id i + 1 is the run's vocab.json[field][i], 0 PAD, the last id OOV;
``kdef_jax.score_run`` encodes raw files so), no kdef_jax needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from kdef_jax.checkpoint import CheckpointError, Checkpoints
from kdef_jax.export import EXPORT_PLATFORMS, export_predictor, load_exported, load_run, make_predictor
from kdef_jax.losses import fusion_of
from kdef_jax.report import tolerant_stdio
from kdef_jax.run_files import check_output, error_text, exit_interrupted, read_run_config, write_atomic, write_json


def resolve_what(what: str, results: dict, num_students: int):
    """'ensemble' | 'best' | a student index → 'ensemble' or an int in [0, K)."""
    if what == "ensemble":
        return what
    if what == "best":
        if "best_student_index" not in results:
            raise ValueError("--what best: the run has no results.json with best_student_index "
                             "(it did not finish); pass a student index instead")
        return int(results["best_student_index"])
    try:
        k = int(what)
    except ValueError:
        raise ValueError(f"--what {what!r}: use ensemble, best or a student index") from None
    if not 0 <= k < num_students:
        raise ValueError(f"--what {k}: the model has students 0..{num_students - 1}")
    return k


def best_epoch(workdir: Path) -> int | None:
    """The epoch of the run's best checkpoint (None without one)."""
    ckpt = Checkpoints(workdir, create=False)
    try:
        return ckpt.steps()["best"]
    finally:
        ckpt.close()


def random_ids(vocab_sizes, max_lens, rows: int, seed: int = 0) -> np.ndarray:
    """int32 [rows, C] ids valid for the feature map (0 = PAD included), one column per id slot."""
    rng = np.random.default_rng(seed)
    lens = max_lens if max_lens is not None else (1,) * len(vocab_sizes)
    cols = [rng.integers(0, v, size=rows) for v, n in zip(vocab_sizes, lens) for _ in range(n)]
    return np.stack(cols, 1).astype(np.int32)


def export_run(workdir, what: str = "ensemble", fold_bn: bool = False, out=None, check_rows: int = 256,
               platforms=EXPORT_PLATFORMS) -> dict:
    """Write the predictor file and its JSON description; returns the description."""
    workdir = Path(workdir)
    platforms, here = tuple(platforms), jax.export.default_export_platform()
    unknown = [p for p in platforms if p not in ("cpu", "cuda", "rocm", "tpu")]
    if unknown or here not in platforms:
        raise ValueError(f"--platforms {','.join(platforms)}: " + (f"unknown {unknown}; use cpu, cuda, rocm, tpu" if unknown
                         else f"include this host's {here!r}: the file is checked here before it is written"))
    model, variables, fmap, results = load_run(workdir)
    epoch = best_epoch(workdir)
    fusion = fusion_of(read_run_config(workdir).loss.variant)  # the ensemble the run trained and evaluated
    target = resolve_what(what, results, model.num_students)
    name = "ensemble" if target == "ensemble" else f"student{target}"
    default = workdir / f"predictor_{name}{'_folded' if fold_bn else ''}.jaxexport"
    out = check_output(Path(out) if out else default, "--out", workdir=workdir)
    blob = export_predictor(model, variables, fmap.num_columns, target, fold_bn=fold_bn, fusion=fusion, platforms=platforms)
    ids = jnp.asarray(random_ids(model.vocab_sizes, model.max_lens, check_rows))
    want = make_predictor(model, variables, target, fusion=fusion)(ids)  # unfolded: the check covers the fold too
    got = load_exported(blob)(ids)
    diff = float(jnp.max(jnp.abs(got - want)))
    # a bf16 run's folded network rounds at other places than its unfolded one (~1e-3 in probability)
    tol = 1e-4 if model.compute_dtype == "float32" or not fold_bn else 1e-2
    if not diff <= tol:
        raise FloatingPointError(f"exported predictor differs from the model by {diff:.3g} on random ids (allowed "
                                 f"{tol:g} in {model.compute_dtype} compute): not written")
    write_atomic(out, lambda fh: fh.write(blob), binary=True)
    info = {
        "file": str(out), "bytes": len(blob), "what": name, "fold_bn": fold_bn, "platforms": list(platforms),
        **({"fusion": fusion} if target == "ensemble" else {}),
        "num_students": model.num_students, "num_columns": fmap.num_columns, "compute_dtype": model.compute_dtype,
        "input": "int32 ids [B, num_columns]: the fields of feature_map.json in order, one column each, a sequence "
                 "field max_len columns (its first max_len tokens, then 0); per field id i+1 = vocab.json[field][i], "
                 "0 PAD, last id OOV; output: click probability [B]",
        "finished": bool(results), "epoch": epoch,
        "feature_map": str(workdir / "feature_map.json"), "workdir": str(workdir),
        "vocab": str(workdir / "vocab.json") if (workdir / "vocab.json").is_file() else None,
        "check": {"rows": check_rows, "max_abs_diff": diff}, "jax": jax.__version__,
    }
    if target != "ensemble" and "rows" in results:
        info["test_auc"] = results["rows"][1 + target].get("test_auc")
    elif "rows" in results:
        info["test_auc"] = results["rows"][0].get("test_auc")
    write_json(Path(f"{out}.json"), info)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kdef_jax.export_run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="a finished (or checkpointed) kdef_jax.main workdir")
    ap.add_argument("--what", default="ensemble", help="ensemble | best | a student index (default ensemble)")
    ap.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the Dense before it (fewer ops)")
    ap.add_argument("--out", default=None, help="predictor file (default <workdir>/predictor_<ensemble|studentK>[_folded].jaxexport)")
    ap.add_argument("--platforms", default=",".join(EXPORT_PLATFORMS),
                    help=f"where the file may run, comma-separated from cpu, cuda, rocm, tpu (default {','.join(EXPORT_PLATFORMS)})")
    args = ap.parse_args(argv)
    try:
        info = export_run(args.workdir, args.what, args.fold_bn, args.out,
                          platforms=tuple(p.strip() for p in args.platforms.split(",") if p.strip()))
    except (ValueError, FileNotFoundError, FloatingPointError, CheckpointError, OSError) as e:
        print(error_text("kdef_jax.export_run", e), file=sys.stderr)  # (an unreported OSError re-raised)
        return 2
    except KeyboardInterrupt:
        exit_interrupted("\nkdef_jax.export_run: interrupted (its output files are written whole or not at all): run "
                         "the same command again")
    print(f"wrote {info['file']} ({info['bytes']:,} bytes): {info['what']}{' (BatchNorm folded)' if args.fold_bn else ''}, "
          f"{info['num_columns']} input columns; reloaded file vs model on {info['check']['rows']} random rows: "
          f"max |dp| {info['check']['max_abs_diff']:.2g}")
    if not info["finished"]:
        print(f"note: the run has not finished (no results.json): this is its best epoch so far, epoch {info['epoch']}; "
              f"export again once it has", file=sys.stderr)
    return 0


if __name__ == "__main__":
    tolerant_stdio()
    sys.exit(main())
