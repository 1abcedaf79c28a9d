"""Delimited text reader: raw Criteo Kaggle TSV (no header), or CSV with a header row.

``column_names`` lists every raw column in file order when the file has no header; with
``header=True`` the names come from the first line and the schema's columns must all be present.
The label column must hold 0 or 1 (or a key of ``label_map``); anything else is an error naming the
file and line. Empty strings are missing values.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from kdef_jax.data.schema import DataFormatError, RawChunk, iter_lines

DEFAULT_LABEL_MAP = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0}


def read_delimited(
    path: str,
    *,
    label_column: str,
    feature_columns: Sequence[str],
    column_names: Sequence[str] = (),
    header: bool = False,
    delimiter: str = "\t",
    label_map: dict | None = None,
    on_bad_rows: str = "error",
    chunk_rows: int = 200_000,
    encoding: str = "utf-8",
) -> Iterator[RawChunk]:
    """Yield ``RawChunk``s with the label and ``feature_columns`` of a delimited text file."""
    label_map = dict(label_map or DEFAULT_LABEL_MAP)
    line_no = 0
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise DataFormatError(f"{path}: cannot open ({e.strerror})") from e
    with fh:
        names = list(column_names)
        if header:
            first = fh.readline()
            line_no = 1
            if not first:
                raise DataFormatError(f"{path}: file is empty (expected a header line)")
            try:
                names = first.decode(encoding).rstrip("\r\n").split(delimiter)
            except UnicodeDecodeError as e:
                raise DataFormatError(f"{path}:1: undecodable bytes in the header ({e.reason})") from None
        if not names:
            raise DataFormatError(f"{path}: no column names (set header=True or column_names)")
        wanted = [label_column, *feature_columns]
        missing = [c for c in wanted if c not in names]
        if missing:
            raise DataFormatError(f"{path}: columns {missing} are not among the file's columns {names}")
        pos = [names.index(c) for c in wanted]
        ncol = len(names)
        for lines in iter_lines(fh, chunk_rows, path=path, encoding=encoding, first_line=line_no + 1):
            labels, rows, nums, skipped = [], [], [], 0
            for line in lines:
                line_no += 1
                parts = line.rstrip("\r\n").split(delimiter)
                if len(parts) != ncol:
                    problem = f"expected {ncol} columns, found {len(parts)}"
                elif parts[pos[0]] not in label_map:
                    problem = f"label {parts[pos[0]]!r} in column {label_column!r} is not one of {sorted(label_map)}"
                else:
                    problem = None
                if problem is not None:
                    if on_bad_rows == "skip":
                        skipped += 1
                        continue
                    raise DataFormatError(f"{path}:{line_no}: {problem}")
                labels.append(label_map[parts[pos[0]]])
                rows.append([parts[p] for p in pos[1:]])
                nums.append(line_no)
            n = len(labels)
            cols = np.empty((n, len(pos) - 1), dtype=object)
            if n:
                cols[:] = rows
            yield RawChunk(
                path=path,
                line_numbers=np.asarray(nums, dtype=np.int64),
                labels=np.asarray(labels, dtype=np.float32),
                columns={c: cols[:, j] for j, c in enumerate(feature_columns)},
                row_index=np.asarray(nums, dtype=np.int64) - 1 - int(header),
                skipped=skipped,
            )
    if line_no == 0:
        raise DataFormatError(f"{path}: file is empty")
