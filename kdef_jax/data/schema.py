"""Raw-data schema: what the columns of a raw file are and how each becomes tokens.

Column kinds (reference spec §1.2-1.3):
* ``categorical``: the raw string is the token; ``na_value`` (default "") is missing → OOV.
* ``numeric_bucket``: v = float(raw) with missing → 0; bucket(v) = ⌊(ln v)²⌋ if v > 2 else int(v)
  (truncation toward 0); the bucket is then a categorical token, sorted numerically. With
  ``zero_is_missing`` (FuxiCTR 2.0.1's Criteo quirk, spec §1.2.6) bucket 0 is the NA token, so a
  missing value and a genuine 0 both map to OOV.
* ``sequence``: the raw string split on ``splitter``; each token is looked up; keep the first
  ``max_len`` tokens, post-pad with 0 (PAD).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

COLUMN_KINDS = ("categorical", "numeric_bucket", "sequence")


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str = "categorical"
    min_count: int = 1
    max_len: int = 1
    splitter: str = "|"
    na_value: str = ""
    zero_is_missing: bool = True  # numeric_bucket only

    def __post_init__(self):
        if self.kind not in COLUMN_KINDS:
            raise ValueError(f"column {self.name!r}: kind {self.kind!r} not in {COLUMN_KINDS}")
        if self.min_count < 1:
            raise ValueError(f"column {self.name!r}: min_count must be >= 1, got {self.min_count}")
        if self.kind == "sequence" and self.max_len < 1:
            raise ValueError(f"column {self.name!r}: sequence max_len must be >= 1")


@dataclasses.dataclass
class RawChunk:
    """A block of consecutive rows of one raw file, column-wise, before tokenisation."""

    path: str
    line_numbers: np.ndarray  # int64 [n], 1-based line numbers in the file (for error messages)
    labels: np.ndarray  # float32 [n], already validated to {0, 1}
    columns: dict  # name -> np.ndarray of str (object dtype), [n]
    row_index: np.ndarray  # int64 [n], 0-based data-row index in the file, counting skipped rows
    skipped: int = 0  # malformed rows skipped in this chunk (on_bad_rows="skip")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class DataFormatError(ValueError):
    """Malformed input, with the file and line that caused it."""


def bucketize(raw: np.ndarray, *, path: str = "?", line_numbers=None, column: str = "?") -> np.ndarray:
    """log² bucketing of numeric strings ("" → missing → 0). Returns int64 buckets."""
    raw = np.asarray(raw, dtype=object)
    out = np.zeros(raw.shape[0], dtype=np.int64)
    present = raw != ""
    if present.any():
        try:
            v = np.asarray(raw[present], dtype=np.float64)
        except ValueError:
            for j, tok in zip(np.flatnonzero(present), raw[present]):
                try:
                    float(tok)
                except ValueError:
                    line = line_numbers[j] if line_numbers is not None else "?"
                    raise DataFormatError(
                        f"{path}:{line}: column {column!r} is numeric but holds {tok!r}"
                    ) from None
            raise
        if not np.all(np.isfinite(v)):
            j = np.flatnonzero(present)[np.flatnonzero(~np.isfinite(v))[0]]
            line = line_numbers[j] if line_numbers is not None else "?"
            raise DataFormatError(f"{path}:{line}: column {column!r} holds non-finite {raw[j]!r}")
        big = v > 2
        b = np.trunc(v).astype(np.int64)
        b[big] = np.floor(np.log(v[big]) ** 2).astype(np.int64)
        out[present] = b
    return out


def column_tokens(spec: ColumnSpec, chunk: RawChunk) -> np.ndarray | list:
    """Tokens of one column: array for categorical/numeric (object/int64), list of lists for sequences."""
    raw = chunk.columns[spec.name]
    if spec.kind == "numeric_bucket":
        return bucketize(raw, path=chunk.path, line_numbers=chunk.line_numbers, column=spec.name)
    if spec.kind == "sequence":
        return [[] if (s == spec.na_value or s == "") else s.split(spec.splitter) for s in raw]
    return raw


def is_missing(spec: ColumnSpec, tokens: np.ndarray) -> np.ndarray:
    """Mask of tokens that are the field's NA value (never enter the vocabulary; encode to OOV)."""
    if spec.kind == "numeric_bucket":
        return tokens == 0 if spec.zero_is_missing else np.zeros(tokens.shape, bool)
    return tokens == spec.na_value


def iter_lines(fh, chunk_rows: int, *, path: str = "?", encoding: str = "utf-8", first_line: int = 1) -> Iterator[list]:
    """Yield lists of up to ``chunk_rows`` decoded lines from a file opened in BINARY mode.

    Each line is decoded on its own so undecodable bytes are reported with their exact line number.
    """
    buf, line_no = [], first_line
    for raw in fh:
        try:
            buf.append(raw.decode(encoding))
        except UnicodeDecodeError as e:
            raise DataFormatError(f"{path}:{line_no}: undecodable bytes ({e.reason}); the file is not {encoding}") from None
        line_no += 1
        if len(buf) >= chunk_rows:
            yield buf
            buf = []
    if buf:
        yield buf
