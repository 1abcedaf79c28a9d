"""``train_and_evaluate(config, workdir) -> results``: the library entry point (FuxiCTR ``fit`` rules).

Per epoch: train on a fresh permutation; evaluate the teacher (the ensemble: σ of the mean logit, or
the ensemble baselines' ``fusion_of(loss.variant)``) and every student on validation; the TEACHER's
validation AUC alone drives everything: an improvement of at least ``min_delta`` saves the best
checkpoint and resets the counter; otherwise LR ×= 0.1 (floor 1e-6, Adam moments kept) and the
counter grows; ``patience`` (2) consecutive non-improving epochs stop the run. Then the best epoch
is restored and evaluated on validation and test. With ``config.distributed`` every process runs this
same function (kdef_jax/distributed.py); process 0 alone logs and writes the result files.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import platform
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from kdef_jax.checkpoint import CheckpointError, Checkpoints
from kdef_jax.config import base_config, validate
from kdef_jax.data.dataset import load_dataset
from kdef_jax.data.feature_map import FeatureMap
from kdef_jax.data.packed import check_vocab_file, vocab_sha256
from kdef_jax.data.loader import epoch_permutation, iterate_batches, num_batches, prefetch
from kdef_jax.losses import DISTILLING_VARIANTS, fusion_of
from kdef_jax.metrics import ensemble_metrics
from kdef_jax.models.ensemble import build_model
from kdef_jax.models.registry import code_digests
from kdef_jax import distributed, interrupts, report, sharding, workdir_lock
from kdef_jax.run_files import (RUN_FILES, STUDENT_CODE, config_changes, read_json, read_run_config, student_code_changes,
                                 write_atomic, write_json)
from kdef_jax.steps import count_params, make_predict_step, make_training, set_learning_rate


# Train steps dispatched ahead of the devices, at most. XLA:CPU lets a device queue 32 computations;
# with more in flight, a device's launch of step n can wait behind later launches that wait, through
# the collectives, for step n: every process of a multi-process run hangs (reproduced with the
# checkpoint's per-array sums, 100 in flight). 8 keeps the devices fed (a step is milliseconds of
# dispatch and far more of compute) and far from that limit.
IN_FLIGHT_STEPS = 8

# What a command reports in one line (error_text): our errors name their file, line or key; an OSError
# that names no file is re-raised by error_text with its traceback
REPORTED_ERRORS = (ValueError, FileNotFoundError, FileExistsError, FloatingPointError, CheckpointError, ImportError, OSError)


def predict_logits(predict, state, split, batch_size: int, *, progress: bool = False, desc: str = "eval",
                   rows_to=None) -> np.ndarray:
    """Student logits [K, N] for a whole split (eval mode). Each batch's [K, B] is copied into one [K, N]
    host array two batches behind the device (which keeps computing meanwhile), so the host holds the
    logits once, not a list of batches and their concatenation. ``rows_to``: where each ids batch goes
    (a mesh's row split; None = the default device)."""
    out, done, pending = None, 0, collections.deque()

    def fetch(z):
        nonlocal out, done
        z = np.asarray(sharding.to_host(z))
        if out is None:
            out = np.empty((z.shape[0], len(split)), z.dtype)
        take = min(z.shape[1], len(split) - done)  # the padded last batch's extra rows are dropped
        out[:, done:done + take] = z[:, :take]
        done += take

    batches = prefetch(iterate_batches(split, batch_size), 2, transform=lambda b: sharding.to_mesh(b["ids"], rows_to))
    for ids in tqdm(batches, total=num_batches(len(split), batch_size), desc=desc, unit="batch", leave=False,
                    disable=report.bar_disabled(progress)):
        interrupts.raise_if_pending()
        pending.append(predict(state.params, state.batch_stats, ids))
        if len(pending) > 2:
            fetch(pending.popleft())
    while pending:
        fetch(pending.popleft())
    if out is None:
        raise ValueError(f"{desc}: the split has no rows to predict")
    return out


def evaluate(predict, state, split, batch_size: int, fusion: str = "mean_logit", **kw) -> dict:
    return ensemble_metrics(split.y, predict_logits(predict, state, split, batch_size, **kw), fusion)


def _check_labels(ds) -> None:
    for name, s in ds.splits.items():
        y = np.asarray(s.y)
        bad = ~((y == 0) | (y == 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{ds.cache_dir}/{name}_y.npy: row {i} has label {y[i]!r}; labels must be 0 or 1")


def _check_classes(ds, name: str, log) -> None:
    """AUC needs both labels: the validation AUC drives the schedule (an error), the test AUC is reported."""
    for split in ("valid", "test"):
        y = np.asarray(ds.splits[split].y) if split in ds.splits else np.zeros(0)
        if len(y) and y.min() == y.max():
            msg = (f"dataset {name!r}: all {len(y):,} {split} rows have label {int(y[0])}, so their AUC is "
                   f"undefined; check config data.files / data.split")
            if split == "valid":
                raise ValueError(msg + " (the teacher's validation AUC drives the learning-rate decay, "
                                 "early stopping and the best checkpoint)")
            log(f"[data] warning: {msg}")


def _check_vocabulary(fmap, data, log) -> None:
    """A field whose every value falls below its min_count keeps no value: each of its ids is OOV. All
    fields so is an error (the model could only learn the positive rate), some a warning naming them."""
    empty = [f.name for f in fmap.fields if f.vocab_size <= 2]  # PAD and OOV only
    if empty and len(empty) == len(fmap.fields):
        raise ValueError(f"config data.min_count={data.min_count}: no field of dataset {data.name!r} keeps a value "
                         f"(none is seen that often in the training rows), so every id would be OOV; lower it")
    if empty:
        log(f"[data] warning: fields {', '.join(empty)} keep no value at their min_count (data.min_count "
            f"{data.min_count}, or data.field_options.<field>.min_count): each of their ids is OOV")


def _shared_config(c) -> dict:
    """The config every process of a run must share: all of it but its own process_id and the folders
    that may lie elsewhere on each host (data.data_dir, data.cache_dir)."""
    d = json.loads(c.to_json())
    d["distributed"].pop("process_id", None)
    d["data"].pop("data_dir", None)
    d["data"].pop("cache_dir", None)
    return d


def _data_fingerprint(ds) -> dict:
    """What makes two processes' caches the same data: the feature map's fields and rows, and the CRCs
    of the arrays (checksums.json; a cache built before it existed has the feature map alone)."""
    fmap, sums = ds.feature_map, ds.cache_dir / "checksums.json"
    return {"fields": [(f.name, f.vocab_size, f.max_len) for f in fmap.fields], "rows": fmap.num_rows,
            "vocab": fmap.info.get("vocab_sha256"), "arrays": read_json(sums) if sums.exists() else None}


def _batch_sizes(t, ds, mesh) -> tuple[int, int]:
    """(train, eval) batch sizes: the config's, but no larger than the split they batch, rounded up to the
    mesh's data axis. A larger batch would only add masked padding rows (train.batch_size 2**31 - 1 would
    allocate 128 GiB), which change neither the loss, the BatchNorm statistics nor the hash dropout masks
    of the real rows; a split of n rows then trains in one step, as it would anyway."""
    ways = mesh.shape["data"] if mesh is not None else 1
    up = lambda n: -(-max(n, 1) // ways) * ways  # noqa: E731
    held_out = max(len(ds.splits[s]) for s in ("valid", "test") if s in ds.splits)
    return min(t.batch_size, up(len(ds.splits["train"]))), min(t.eval_batch_size or t.batch_size, up(held_out))


def _fresh_meta(lr: float) -> dict:
    # configured_lr: the optim.learning_rate the checkpointed run was (last) started with, for resume
    return {"epoch": 0, "lr": lr, "configured_lr": lr, "best_auc": -math.inf, "best_epoch": 0, "bad_epochs": 0,
            "lr_decays": 0, "history": [], "train_time_s": 0.0, "timed_rows": 0, "timed_s": 0.0}


def plateau_update(meta: dict, epoch: int, auc: float, o) -> bool:
    """FuxiCTR's per-epoch rule, in place on ``meta``; returns whether the epoch improved.

    Improvement: auc ≥ best + min_delta (the reference's ``m < best + 1e-6`` is "no gain"). No gain:
    lr ← min(lr, max(lr·lr_decay, min_lr)) (a rate already below min_lr is kept, never raised) and
    bad_epochs += 1; a gain resets bad_epochs, not the lr.
    """
    if auc >= meta["best_auc"] + o.min_delta:
        meta.update(best_auc=auc, best_epoch=epoch, bad_epochs=0)
        return True
    meta["bad_epochs"] += 1
    meta["lr_decays"] += 1
    meta["lr"] = min(meta["lr"], max(meta["lr"] * o.lr_decay, o.min_lr))
    return False


def _mean_metrics(ms: list) -> dict:
    host = sharding.to_host(ms)
    return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def train_speed(meta: dict) -> float:
    """Training rows/s over every step after the first one this process ran (that one compiles; a resumed
    run leaves out its own first step too); NaN when no such step ran (the process trained one step): a 0
    would read as a measured speed."""
    return meta["timed_rows"] / meta["timed_s"] if meta["timed_rows"] > 0 and meta["timed_s"] > 0 else float("nan")


def speed_text(samples_per_s: float) -> str:
    return f"{samples_per_s:,.0f} samples/s" if math.isfinite(samples_per_s) else "samples/s n/a (the only step run included compilation)"


def train_and_evaluate(config, workdir, *, log=report.console) -> dict:
    """Train ``config`` in ``workdir`` (or resume it) and evaluate the best epoch: results.json's dict.
    The workdir is locked for the run (kdef_jax/workdir_lock.py): a second run on it is refused."""
    with contextlib.ExitStack() as held:
        return _train_and_evaluate(config, workdir, log, held)


def _train_and_evaluate(config, workdir, log, held: contextlib.ExitStack) -> dict:
    t_start = time.perf_counter()
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(f"config: an ml_collections.ConfigDict (kdef_jax.config.base_config(), or a config file's "
                        f"get_config()), got {type(config).__name__}")
    validate(config)
    c, t = config, config.train
    distributed.initialize(c.distributed)
    main = distributed.is_main()
    if not main:
        log = _quiet
    progress = t.progress and main
    if not str(workdir).strip():  # Path("") is "." (the current folder): never a run's folder by accident
        raise ValueError("the run's workdir is empty; give its folder")
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise FileExistsError(f"the run's workdir {workdir} is a file; give a folder (nothing was overwritten)")
    ds = distributed.main_first(lambda: load_dataset(c.data, log=log), "kdef_jax: dataset cache")
    # first: a check below that one process fails alone would leave the others waiting in a collective
    distributed.check_same_everywhere({"config": _shared_config(c), "data": _data_fingerprint(ds)})
    _check_labels(ds)
    for s in ("train", "valid"):
        if s not in ds.splits or len(ds.splits[s]) == 0:
            raise ValueError(f"dataset {c.data.name!r} has no {s} rows; check config data.files / data.split")
    _check_classes(ds, c.data.name, log)
    fmap = ds.feature_map
    _check_vocabulary(fmap, c.data, log)
    mesh = sharding.make_mesh(c.mesh, {"train.batch_size": t.batch_size,
                                       "train.eval_batch_size": t.eval_batch_size or t.batch_size})
    bs, ebs = _batch_sizes(t, ds, mesh)
    lookup = sharding.table_lookup(mesh, c.mesh)
    split_table = lookup is not None
    if split_table and not c.model.embedding_rows:  # pad to a multiple of the mesh; config.json records it
        c = c.copy_and_resolve_references()
        c.model.embedding_rows = sharding.table_rows(fmap.total_vocab, mesh)
    fusion = fusion_of(c.loss.variant)  # how the students form the ensemble that is evaluated
    model = build_model(c.model, fmap, concat_head=fusion == "concat")
    names = report.student_names(model.groups)
    rows_to = sharding.batch_sharding(mesh) if mesh is not None else None
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(c.seed))
    state, train_step = make_training(model, c, init_rng, fmap.num_columns, mesh)
    if mesh is not None:
        dropout_rng = sharding.to_mesh(dropout_rng, sharding.replicated(mesh))
    params = count_params(state.params)
    log(f"[devices] {sharding.describe(mesh, model.groups, split_table)}")
    if c.model.embedding_rows > fmap.total_vocab:
        log(f"[model] embedding table padded with {c.model.embedding_rows - fmap.total_vocab:,} zero rows "
            f"(model.embedding_rows {c.model.embedding_rows:,}); no id reaches them, they stay 0")
    log(f"[model] {len(names)} students: " + ", ".join(f"{g.name}" for g in model.groups))
    if c.loss.variant not in DISTILLING_VARIANTS and (c.loss.consistency, c.loss.huber_delta) != ("mse", 1.0):
        log(f"[config] warning: loss.consistency / loss.huber_delta have no effect under loss.variant="
            f"{c.loss.variant!r} (it has no distillation or mutual-learning term)")
    for k, v in params.items():
        log(f"[model] parameters {k:>16}: {v:,}")

    workdir.mkdir(parents=True, exist_ok=True)  # only once data, mesh and model are built: bad input leaves no empty run folder
    # held before any run file is read or written, until results and plot are written
    lock = held.enter_context(workdir_lock.held(workdir, log)) if main else None
    meta = _fresh_meta(c.optim.learning_rate)
    had_folder = (workdir / "checkpoints").exists()
    ckpt = Checkpoints(workdir)  # every process opens it alike: orbax synchronises the processes here
    changed = {}
    if c.resume and any(e is not None for e in ckpt.steps().values()):
        changed = config_changes(workdir, c, defaults=base_config())
        try:  # before the restore: its shape check would blame the model for a data change
            _check_same_ids(workdir, fmap, ds.cache_dir / "vocab.json", changed)
        except ValueError:
            ckpt.close()
            raise
    try:
        restored = ckpt.restore_newest(state) if c.resume else None
    except CheckpointError as e:  # arrays of other shapes: name the model keys changed since the run
        model = [f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items() if k.startswith("model.") or k == "loss.variant"]
        if not model:
            raise
        ckpt.close()
        raise CheckpointError(f"{e}\nthe run's config.json differs in {', '.join(model)}: resume with its values, or "
                              f"start a new --workdir") from None
    if restored is not None:
        state, meta, _, which = restored
        log(f"[train] resumed from epoch {meta['epoch']} (lr {meta['lr']:g}, best {meta['best_auc']:.6f})"
            + (" from checkpoints/best, which is ahead of checkpoints/latest" if which == "best" else ""))
        state = _apply_resume_changes(workdir, c, state, meta, log)
        if main:  # the log holds exactly the checkpointed epochs, whatever a crash left behind
            write_atomic(workdir / "metrics.jsonl", lambda fh: fh.writelines(map(report.jsonl_line, meta["history"])))
    else:
        try:
            _refuse_earlier_run(workdir, ckpt, c.resume)
        except FileExistsError:
            ckpt.close()
            if main and not had_folder:  # a refused workdir keeps no empty folders of ours
                for d in (ckpt.root / "latest", ckpt.root / "best", ckpt.root):
                    with contextlib.suppress(OSError):
                        d.rmdir()
            if lock is not None:  # nor a lock file it did not hold before
                lock.discard()
            raise
        if c.resume:
            log(f"[train] resume: no checkpoint in {ckpt.root}, starting fresh")
    if main:
        for warning in student_code_changes(workdir, c.model.student_modules) if c.resume else ():
            log(f"[train] {warning}")
        # atomic, as every run file: a resume rewrites both, and a kill then must not leave half of one
        write_atomic(workdir / "config.json", lambda fh: fh.write(c.to_json(indent=1)))
        if c.model.student_modules:  # what score_run / export_run check the students' code against
            code = json.dumps(code_digests(c.model.student_modules), indent=1)
            write_atomic(workdir / STUDENT_CODE, lambda fh: fh.write(code))
        fmap.save(workdir / "feature_map.json")  # with config.json: enough to rebuild the model (export.load_run)
        if (ds.cache_dir / "vocab.json").exists():  # the ids' meaning: what score_run encodes new files with
            write_atomic(workdir / "vocab.json", lambda fh: fh.write(check_vocab_file(ds.cache_dir / "vocab.json", fmap)),
                         binary=True)

    predict = make_predict_step(model, lookup)
    train, valid, test = ds.splits["train"], ds.splits["valid"], ds.splits.get("test")
    steps = num_batches(len(train), bs)
    if t.steps_per_epoch > 0:
        steps = min(steps, t.steps_per_epoch)
    first_step_done = False
    o = c.optim

    while meta["epoch"] < t.num_epochs and meta["bad_epochs"] < o.patience:
        epoch = meta["epoch"] + 1
        order = epoch_permutation(len(train), c.seed, epoch)
        batches = iterate_batches(train, bs, order=order)
        ms, rows_after_first, t_first = [], 0, None
        t0 = time.perf_counter()
        bar = tqdm(total=steps, desc=f"epoch {epoch}", unit="batch", leave=False, disable=report.bar_disabled(progress))
        for i, batch in enumerate(prefetch(batches, t.prefetch, transform=lambda b: sharding.to_mesh(b, rows_to))):
            if i >= steps:
                break
            interrupts.raise_if_pending()
            state, m = train_step(state, batch, dropout_rng)
            ms.append(m)
            if i >= IN_FLIGHT_STEPS:  # the host runs at most IN_FLIGHT_STEPS steps ahead of the devices
                jax.block_until_ready(ms[i - IN_FLIGHT_STEPS]["loss"])
            if not first_step_done:  # exclude compilation from the throughput figure
                jax.block_until_ready(m)
                first_step_done, t_first = True, time.perf_counter()
                log(f"[train] first step (compile included) {t_first - t0:.1f}s")
                bar.reset(total=steps)  # the bar's rate from here on, without the compilation
            else:
                rows_after_first += min(bs, len(train) - i * bs)
            if (i + 1) % t.log_every == 0:
                loss = float(m["loss"])
                if not math.isfinite(loss):
                    raise FloatingPointError(_nan_message(epoch, i + 1, meta, ckpt))
                bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(1)
        jax.block_until_ready(state)
        t_end = time.perf_counter()
        bar.close()
        timed_from = t_first if t_first is not None else t0
        meta["timed_rows"] += rows_after_first
        meta["timed_s"] += t_end - timed_from
        meta["train_time_s"] += t_end - t0
        tm = _mean_metrics(ms)
        bad = [k for k, v in tm.items() if not math.isfinite(v)]
        if bad:
            what = "training loss" if "loss" in bad else f"training {', '.join(bad)}"
            raise FloatingPointError(_nan_message(epoch, len(ms), meta, ckpt, what=what))

        logits = predict_logits(predict, state, valid, ebs, progress=progress, desc="valid", rows_to=rows_to)
        if not np.isfinite(logits).all():  # the last steps blew the params up: this state must not be saved
            raise FloatingPointError(_nan_message(epoch, len(ms), meta, ckpt, what="validation logits"))
        val = ensemble_metrics(valid.y, logits, fusion)
        auc = val["teacher"]["auc"]
        lr_used = meta["lr"]
        improved = plateau_update(meta, epoch, auc, o)
        if not improved:
            state = set_learning_rate(state, meta["lr"])
        record = {"epoch": epoch, "lr": lr_used, "train": tm, "val": val, "improved": improved,
                  "epoch_train_s": t_end - t0, "steps": len(ms)}
        meta["history"].append(record)
        meta["epoch"] = epoch
        ckpt.save(epoch, state, meta, best_auc=auc if improved else None)  # before the log line: a crash
        if main:                                                           # in between re-runs no logged epoch
            report.append_jsonl(workdir / "metrics.jsonl", record)
        students = " ".join(f"{s['auc']:.4f}" for s in val["students"])
        gain = "*" if improved else f"no gain ({meta['bad_epochs']})"
        log(f"[epoch {epoch:3d}] loss {tm['loss']:.5f}  val AUC {auc:.6f} logloss {val['teacher']['logloss']:.6f}"
            f"  students [{students}]  lr {lr_used:g}  {gain}"
            f"  {t_end - t0:.1f}s")

    if meta["best_epoch"] > 0:  # the final numbers are the best epoch's, or an error
        state = state.replace(opt_state=None)  # Adam's moments are not needed any more: freed before the read
        restored = ckpt.restore_variables("best", {"params": state.params, "batch_stats": state.batch_stats})
        if restored is None or restored[2] != meta["best_epoch"]:
            ckpt.close()
            held = "no checkpoint" if restored is None else f"epoch {restored[2]}"
            raise CheckpointError(
                f"{ckpt.root / 'best'} holds {held}, but the run's best epoch is {meta['best_epoch']}: its final "
                f"validation and test numbers need that epoch's state. Put that checkpoint back, or train anew "
                f"in a new --workdir")
        state = state.replace(**restored[0])
    ckpt.close()
    val = evaluate(predict, state, valid, ebs, fusion, progress=progress, desc="valid", rows_to=rows_to)
    tst = evaluate(predict, state, test, ebs, fusion, progress=progress, desc="test", rows_to=rows_to) if test is not None and len(test) else None
    summary = report.summarize(val, tst, names)
    throughput = train_speed(meta)
    results = {
        "dataset": c.data.name,
        "feature_map": {"num_rows": fmap.num_rows, "total_vocab": fmap.total_vocab, "num_fields": fmap.num_fields},
        "students": names,
        "num_students": len(names),
        "params": params,
        "variant": c.loss.variant,
        "fusion": fusion,
        "epochs_run": meta["epoch"],
        "best_epoch": meta["best_epoch"],
        "lr_decays": meta["lr_decays"],
        "final_lr": meta["lr"],
        **summary,
        "train_samples_per_s": throughput,
        "train_time_s": meta["train_time_s"],
        "wall_s": time.perf_counter() - t_start,
        "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
        "mesh": dict(mesh.shape) if mesh is not None else {"data": 1, "student": 1},
        "processes": jax.process_count(),
        "host": platform.node(),
        "cpu": report.host_cpu(),
        "software": report.software(),
        "seed": c.seed,
    }
    if not main:
        return results
    write_json(workdir / "results.json", results)
    log("\n" + report.format_table(summary))
    log(f"epochs {meta['epoch']} (best {meta['best_epoch']}), train {speed_text(throughput)}, "
        f"results in {workdir / 'results.json'}")
    if t.plot and meta["history"]:
        title = f"{c.data.name}: {c.loss.variant}, {len(names)} students ({', '.join(g.name for g in model.groups)})"
        if not report.plot_history(meta["history"], names, workdir / "curves.png", best_epoch=meta["best_epoch"], title=title):
            log("[plot] matplotlib is not installed, so no curves.png (pip install 'kdef-jax[plots]')")
    return results


def _quiet(*args, **kwargs) -> None:
    """The log of processes other than 0."""


def _check_same_ids(workdir: Path, fmap, vocab_path: Path, changed: dict | None = None) -> None:
    """A resumed run must encode its data as the checkpoint learned it: the fields of the run's
    feature_map.json and the tokens of its vocab.json (a changed data setting, e.g. data.min_count or
    data.pandas_na, can shift every id after a dropped token while the table keeps its shape).
    ``changed``: config_changes against the run's config.json, whose data.* keys the error names."""
    data = [f"{k} {a!r} -> {b!r}" for k, (a, b) in (changed or {}).items() if k.startswith("data.")]
    hint = (f"resume with the data settings of {workdir / 'config.json'}" + (f" (changed: {', '.join(data)})" if data else "")
            + ", or start a new --workdir")
    run_map, run_digest = workdir / "feature_map.json", None
    if run_map.exists():
        run_fmap = FeatureMap.load(run_map)
        was = [dataclasses.asdict(f) for f in run_fmap.fields]
        now = [dataclasses.asdict(f) for f in fmap.fields]
        if was != now:
            diff = next((f"field {a['name']!r}: {a} -> {b}" for a, b in zip(was, now) if a != b),
                        f"{len(was)} fields -> {len(now)}")
            raise ValueError(f"{run_map}: the data's fields differ from the run's ({diff}); {hint}")
        run_digest = run_fmap.info.get("vocab_sha256")
    run_vocab = workdir / "vocab.json"
    if not vocab_path.exists():
        return
    if run_digest is not None:  # the digest the run was built with: a damaged vocab.json of the run is rewritten
        same = vocab_sha256(vocab_path.read_bytes()) == run_digest
    elif run_vocab.exists():
        same = run_vocab.read_bytes() == vocab_path.read_bytes()
    else:
        return
    if not same:
        try:
            was, now = read_json(run_vocab), read_json(vocab_path)
            field = next((k for k in was if was[k] != now.get(k)), None)
        except (ValueError, OSError, AttributeError, TypeError):  # the run's vocab.json missing or damaged too
            field = None
        raise ValueError(f"{run_vocab}: the data's vocabulary differs from the run's vocab.json (field {field!r}: the "
                         f"checkpoint's embedding rows would stand for other values); {hint}")


def _apply_resume_changes(workdir: Path, c, state, meta: dict, log):
    """Resume continues the checkpoint's schedule, except where the config asks otherwise: a changed
    ``optim.learning_rate`` becomes the current rate (e.g. to continue below a rate that diverged);
    every other changed key is logged (config.json then records the new values)."""
    changed = config_changes(workdir, c, defaults=base_config())  # a key the run predates: its default
    if changed:
        log("[train] resume with a changed config: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    # against the checkpoint's own record: config.json is rewritten before the resumed run saves anything,
    # so after a second interruption it would already hold the new rate (checkpoints before this record: config.json)
    configured = meta.get("configured_lr")
    if configured is None:
        lr_changed = "optim.learning_rate" in changed
    else:
        lr_changed = c.optim.learning_rate != configured
    meta["configured_lr"] = c.optim.learning_rate
    if lr_changed:
        was, meta["lr"] = meta["lr"], c.optim.learning_rate
        state = set_learning_rate(state, meta["lr"])
        log(f"[train] resume: learning rate {was:g} (the checkpoint's) -> {meta['lr']:g} (optim.learning_rate)")
    return state


def _refuse_earlier_run(workdir: Path, ckpt, resume: bool) -> None:
    """A fresh start must not mix with an earlier run's checkpoints or results (nothing is overwritten)."""
    steps = ckpt.steps()
    if steps["latest"] is not None or steps["best"] is not None:
        raise FileExistsError(
            f"{ckpt.root} holds checkpoints of an earlier run; continue it with config resume=True "
            f"(--config.resume=True) or choose a new workdir (nothing was overwritten)"
        )
    earlier = [f for f in ("metrics.jsonl", "results.json") if (workdir / f).exists()]
    if earlier:
        raise FileExistsError(
            f"{workdir} holds {' and '.join(earlier)} of an earlier run but no checkpoint to "
            f"{'resume' if resume else 'continue'}; choose a new --workdir or move those files aside "
            f"(nothing was overwritten)"
        )
    # The other files a run writes: replaced only when config.json shows they are a run's own (one that
    # stopped before its first checkpoint); a user's files of those names are never overwritten.
    others = [f for f in RUN_FILES if (workdir / f).exists()]
    if others:
        try:
            read_run_config(workdir)
        except (FileNotFoundError, ValueError):
            raise FileExistsError(
                f"{workdir} holds {', '.join(others)}, which this run would overwrite and no kdef_jax run "
                f"wrote (no run config.json beside them); choose a new --workdir or move them aside "
                f"(nothing was overwritten)"
            ) from None


def _nan_message(epoch: int, step: int, meta: dict, ckpt, what: str = "training loss") -> str:
    then = (f"The last good state is in {ckpt.root} (epoch {meta['epoch']}): continue from it with "
            f"config resume=True and a lower optim.learning_rate (--config.resume=True "
            f"--config.optim.learning_rate=...), or check the data."
            if meta["epoch"] > 0 else
            "No epoch finished, so no state was saved: lower optim.learning_rate or check the data.")
    return f"{what} became NaN/inf in epoch {epoch} by step {step} (lr {meta['lr']:g}). {then}"
