"""Command line: score a new raw file with a trained run.

    python -m kdef_jax.score_run --workdir runs/frappe --input new_rows.libfm [--what best] [--out preds.csv]

The file is read exactly as the run's training data was (its ``config.json``: format, columns,
transforms, label rule, bad-row policy) and encoded with the run's vocabulary (``vocab.json``, written
beside its checkpoints): a value seen in training gets the id the model learned, any other value its
field's OOV id. The file needs the label column of that format (libFM: the first token); with both
classes present the command reports AUC and logloss of the ensemble and of every student on it.
``--unlabeled`` (delimited files, e.g. Kaggle Criteo's test.txt): the file has no label column; it is
read through a copy with a column of zeros appended, and the CSV has no label column.

Writes ``--out`` (default ``<workdir>/scores_<input name>.csv``): one line per scored row, in file
order — ``row,line,label,probability_<what>`` (``probability_ensemble``, ``probability_student3``).
``row`` numbers the scored rows from 0; ``line`` is the row's 1-based line in ``--input``, the key
that joins scores back to the file when rows were left out (the label rule drops them,
``on_bad_rows='skip'`` skips them; both are counted). The probability is that of ``--what``: the
ensemble (σ(mean logit); the sum / mean_prob baselines' own fusion, ``kdef_jax.losses.fusion_of``),
``best`` (the best student by validation AUC) or a student index. Beside it,
``<out>.json``: the metrics (``null`` where undefined: AUC of a one-class file), the rows scored, skipped
and dropped, and each field's share of OOV ids (values training never saw, and missing values, which
training maps to OOV as well).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import types
from pathlib import Path

import ml_collections
import numpy as np

from kdef_jax import interrupts
from kdef_jax.checkpoint import CheckpointError
from kdef_jax.data.dataset import default_cache_dir, load_dataset
from kdef_jax.data.packed import check_vocab_file
from kdef_jax.data.schema import DataFormatError, EmptySplitError, open_raw
from kdef_jax.export import load_run
from kdef_jax.export_run import resolve_what
from kdef_jax.losses import fusion_of
from kdef_jax.metrics import ensemble_metrics, ensemble_prob64, sigmoid64
from kdef_jax.report import student_names, tolerant_stdio
from kdef_jax.run_files import (check_output, error_text, exit_interrupted, read_json, read_run_config, write_atomic,
                                write_json)
from kdef_jax.steps import make_predict_step
from kdef_jax.train import predict_logits

FORMATS = ("libfm", "delimited", "movielens")

CSV_CHUNK = 1 << 20  # rows formatted at a time by score_run's CSV writer


def run_vocab(workdir: Path, config, fmap) -> dict:
    """The run's vocabulary: ``<workdir>/vocab.json``, else the dataset cache it was trained from."""
    cache_root = Path(config.data.cache_dir).expanduser() if config.data.cache_dir else default_cache_dir()
    places = [workdir / "vocab.json",
              cache_root / f"{fmap.dataset_id}-{fmap.info.get('cache_key', '')}" / "vocab.json"]
    for path in places:
        if path.is_file():
            vocab = read_json(path)
            check_vocab_file(path, fmap)
            return vocab
    raise FileNotFoundError(f"{workdir}: no vocab.json (looked in {', '.join(map(str, places))}); "
                            f"retrain with this version, which writes it beside the checkpoints")


def scoring_data_config(config, input_path: Path, config_path: Path | None = None):
    """The run's ``config.data`` (read from ``config_path``, which errors name) with ``input_path`` as its
    only (test) file."""
    data = ml_collections.ConfigDict(config.data.to_dict())
    if data.format not in FORMATS:
        raise ValueError(f"{config_path or 'the run'}: data.format={data.format!r}, but score_run reads "
                         f"{', '.join(FORMATS)} files")
    if not input_path.is_file():
        raise FileNotFoundError(f"--input {input_path}: no such file")
    data.files.train, data.files.valid, data.files.test = "", "", str(input_path.resolve())
    data.split = "files"
    if data.format == "delimited" or (data.format == "libfm" and not data.featindex):
        data.data_dir, data.subdir = str(input_path.resolve().parent), ""  # the file alone is read: no training data needed
    return data


def check_label_column(path: Path, data) -> None:
    """A headerless delimited file one column short of the run's: most likely unlabeled; say so."""
    if data.format != "delimited" or data.header:
        return
    names = list(data.column_names)
    with open_raw(str(path)) as src:
        first = next((line.rstrip(b"\r\n") for line in src if line.strip()), b"")
    n = len(first.split(data.delimiter.encode(data.encoding))) if first else 0
    if n == len(names) - 1:
        raise ValueError(f"{path}:1: {n} columns, one fewer than the run's data with its label column "
                         f"{data.label_column!r}; pass --unlabeled for a file without labels")


