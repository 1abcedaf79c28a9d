"""Delimited text: raw Criteo Kaggle TSV (no header), BARS/FuxiCTR CSV with a header, raw Avazu CSV.

``column_names`` lists every raw column in file order when the file has no header; with
``header=True`` the names come from the first line and every column the schema reads must be in it.
Empty strings are missing values. Structural problems (wrong column count, undecodable bytes, a CSV
row the csv module cannot read) are errors naming the file and line, or skipped and counted with
``on_bad_rows="skip"``; value-level checks (label rule, numeric fields) happen in the preprocessing
driver, also with file and line, which reports whichever bad row comes first in the file.

This module is the plain-Python engine (a per-line loop, fine for small files and the reference for
error messages); :mod:`kdef_jax.data.formats.columnar` parses large files with polars and falls back
to :func:`lines_to_block` for any block it cannot take.
"""

from __future__ import annotations

import csv
import dataclasses
from typing import Iterator, Sequence

from kdef_jax.data.schema import LABEL, Block, DataFormatError, Undecodable, iter_lines, make_block, open_raw, row_error

CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default 131,072 characters would reject a long quoted value pandas reads


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the wanted columns are in a delimited file."""

    path: str
    names: tuple  # every raw column, in file order
    wanted: tuple  # (label column, *raw feature columns)
    delimiter: str = "\t"
    quotechar: str = ""  # "" = no quoting (Criteo TSV); '"' for pandas-written CSV
    header_lines: int = 0
    encoding: str = "utf-8"
    on_bad_rows: str = "error"

    @property
    def positions(self) -> list:
        return [self.names.index(c) for c in self.wanted]


def open_layout(path: str, *, label_column: str, feature_columns: Sequence[str], column_names: Sequence[str] = (),
                header: bool = False, delimiter: str = "\t", quotechar: str = "", encoding: str = "utf-8",
                on_bad_rows: str = "error") -> Layout:
    """Read the header (if any) and check that the label and every wanted column exist."""
    if quotechar and csv.field_size_limit() < CSV_FIELD_LIMIT:  # once per file, before any row is split
        csv.field_size_limit(CSV_FIELD_LIMIT)
    with open_raw(path) as fh:
        first = fh.readline()
    if not first:
        raise DataFormatError(f"{path}: file is empty" + (" (expected a header line)" if header else ""))
    names = list(column_names)
    if header:
        try:
            text = first.decode(encoding).rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise DataFormatError(f"{path}:1: undecodable bytes in the header ({e.reason})") from None
        try:
            names = _csv_split(text, delimiter, quotechar) if quotechar else text.split(delimiter)
        except csv.Error as e:
            raise DataFormatError(f"{path}:1: unreadable CSV header ({e})") from None
    if not names:
        raise DataFormatError(f"{path}: no column names (set header=True or column_names)")
    if label_column in feature_columns:
        raise ValueError(f"{path}: the label column {label_column!r} is also read as a feature")
    wanted = [label_column, *dict.fromkeys(feature_columns)]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataFormatError(f"{path}: columns {missing} of the schema are not among the file's columns {names}")
    twice = [c for c in wanted if names.count(c) > 1]
    if twice:  # which of the two is meant cannot be known
        where = "its header" if header else "data.column_names"
        raise DataFormatError(f"{path}: column {twice[0]!r} appears {names.count(twice[0])} times in {where} (columns "
                              f"{', '.join(str(i + 1) for i, n in enumerate(names) if n == twice[0])}); rename all but one")
    return Layout(path, tuple(names), tuple(wanted), delimiter, quotechar, int(header), encoding, on_bad_rows)


def _csv_split(text: str, delimiter: str, quotechar: str) -> list:
    return next(csv.reader([text], delimiter=delimiter, quotechar=quotechar))


def _problem(lay: Layout, line, ncol: int):
    """(fields, None) of a decoded line, or (None, what is wrong with it)."""
    if isinstance(line, Undecodable):
        return None, line.problem
    text = line.rstrip("\r\n")
    try:
        parts = _csv_split(text, lay.delimiter, lay.quotechar) if lay.quotechar and lay.quotechar in text else text.split(lay.delimiter)
    except csv.Error as e:
        return None, f"unreadable CSV row ({e})"
    if len(parts) == ncol:
        return parts, None
    hint = ("; the row holds a '\"': if values are quoted (a delimiter inside quotes), set data.quotechar='\"'"
            if len(parts) > ncol and not lay.quotechar and '"' in text else "")
    return None, f"expected {ncol} columns, found {len(parts)}{hint}"


def lines_to_block(lay: Layout, lines: list, first_line: int) -> Block:
    """Parse decoded lines (:class:`Undecodable` where the bytes did not decode) numbered from
    ``first_line`` into a Block, which ends before the first malformed row where that is an error."""
    pos, ncol = lay.positions, len(lay.names)
    rows, nums, skipped, error = [], [], 0, ""
    for k, line in enumerate(lines):
        parts, problem = _problem(lay, line, ncol)
        if problem is not None:
            error = row_error(lay.path, first_line + k, problem, lay.on_bad_rows)
            if error:
                break
            skipped += 1
            continue
        rows.append([parts[p] for p in pos])
        nums.append(first_line + k)
    return make_block(lay.path, nums, rows, (LABEL, *lay.wanted[1:]), header_lines=lay.header_lines, skipped=skipped,
                      error=error)


def read_delimited(path: str, *, label_column: str, feature_columns: Sequence[str], column_names: Sequence[str] = (),
                   header: bool = False, delimiter: str = "\t", quotechar: str = "", encoding: str = "utf-8",
                   on_bad_rows: str = "error", chunk_rows: int = 100_000) -> Iterator[Block]:
    """Yield Blocks with the label and ``feature_columns`` of a delimited text file (plain Python)."""
    lay = open_layout(path, label_column=label_column, feature_columns=feature_columns, column_names=column_names,
                      header=header, delimiter=delimiter, quotechar=quotechar, encoding=encoding, on_bad_rows=on_bad_rows)
    with open_raw(path) as fh:
        if header:
            fh.readline()
        line_no = 1 + lay.header_lines
        for lines in iter_lines(fh, chunk_rows, path=path, encoding=encoding, first_line=line_no, strict=False):
            yield lines_to_block(lay, lines, line_no)
            line_no += len(lines)
