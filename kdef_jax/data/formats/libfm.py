"""libFM / libSVM (Frappe, iPinYou): ``<label> <idx>:<val> <idx>:<val> ...``.

Every row has exactly one ``idx:val`` pair per field, in field order; the field is the position.
The reader yields the raw pairs; the field's ``libfm_index`` transform takes the ``idx`` as the
token. With a feature index (iPinYou's ``featindex.fm.txt``: ``field:value<TAB>index``), the index
is translated back to the field's value, and an index that belongs to another field is an error.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from kdef_jax.data.schema import LABEL, Block, DataFormatError, bad_row, iter_lines, make_block, open_raw


def read_featindex(path: str) -> dict:
    """``field:value<TAB>index`` lines → {index string: (field, value)}."""
    out = {}
    with open_raw(path, "feature index") as fh:
        for lines in iter_lines(fh, 100_000, path=path):
            for k, line in enumerate(lines):
                text = line.rstrip("\r\n")
                if not text:
                    continue
                key, sep, idx = text.rpartition("\t")
                field, colon, value = key.partition(":")
                if not sep or not colon or not idx.strip():
                    raise DataFormatError(f"{path}: line {text!r} is not 'field:value<TAB>index'")
                out[idx.strip()] = (field, value)
    if not out:
        raise DataFormatError(f"{path}: feature index is empty")
    return out


def lines_to_block(path: str, lines: list, first_line: int, field_names: Sequence[str], on_bad_rows: str) -> Block:
    nf = len(field_names)
    rows, nums, skipped = [], [], 0
    for k, line in enumerate(lines):
        parts = line.split() if line is not None else None
        if parts is None:
            problem = "undecodable bytes; the file is not utf-8"
        elif not parts:
            problem = "empty line"
        elif len(parts) - 1 != nf:
            problem = f"expected {nf} 'index:value' pairs after the label, found {len(parts) - 1}"
        else:
            problem = None
        if problem is not None:
            bad_row(path, first_line + k, problem, on_bad_rows)
            skipped += 1
            continue
        rows.append(parts)
        nums.append(first_line + k)
    return make_block(path, nums, rows, (LABEL, *field_names), skipped=skipped)


def read_libfm(path: str, field_names: Sequence[str], *, on_bad_rows: str = "error", chunk_rows: int = 100_000) -> Iterator[Block]:
    """Yield Blocks of a libFM file whose rows hold one pair per field in ``field_names`` (plain Python)."""
    fh = open_raw(path)
    line_no = 1
    with fh:
        for lines in iter_lines(fh, chunk_rows, path=path, on_bad_rows=on_bad_rows):
            yield lines_to_block(path, lines, line_no, field_names, on_bad_rows)
            line_no += len(lines)
    if line_no == 1:
        raise DataFormatError(f"{path}: file is empty")