def with_zero_labels(path: Path, data, tmp_dir: Path) -> Path:
    """A copy of the unlabeled delimited file ``path`` with a label column of zeros appended to every
    line (in the header, or last in ``data.column_names``, which is changed to match); the same line
    numbers. ``data.label_rule`` becomes binary (the run's rule need not know "0")."""
    label, delim = data.label_column, data.delimiter.encode(data.encoding)
    names = list(data.column_names)
    if not data.header:
        data.column_names = tuple(n for n in names if n != label) + (label,)
    data.label_rule = "binary"
    out = tmp_dir / path.name
    with open_raw(str(path)) as src, open(out, "wb") as dst:
        for i, line in enumerate(src):
            body = line.rstrip(b"\r\n")
            if i == 0 and data.header:
                if label.encode(data.encoding) in body.split(delim):
                    raise ValueError(f"{path}:1: the header has the label column {label!r}; drop --unlabeled")
                dst.write(body + delim + label.encode(data.encoding) + b"\n")
                continue
            if i == 0 and not data.header and body and len(body.split(delim)) == len(names):
                raise ValueError(f"{path}:1: {len(names)} columns, as many as the run's data with its label column "
                                 f"{label!r}; drop --unlabeled (it expects the {len(names) - 1} columns without it)")
            elif body:
                dst.write(body + delim + b"0\n")
            else:
                dst.write(b"\n")
    return out


class UserFile:
    """Messages about the file read (``read``), told of the user's file ``path``: the copy --unlabeled
    reads (``copy``) has one column more on every line, the zero label, which is not counted."""

    def __init__(self, read: str, path: Path, copy: bool):
        self.read, self.path, self.copy = read, str(Path(path).resolve()), copy

    def text(self, message: str) -> str:
        if not self.copy:
            return message
        message = re.sub(r"expected (\d+) columns, found (\d+)",
                         lambda m: f"expected {int(m[1]) - 1} columns, found {int(m[2]) - 1}", message)
        return re.sub(re.escape(self.read) + r"(?![\w.-])", lambda m: self.path, message)  # not a longer path


def oov_shares(x: np.ndarray, fmap) -> dict:
    """{field: share of its ids that are its OOV id} (a sequence field: of its non-PAD ids)."""
    out, col = {}, 0
    for f in fmap.fields:
        ids = np.asarray(x[:, col : col + f.max_len])
        used = ids[ids != 0] if f.type == "sequence" else ids
        out[f.name] = float((used == f.oov_index).mean()) if used.size else 0.0
        col += f.max_len
    return out


