"""A run's files on disk: JSON read with errors that name the file; outputs checked, written atomically."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
import uuid
from pathlib import Path
from typing import Callable, IO

# What kdef_jax.main writes into a workdir (besides checkpoints/): never an output of another command.
STUDENT_CODE = "student_code.json"  # {model.student_modules entry: sha256 of its code} when the run was saved
RUN_FILES = ("config.json", "feature_map.json", "vocab.json", "results.json", "metrics.jsonl", "curves.png", STUDENT_CODE)


def read_json(path: Path):
    """The JSON in ``path``; a damaged file is a ValueError naming it (json's own error does not)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); the file is damaged") from None


RUN_CONFIG_SECTIONS = ("data", "model", "train", "loss", "optim")  # in every run's config.json since the first


def read_config_json(path: Path) -> dict:
    """A run's config.json as a dict, checked to hold the sections every run config has."""
    raw = read_json(path)
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), dict) for k in RUN_CONFIG_SECTIONS):
        raise ValueError(f"{path}: not a kdef_jax run config (it needs the sections {', '.join(RUN_CONFIG_SECTIONS)}); "
                         f"the file is damaged or another program's")
    return raw


def read_run_config(workdir: Path):
    """``<workdir>/config.json`` as a ConfigDict, checked to be a run's config. A key it lacks (the run
    predates the key) takes ``base_config()``'s value, what such a run did, as ``config_changes`` assumes;
    but a run from before data.pandas_na read those strings as tokens (False)."""
    import ml_collections

    from kdef_jax.config import base_config

    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{workdir}: no config.json (not a kdef_jax.main run)")
    raw = read_config_json(path)
    raw["data"].setdefault("pandas_na", False)
    return ml_collections.ConfigDict(_with_defaults(raw, json.loads(base_config().to_json())))


def student_code_changes(workdir: Path, modules) -> list:
    """A warning for each ``model.student_modules`` entry whose code differs from what ``<workdir>``
    recorded (:data:`STUDENT_CODE`; [] for a run without one): its students would be built from code the
    run was not trained with."""
    from kdef_jax.models.registry import code_digests

    path = Path(workdir) / STUDENT_CODE
    if not modules or not path.is_file():
        return []
    try:
        was = json.loads(path.read_text())
    except (OSError, ValueError):
        was = None
    if not isinstance(was, dict) or not all(isinstance(v, str) for v in was.values()):
        return [f"warning: {path} is unreadable; the students' code cannot be checked against the run's"]
    now = code_digests(modules)
    return [f"warning: the code of {name} changed since the run recorded it (sha256 {was[name][:12]} -> "
            f"{now[name][:12]}, {path}); its students are built from the code as it is now"
            for name in now if name in was and was[name] != now[name]]


def _with_defaults(raw: dict, defaults: dict) -> dict:
    """``raw`` with every key of ``defaults`` it lacks (nested dicts merged)."""
    out = dict(raw)
    for k, v in defaults.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, dict) and isinstance(out[k], dict):
            out[k] = _with_defaults(out[k], v)
    return out


