"""libFM / libSVM (Frappe, iPinYou): ``<label> <idx>:<val> <idx>:<val> ...``.

Every row has exactly one ``idx:val`` pair per field, in field order, with ``val`` 1 (a one-hot
feature; another value is an error); the field is the position.
The reader yields the raw pairs; the field's ``libfm_index`` transform takes the ``idx`` as the
token. With a feature index (iPinYou's ``featindex.fm.txt``: ``field:value<TAB>index``), the index
is translated back to the field's value, and an index that belongs to another field is an error.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from kdef_jax.data.schema import LABEL, Block, DataFormatError, Undecodable, iter_lines, make_block, open_raw, row_error


def read_featindex(path: str) -> dict:
    """``field:value<TAB>index`` lines → {index string: (field, value)}."""
    out, line_of, no = {}, {}, 0
    with open_raw(path, "feature index") as fh:
        for lines in iter_lines(fh, 100_000, path=path):
            for line in lines:
                no += 1
                text = line.rstrip("\r\n")
                if not text:
                    continue
                key, sep, idx = text.rpartition("\t")
                field, colon, value = key.partition(":")
                if not sep or not colon or not idx.strip():
                    raise DataFormatError(f"{path}:{no}: line {text!r} is not 'field:value<TAB>index'")
                idx = idx.strip()
                if idx in out:  # which line would win is no rule of the format: neither is taken silently
                    raise DataFormatError(f"{path}:{no}: index {idx} again ({field}:{value}; line {line_of[idx]} gave "
                                          f"{out[idx][0]}:{out[idx][1]})")
                out[idx], line_of[idx] = (field, value), no
    if not out:
        raise DataFormatError(f"{path}: feature index is empty")
    return out


def lines_to_block(path: str, lines: list, first_line: int, field_names: Sequence[str], on_bad_rows: str) -> Block:
    """Parse decoded lines (:class:`Undecodable` where the bytes did not decode) numbered from
    ``first_line`` into a Block, which ends before the first malformed row where that is an error."""
    nf = len(field_names)
    rows, nums, skipped, error = [], [], 0, ""
    for k, line in enumerate(lines):
        parts = None if isinstance(line, Undecodable) else line.split()
        if parts is None:
            problem = line.problem
        elif not parts:
            problem = "empty line"
        elif len(parts) - 1 != nf:
            problem = f"expected {nf} 'index:value' pairs after the label, found {len(parts) - 1}"
        else:
            problem = None
        if problem is not None:
            error = row_error(path, first_line + k, problem, on_bad_rows)
            if error:
                break
            skipped += 1
            continue
        rows.append(parts)
        nums.append(first_line + k)
    return make_block(path, nums, rows, (LABEL, *field_names), skipped=skipped, error=error)


def read_libfm(path: str, field_names: Sequence[str], *, on_bad_rows: str = "error", chunk_rows: int = 100_000) -> Iterator[Block]:
    """Yield Blocks of a libFM file whose rows hold one pair per field in ``field_names`` (plain Python)."""
    fh = open_raw(path)
    line_no = 1
    with fh:
        for lines in iter_lines(fh, chunk_rows, path=path, strict=False):
            yield lines_to_block(path, lines, line_no, field_names, on_bad_rows)
            line_no += len(lines)
    if line_no == 1:
        raise DataFormatError(f"{path}: file is empty")
