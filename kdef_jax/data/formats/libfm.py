"""libFM / libSVM reader (Frappe, iPinYou): ``<label> <idx>:<val> <idx>:<val> ...``.

Every row has exactly one ``idx:val`` pair per field, in field order; the field is the position.
The token of a field is its ``idx`` string. Labels go through ``label_map`` (Frappe uses 1/-1,
iPinYou 1/0); a label outside it is an error naming the file and line.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from kdef_jax.data.schema import DataFormatError, RawChunk, iter_lines

DEFAULT_LABEL_MAP = {"1": 1.0, "-1": 0.0, "0": 0.0, "+1": 1.0}


def read_libfm(
    path: str,
    field_names: Sequence[str],
    *,
    label_map: dict | None = None,
    on_bad_rows: str = "error",
    chunk_rows: int = 200_000,
) -> Iterator[RawChunk]:
    """Yield ``RawChunk``s of a libFM file whose rows hold one pair per field in ``field_names``."""
    label_map = dict(label_map or DEFAULT_LABEL_MAP)
    nf = len(field_names)
    line_no = 0
    with open(path, "rb") as fh:
        for lines in iter_lines(fh, chunk_rows, path=path):
            labels, toks, nums, skipped = [], [], [], 0
            for line in lines:
                line_no += 1
                parts = line.split()
                if not parts:
                    problem = "empty line"
                elif len(parts) - 1 != nf:
                    problem = f"expected {nf} 'index:value' pairs after the label, found {len(parts) - 1}"
                elif parts[0] not in label_map:
                    problem = f"label {parts[0]!r} is not one of {sorted(label_map)}"
                else:
                    problem = None
                    idx = [p.partition(":")[0] for p in parts[1:]]
                    if any(not t for t in idx):
                        problem = "a pair has no index before ':'"
                if problem is not None:
                    if on_bad_rows == "skip":
                        skipped += 1
                        continue
                    raise DataFormatError(f"{path}:{line_no}: {problem}")
                labels.append(label_map[parts[0]])
                toks.append(idx)
                nums.append(line_no)
            n = len(labels)
            cols = np.empty((n, nf), dtype=object)
            if n:
                cols[:] = toks
            yield RawChunk(
                path=path,
                line_numbers=np.asarray(nums, dtype=np.int64),
                labels=np.asarray(labels, dtype=np.float32),
                columns={name: cols[:, j] for j, name in enumerate(field_names)},
                row_index=np.asarray(nums, dtype=np.int64) - 1,
                skipped=skipped,
            )
    if line_no == 0:
        raise DataFormatError(f"{path}: file is empty")