def score_run(workdir, input_path, what: str = "ensemble", out=None, checkpoint: str = "best",
              batch_size: int = 0, unlabeled: bool = False, log=print) -> dict:
    """Score ``input_path`` with the run in ``workdir``; writes the CSV and its JSON, returns the JSON."""
    workdir, input_path = Path(workdir), Path(input_path)
    config = read_run_config(workdir)
    if checkpoint not in ("best", "latest"):
        raise ValueError(f"--checkpoint {checkpoint!r}: use 'best' or 'latest'")
    if batch_size < 0:
        raise ValueError(f"--batch-size {batch_size}: must be >= 1 (or 0: the run's eval batch size)")
    out = check_output(Path(out) if out else workdir / f"scores_{input_path.name}.csv", "--out",
                       inputs=(input_path,), workdir=workdir)
    data = scoring_data_config(config, input_path, workdir / "config.json")
    if unlabeled and data.format != "delimited":
        raise ValueError(f"--unlabeled reads delimited files; the run's data.format is {data.format!r}")
    model, variables, fmap, results = load_run(workdir, checkpoint, warn=log)
    target = resolve_what(what, results, model.num_students)
    vocab = run_vocab(workdir, config, fmap)
    with tempfile.TemporaryDirectory(prefix="kdef_score_") as tmp:  # the file's ids live only as long as this
        data.cache_dir = tmp
        if unlabeled:
            data.files.test = str(with_zero_labels(input_path, data, Path(tmp)))
        else:
            check_label_column(input_path, data)
        user = UserFile(data.files.test, input_path, copy=unlabeled)
        try:
            ds = load_dataset(data, log=lambda msg: log(user.text(msg)), vocab=vocab, keep_lines=True)
        except EmptySplitError as e:  # every row skipped, dropped by the label rule, or a header alone
            raise ValueError(f"{input_path}: no rows to score{e.why}") from None
        except ValueError as e:  # DataFormatError included: name the user's file, not the copy
            if not unlabeled:
                raise
            kind = DataFormatError if isinstance(e, DataFormatError) else ValueError
            raise kind(user.text(str(e))) from None
        if ds.feature_map.vocab_sizes != fmap.vocab_sizes or ds.feature_map.max_lens != fmap.max_lens:
            raise ValueError(f"{input_path}: encoded with {ds.feature_map.vocab_sizes}, the run has {fmap.vocab_sizes}")
        split = ds.splits.get("test")
        if split is None or len(split) == 0:
            raise ValueError(f"{input_path}: no rows left to score ({ds.feature_map.num_rows})")
        state = types.SimpleNamespace(params=variables["params"], batch_stats=variables["batch_stats"])
        bs = min(batch_size or config.train.eval_batch_size or config.train.batch_size, len(split))  # no padding beyond the file
        logits = predict_logits(make_predict_step(model), state, split, bs, progress=True, desc="score")
        labels, lines, oov, rows = np.array(split.y), np.array(split.line), oov_shares(split.x, fmap), len(split)
    fusion = fusion_of(config.loss.variant)  # the ensemble the run trained and evaluated
    probs = ensemble_prob64(logits, fusion) if target == "ensemble" else sigmoid64(logits[target])
    name = "ensemble" if target == "ensemble" else f"student{target}"

    def write_csv(fh):  # CSV_CHUNK rows at a time: Python lists of all rows would cost ~100 B a row more
        fh.write(f"row,line,probability_{name}\n" if unlabeled else f"row,line,label,probability_{name}\n")
        for lo in range(0, rows, CSV_CHUNK):
            part = slice(lo, min(lo + CSV_CHUNK, rows))
            ns, ps = lines[part].tolist(), probs[part].tolist()
            if unlabeled:
                fh.writelines(f"{i},{n},{p:.8g}\n" for i, n, p in zip(range(lo, rows), ns, ps))
            else:
                fh.writelines(f"{i},{n},{int(y)},{p:.8g}\n"
                              for i, n, y, p in zip(range(lo, rows), ns, labels[part].tolist(), ps))

    write_atomic(out, write_csv)
    info = {
        "input": str(input_path.resolve()), "workdir": str(workdir), "checkpoint": checkpoint, "what": name,
        "out": str(out), "rows_scored": rows, "skipped_rows": {user.text(k): v for k, v in ds.feature_map.skipped_rows.items()},
        "dropped_by_label_rule": ds.feature_map.info.get("dropped_by_label_rule", {}),
        "oov_share": oov, "mean_probability": float(probs.mean()),
    }
    if not unlabeled:
        metrics = ensemble_metrics(labels, logits, fusion)
        names = student_names(model.groups)
        info["positive_rate"] = float(labels.mean())
        info["metrics"] = {"ensemble": metrics["teacher"], **dict(zip(names, metrics["students"]))}
        log("\n".join([f"{'model':>14}  {'auc':>10}  {'logloss':>10}"] + [
            f"{n:>14}  {m['auc']:>10.6f}  {m['logloss']:>10.6f}" for n, m in info["metrics"].items()]))
    write_json(Path(f"{out}.json"), info)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kdef_jax.score_run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="a kdef_jax.main run (its best epoch is used)")
    ap.add_argument("--input", required=True, help="a raw file in the run's data format, label column included")
    ap.add_argument("--what", default="ensemble", help="whose probability to write: ensemble | best | a student index (CSV column probability_ensemble | probability_studentK)")
    ap.add_argument("--out", default=None, help="CSV to write (default <workdir>/scores_<input name>.csv)")
    ap.add_argument("--checkpoint", default="best", help="best (default) or latest")
    ap.add_argument("--batch-size", type=int, default=0, help="rows per predict call (default: the run's eval batch)")
    ap.add_argument("--unlabeled", action="store_true", help="a delimited file without the label column")
    args = ap.parse_args(argv)
    try:
        with interrupts.remembered():  # a Ctrl-C swallowed by a gc callback is raised again at the next batch
            info = score_run(args.workdir, args.input, args.what, args.out, args.checkpoint, args.batch_size,
                             args.unlabeled)
    except (ValueError, FileNotFoundError, CheckpointError, OSError) as e:
        print(error_text("kdef_jax.score_run", e), file=sys.stderr)  # (an unreported OSError re-raised)
        return 2
    except KeyboardInterrupt:
        exit_interrupted("\nkdef_jax.score_run: interrupted (its output files are written whole or not at all): run "
                         "the same command again")
    oov = ", ".join(f"{k} {v:.2%}" for k, v in info["oov_share"].items() if v > 0) or "none"
    print(f"wrote {info['out']}: {info['rows_scored']:,} rows, probability of "
          f"{'the ensemble' if info['what'] == 'ensemble' else info['what'].replace('student', 'student ')}; "
          f"OOV ids (values unseen in training or missing): {oov}")
    return 0


if __name__ == "__main__":
    tolerant_stdio()
    sys.exit(main())
