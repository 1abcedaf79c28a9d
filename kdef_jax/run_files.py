"""A run's files on disk: JSON read with errors that name the file; outputs checked, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, IO


def read_json(path: Path):
    """The JSON in ``path``; a damaged file is a ValueError naming it (json's own error does not)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); the file is damaged") from None


def check_output(out: Path, flag: str, inputs: tuple = ()) -> Path:
    """``out`` as a file to write: not an existing directory, not one of ``inputs`` (never overwrite data)."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{flag} {out} is a directory; give a file name")
    for src in inputs:
        if Path(src).exists() and out.exists() and out.resolve() == Path(src).resolve():
            raise ValueError(f"{flag} {out} is the input file itself; choose another name (nothing was written)")
    return out


def write_atomic(out: Path, write: Callable[[IO], None], *, binary: bool = False) -> None:
    """``write(fh)`` into ``<out>.tmp``, then rename it to ``out``: readers never see half a file, and a
    failure leaves neither a partial ``out`` nor the temporary behind."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "wb" if binary else "w") as fh:
            write(fh)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
