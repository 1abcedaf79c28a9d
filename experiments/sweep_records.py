"""The records the experiments scripts write (``--out``): which script wrote one, told by its shape, and
whether an ``--out`` may be replaced."""

from __future__ import annotations

import json
from pathlib import Path


def record_kind(record) -> str | None:
    """The experiments script whose ``--out`` record ``record`` (parsed JSON) is, told by its shape; None
    for anything else."""
    if isinstance(record, list):
        rows = record and all(isinstance(r, dict) and {"dataset", "num_rows"} <= r.keys() for r in record)
        return "dataset_summary.py" if rows else None
    if not isinstance(record, dict):
        return None
    if record.get("experiment") == "step_parity":
        return "step_parity.py"
    if {"config", "overrides", "seeds", "table"} <= record.keys():
        return "scaling.py"
    if record.keys() == {"config", "summary"}:
        return "run_seeds.py"
    if {"per_seed", "mean", "reference_mean"} <= record.keys():
        return "latest_table.py"
    cells = [cell for ks in record.values() if isinstance(ks, dict) for cell in ks.values()]  # variant → K → cell
    if cells and all(isinstance(c, dict) and "runs" in c for c in cells):
        return "findings.py"
    if cells and all(isinstance(c, list) and all(isinstance(s, dict) and "fields" in s for s in c) for c in cells):
        return "collapse.py"
    return None


def check_replaceable(out: Path, kind: str) -> None:
    """A ValueError unless ``out`` is missing, empty (or blank) or an earlier ``--out`` record of the experiments
    script ``kind`` (its file name, e.g. "scaling.py"; :func:`record_kind`): another script's record, or
    any other file, is not replaced."""
    if not out.is_file():
        return
    try:
        text = out.read_text()
    except UnicodeDecodeError:
        text = "?"  # no record
    except OSError as e:
        raise ValueError(f"--out {out}: cannot be read ({e.strerror or e}), so whether it is a record of "
                         f"experiments/{kind} is not known; give another path") from None
    if not text.strip():
        return
    try:
        found = record_kind(json.loads(text))
    except ValueError:  # not JSON
        found = None
    if found != kind:
        what = f"a record of experiments/{found}" if found else f"a file that is no record of experiments/{kind}"
        raise ValueError(f"--out {out} holds {what}, which this would replace; give another path (or remove that "
                         f"file first)")