def check_writable(out: Path, flag: str) -> Path:
    """``out`` as a file this process can write, checked before any work (a long job must not end in a
    traceback that loses its numbers): not a directory, and the nearest folder of its path that exists
    (``write_atomic`` creates the missing ones) is a folder this process may write in, not a file."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{flag} {out} is a directory; give a file name")
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {out}: {parent} is a file, not a folder; give another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {out}: this user may not write in {parent}; give another path")
    try:  # what access() cannot tell: /proc, a read-only mount, a full disk
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".kdef_probe_")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{flag} {out}: no file can be created in {parent} ({e.strerror}); give another path") from None
    return out


def output_file_arg(text: str) -> str:
    """argparse type of an output path (``--out``): :func:`check_writable` at parse time, so a command
    refuses it before doing any work."""
    import argparse

    try:
        check_writable(Path(text), "")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).strip()) from None
    return text


def check_output(out: Path, flag: str, *, inputs: tuple = (), workdir: Path | None = None) -> Path:
    """``out`` (and its ``<out>.json`` description) as files to write: writable (:func:`check_writable`),
    not one of ``inputs``, not a file of the run in ``workdir`` (nothing the user has is overwritten)."""
    out = check_writable(out, flag)
    kept = [Path(p) for p in inputs]
    if workdir is not None:
        kept += [Path(workdir) / f for f in RUN_FILES]
    for target in (out, Path(f"{out}.json")):
        if target.is_dir():
            raise ValueError(f"{flag} {out} is a directory; give a file name" if target == out else
                             f"{flag} {out}: its description {target} is a directory; give another file name")
        if any(p.exists() and target.exists() and target.resolve() == p.resolve() for p in kept):
            raise ValueError(f"{flag} {out} would overwrite {target}, an input or a file of the run; choose "
                             f"another name (nothing was written)")
        if workdir is not None and (Path(workdir) / "checkpoints").resolve() in target.resolve().parents:
            raise ValueError(f"{flag} {out} is inside the run's checkpoints; choose another name (nothing was written)")
    return out


def write_atomic(out: Path, write: Callable[[IO], None], *, binary: bool = False) -> None:
    """``write(fh)`` into a new temporary file beside ``out`` (a fresh name, created exclusively: no file of
    the user's is touched), then rename it to ``out``: readers never see half a file, and a failure leaves
    neither a partial ``out`` nor the temporary behind. An existing ``out`` that is not a regular file (a
    device such as /dev/null, a FIFO) is written in place, never replaced."""
    out = Path(out)
    if out.exists() and not out.is_file() and not out.is_dir():
        with open(out, "wb" if binary else "w") as fh:
            write(fh)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb" if binary else "x") as fh:
            write(fh)
        os.replace(tmp, out)
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise type(e)(e.errno, e.strerror, str(out)) from e  # e.g. EFBIG (ulimit -f): name the file, one line
    finally:
        tmp.unlink(missing_ok=True)


def strict_json(obj):
    """``obj`` with every NaN / ±inf float as None: JSON has no such numbers (``json.dumps`` would write
    the non-standard ``NaN`` that strict parsers reject)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    """``obj`` as indented, strict JSON (NaN → null) with a final newline, written atomically
    (:func:`write_atomic`)."""
    write_atomic(path, lambda fh: fh.write(json.dumps(strict_json(obj), indent=1, allow_nan=False) + "\n"))


def flat_dict(d: dict, prefix: str = "") -> dict:
    """{"a.b.c": leaf} of a nested dict (a config's JSON)."""
    out = {}
    for k, v in d.items():
        out.update(flat_dict(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_changes(workdir: Path, config, ignore=("resume",), defaults=None) -> dict:
    """{dotted key: (value in ``<workdir>/config.json``, value in ``config``)} for every key that
    differs, both sides as config.json writes them (``ignore``: keys left out). A key the config.json
    lacks (it predates the key) counts as its value in ``defaults`` (a config such as ``base_config()``:
    what that run did without the key), else as None. {} without a config.json."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        return {}
    old, new = flat_dict(read_config_json(path)), flat_dict(json.loads(config.to_json()))
    if defaults is not None:
        old = {**{k: v for k, v in flat_dict(json.loads(defaults.to_json())).items() if k in new}, **old}
    keys = [k for k in {**old, **new} if k not in ignore]
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}


def disk_full(e: BaseException) -> bool:
    """Whether ``e`` is a write that found no space left: ENOSPC / EDQUOT, or orbax's (TensorStore's)
    RESOURCE_EXHAUSTED error around one, a ValueError whose text names it."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(e, (OSError, ValueError)) and any(
        s in str(e) for s in ("No space left on device", "Disk quota exceeded"))


def reported(e: OSError) -> bool:
    """Whether a command reports the OSError ``e`` in one line (:func:`error_text`) rather than with its
    traceback: a file missing or in the way, an error naming its file, or a full disk."""
    return isinstance(e, (FileNotFoundError, FileExistsError)) or e.filename is not None or disk_full(e)


def error_text(prog: str, e: BaseException, again: str = "run the command again") -> str:
    """What a command prints for one of the errors it reports (file, line or key named in ``e``); for a
    full disk, also what to do (every file is written atomically, so nothing half-written is used). An
    OSError it does not report in one line (:func:`reported`) is re-raised: its traceback is the report."""
    if isinstance(e, OSError) and not reported(e):
        raise e
    text = f"{prog}: error: {type(e).__name__}: {e}"
    if disk_full(e):
        text += f"\n{prog}: the disk is full: free space on it (or use a larger one), then {again}"
    return text


def exit_interrupted(message: str) -> None:
    """Print ``message`` and end the process with status 130 (Ctrl-C) at once (:func:`exit_now`). A Ctrl-C
    can leave an XLA compilation running in XLA's thread pool; the interpreter's normal shutdown tears the
    runtime down under it and the process dies of SIGSEGV (exit -11: 3 of 3 interrupts during a Frappe
    run's first compile)."""
    exit_now(message, 130)


def exit_now(message: str, status: int) -> None:
    """Print ``message`` (if any) and end the process with ``status`` at once: stdout, stderr and logging
    flushed, then ``os._exit``, without the interpreter's shutdown (its atexit hooks: XLA's teardown,
    jax.distributed's shutdown barrier). Every file of a run is written atomically and synchronously
    before any point that calls this, so skipping the shutdown loses nothing."""
    import logging
    import sys

    if message:
        print(message, file=sys.stderr)
    for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said there
            pass
    os._exit(status)
