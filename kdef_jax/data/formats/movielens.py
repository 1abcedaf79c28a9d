"""Raw MovieLens 100K and 1M (GroupLens files): ratings joined with users and items.

* ``100k``: ratings ``user<TAB>item<TAB>rating<TAB>timestamp`` (u.data, u1.base, u1.test, ...);
  ``u.user`` = ``user|age|gender|occupation|zip``; ``u.item`` (Latin-1) = ``item|title|release|
  video release|url|`` + one 0/1 flag per genre of ``u.genre`` (``name|id``).
* ``1m``: ``ratings.dat`` = ``UserID::MovieID::Rating::Timestamp``; ``users.dat`` =
  ``UserID::Gender::Age::Occupation::Zip-code``; ``movies.dat`` (Latin-1) = ``MovieID::Title::Genres``
  with the genres joined by ``|``.

Every rating row becomes one row with the raw columns ``user_id, item_id, rating, timestamp, age,
gender, occupation, zip, title, genres``; ``genres`` holds the item's genre names joined with ``^``
(in ``u.genre`` id order for 100K, in file order for 1M), the BARS ML-1M convention, so a config
reads it as a sequence field with splitter ``^``. Line numbers in errors are those of the ratings
file. A rating whose user or item is not in the metadata is a bad row (error, or skipped).
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

from kdef_jax.data.schema import LABEL, Block, DataFormatError, iter_lines, make_block, open_raw, row_error

COLUMNS = ("user_id", "item_id", "rating", "timestamp", "age", "gender", "occupation", "zip", "title", "genres")
VARIANTS = {
    "100k": {"users": "u.user", "items": "u.item", "genres": "u.genre", "sep": "\t", "meta_sep": "|"},
    "1m": {"users": "users.dat", "items": "movies.dat", "genres": "", "sep": "::", "meta_sep": "::"},
}


def _lines(path: str, encoding: str) -> Iterator[tuple]:
    with open_raw(path) as fh:
        no = 1
        for chunk in iter_lines(fh, 100_000, path=path, encoding=encoding):
            for line in chunk:
                text = line.rstrip("\r\n")
                if text:
                    yield no, text
                no += 1


def _first_time(path: str, seen: dict, key: str, no: int, what: str) -> None:
    """A DataFormatError for an id (a user, an item, a genre) that ``path`` gives twice: which line would
    win is no rule of MovieLens, so neither is taken silently."""
    if key in seen:
        raise DataFormatError(f"{path}:{no}: {what} {key!r} again (first on line {seen[key]})")
    seen[key] = no


def _read_table(path: str, sep: str, ncol: int, encoding: str) -> dict:
    out, seen = {}, {}
    for no, text in _lines(path, encoding):
        parts = text.split(sep)
        if len(parts) != ncol:
            raise DataFormatError(f"{path}:{no}: expected {ncol} '{sep}'-separated fields, found {len(parts)}")
        _first_time(path, seen, parts[0], no, "id")
        out[parts[0]] = parts[1:]
    if not out:
        raise DataFormatError(f"{path}: file is empty")
    return out


def load_metadata(meta_dir: str, variant: str) -> tuple[dict, dict]:
    """(users: id -> [age, gender, occupation, zip], items: id -> [title, genres joined by '^'])."""
    v = VARIANTS[variant]
    join = lambda f: os.path.join(meta_dir, f)  # noqa: E731
    if variant == "100k":
        genre_names, seen = {}, {}
        for no, text in _lines(join(v["genres"]), "latin-1"):
            name, _, gid = text.rpartition("|")
            if not (gid.isascii() and gid.isdigit()):
                raise DataFormatError(f"{join(v['genres'])}:{no}: expected 'name|id'")
            _first_time(join(v["genres"]), seen, str(int(gid)), no, "genre id")
            genre_names[int(gid)] = name
        names = [genre_names[i] for i in sorted(genre_names)]
        raw_users = _read_table(join(v["users"]), "|", 5, "latin-1")
        users = {k: u for k, u in raw_users.items()}  # age, gender, occupation, zip
        items, seen = {}, {}
        for no, text in _lines(join(v["items"]), "latin-1"):
            parts = text.split("|")
            if len(parts) != 5 + len(names):
                raise DataFormatError(f"{join(v['items'])}:{no}: expected {5 + len(names)} '|'-separated fields, found {len(parts)}")
            flags = parts[5:]
            odd = next((f for f in flags if f not in ("0", "1")), None)
            if odd is not None:
                raise DataFormatError(f"{join(v['items'])}:{no}: genre flag {odd!r} is not 0 or 1")
            _first_time(join(v["items"]), seen, parts[0], no, "id")
            items[parts[0]] = [parts[1], "^".join(g for g, f in zip(names, flags) if f == "1")]
        return users, items
    raw_users = _read_table(join(v["users"]), "::", 5, "latin-1")
    users = {k: [u[1], u[0], u[2], u[3]] for k, u in raw_users.items()}  # gender, age, occ, zip -> age, gender, ...
    raw_items = _read_table(join(v["items"]), "::", 3, "latin-1")
    items = {k: [t, g.replace("|", "^")] for k, (t, g) in raw_items.items()}
    return users, items


def read_movielens(path: str, *, meta_dir: str, variant: str, feature_columns: Sequence[str], label_column: str = "rating",
                   on_bad_rows: str = "error", chunk_rows: int = 100_000, _meta: tuple | None = None) -> Iterator[Block]:
    """Yield Blocks of one ratings file joined with the users and items of ``meta_dir``."""
    if variant not in VARIANTS:
        raise ValueError(f"movielens variant {variant!r}; choose one of {sorted(VARIANTS)}")
    wanted = [label_column, *dict.fromkeys(feature_columns)]
    unknown = [c for c in wanted if c not in COLUMNS]
    if unknown:
        raise DataFormatError(f"{path}: columns {unknown} are not MovieLens columns {list(COLUMNS)}")
    users, items = _meta or load_metadata(meta_dir, variant)
    sep = VARIANTS[variant]["sep"]
    pos = [COLUMNS.index(c) for c in wanted]
    fh = open_raw(path)
    line_no = 1
    with fh:
        for lines in iter_lines(fh, chunk_rows, path=path, encoding="latin-1"):
            rows, nums, skipped, error = [], [], 0, ""
            for k, line in enumerate(lines):
                parts = line.rstrip("\r\n").split(sep)
                if len(parts) != 4:
                    problem = f"expected 4 '{sep}'-separated fields (user, item, rating, timestamp), found {len(parts)}"
                elif parts[0] not in users:
                    problem = f"user id {parts[0]!r} is not in the users file"
                elif parts[1] not in items:
                    problem = f"item id {parts[1]!r} is not in the items file"
                else:
                    problem = None
                if problem is not None:
                    error = row_error(path, line_no + k, problem, on_bad_rows)
                    if error:
                        break
                    skipped += 1
                    continue
                full = parts + users[parts[0]] + items[parts[1]]
                rows.append([full[p] for p in pos])
                nums.append(line_no + k)
            yield make_block(path, nums, rows, (LABEL, *wanted[1:]), skipped=skipped, error=error)
            line_no += len(lines)
    if line_no == 1:
        raise DataFormatError(f"{path}: file is empty")
