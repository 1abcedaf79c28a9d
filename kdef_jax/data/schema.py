"""Raw-data schema: columns, how each becomes tokens, the label rule, and the block that readers yield.

Column kinds (reference spec §1.2-1.3):
* ``categorical``: the raw string (after an optional ``transform``) is the token; ``na_value``
  (default "") is missing → OOV.
* With ``pandas_na`` (the default), a raw value equal to one of ``pandas.read_csv``'s default NA
  strings (:data:`PANDAS_NA_STRINGS`: "NA", "null", "NaN", "None", "#N/A", ...) is missing too, in
  every kind of column: FuxiCTR reads each CSV with pandas' defaults and fills NaN with the field's
  fill value before any transform, so those strings never become tokens in the reference.
* ``numeric_bucket``: v = float(raw) with missing → 0; bucket(v) = ⌊(ln v)²⌋ if v > 2 else int(v)
  (truncation toward 0); the bucket is then a categorical token, sorted numerically. With
  ``zero_is_missing`` (FuxiCTR 2.0.1's Criteo quirk, spec §1.2.6) bucket 0 is the NA token, so a
  missing value and a genuine 0 both map to OOV.
* ``sequence``: the raw string split on ``splitter``; each token is looked up (an ``na_value``
  token inside a sequence becomes PAD, as FuxiCTR v2.0's ``encode_sequence``); keep the first
  ``max_len`` tokens, post-pad with 0 (PAD). Every token of the train rows is counted, including
  the ones past ``max_len``.

Readers yield :class:`Block`s: for every raw column either a block-local dictionary encoding
``(indices int32 [n], values list[str])`` (plain-Python engine) or a polars String Series (columnar
engine). All value-level work (transforms, bucketing, label rules, validation) runs once per
distinct value (:mod:`kdef_jax.data.vocab`), not once per row.
"""

from __future__ import annotations

import bz2
import dataclasses
import datetime
import gzip
import io
import lzma
import math
import numbers
import re
import tarfile
import zipfile
import zlib
from typing import Callable, Iterator, Sequence

import numpy as np

COLUMN_KINDS = ("categorical", "numeric_bucket", "sequence")
# pandas.read_csv's default NA strings (pandas >= 2.0, which added "None"), "" included
PANDAS_NA_STRINGS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                               "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
LABEL = "__label__"  # key of the label column in Block.columns


class DataFormatError(ValueError):
    """Malformed input, with the file and line that caused it."""


class EmptySplitError(ValueError):
    """A configured split file that gave no rows; ``role`` the split, ``why`` what removed its rows (text
    beginning "; ", or "")."""

    def __init__(self, message: str, role: str, why: str = ""):
        super().__init__(message)
        self.role, self.why = role, why


# ------------------------------------------------------------------------------------ transforms


def row_error(path: str, line: int, problem: str, on_bad_rows: str) -> str:
    """A malformed row (wrong field count, undecodable bytes, ...): ``"path:line: problem"`` where it is
    an error — the reader ends its block before the row and puts this in ``Block.error``, raised by the
    preprocessing driver once the rows before it are validated, so the first bad row in file order is
    the one reported whatever its kind — or "" with ``on_bad_rows == "skip"`` (the reader skips and
    counts it)."""
    return "" if on_bad_rows == "skip" else f"{path}:{line}: {problem}"


@dataclasses.dataclass(frozen=True)
class Undecodable:
    """What :func:`iter_lines` (``strict=False``) and the columnar reader yield for a line whose bytes
    do not decode: the reader's parser makes it a malformed row (:func:`row_error`)."""

    reason: str  # the decoder's
    encoding: str

    @property
    def problem(self) -> str:
        return f"undecodable bytes ({self.reason}); the file is not {self.encoding}"


# leading bytes of compressed files; bzip2's "BZh" is followed by its level digit and a block (or end-of-stream)
# magic, so text starting "BZh" is text. zstd and 7z have no reader in the standard library: they stay errors.
COMPRESSED = ((b"\x1f\x8b", "gzip", "gunzip -k"), (b"\xfd7zXZ\x00", "xz", "unxz -k"), (b"PK\x03\x04", "zip", "unzip"),
              (b"PK\x05\x06", "zip", "unzip"),  # an empty zip: its end record only
              (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"), (b"7z\xbc\xaf\x27\x1c", "7z", "7z x"), (b"BZh", "bzip2", "bunzip2 -k"))
UNREAD = ("zstd", "7z")
TAR_MAGIC, TAR_AT = b"ustar", 257  # a tar header: the member's name in bytes 0-99, "ustar" at 257
_BZIP2_NEXT = (b"1AY&SY", b"\x17rE8P\x90")
READ_BYTES = 1 << 20  # the buffer of a decompressed stream


def compression(head: bytes) -> tuple[str, str] | None:
    """(kind, how to decompress) of a file whose first bytes are ``head``, or None for an uncompressed one."""
    for magic, kind, tool in COMPRESSED:
        if head.startswith(magic) and (kind != "bzip2" or (head[3:4].isdigit() and head[4:10] in _BZIP2_NEXT)):
            return kind, tool
    return None


class _Decompressed(io.RawIOBase):
    """The decompressed bytes of a gzip, bzip2, xz or one-member zip file, read as they are needed (no
    copy on disk); damaged or cut-short data is a DataFormatError naming the file, not the codec's error.
    It has no ``fileno``, so the fast engines read it into buffers instead of mapping it."""

    def __init__(self, path: str, kind: str):
        super().__init__()
        self.path, self.kind, self._stream, self._given = path, kind, None, 0
        try:
            self._stream = self._open_zip() if kind == "zip" else \
                {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}[kind](path, "rb")
        except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as e:
            raise DataFormatError(f"{path}: cannot read the {kind} file ({e})") from e
        except NotImplementedError as e:  # zipfile: deflate64, or another method Python lacks (a RuntimeError too)
            raise DataFormatError(f"{path}: {e} here; unzip it and point the config at the file") from e
        except RuntimeError as e:  # zipfile: an encrypted member
            raise DataFormatError(f"{path}: {e}; unzip it (with its password) and point the config at the file") from e

    def _open_zip(self):
        with zipfile.ZipFile(self.path) as archive:  # the member keeps the file open after the archive closes
            members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
            if len(members) != 1:  # (__MACOSX/: the resource forks macOS's Finder adds beside the file)
                names = ", ".join(m.filename for m in members[:5]) + (" ..." if len(members) > 5 else "")
                raise DataFormatError(f"{self.path}: a zip archive of {len(members)} files ({names or 'none'}); the "
                                      f"readers take a zip of one file: unzip it and point the config at the file "
                                      f"to read")
            return archive.open(members[0])

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:  # one decompression step at a time: the text before damaged data is returned before its error
            data = self._stream.read1(len(b))
            n = len(data)
            b[:n] = data
        except gzip.BadGzipFile as e:
            if self._given and str(e).startswith("Not a gzipped file"):  # what gunzip calls trailing garbage
                raise DataFormatError(f"{self.path}: bytes after the end of its gzip data ({e}): the file was "
                                      f"joined with another or damaged") from e
            raise self._damaged(e) from e
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile, lzma.LZMAError, NotImplementedError) as e:
            raise self._damaged(e) from e
        self._given += n
        return n

    def _damaged(self, e: Exception) -> DataFormatError:
        return DataFormatError(f"{self.path}: the {self.kind} data is damaged or cut short ({e}); the file needs "
                               f"to be fetched or packed again")

    def close(self) -> None:
        if not self.closed and self._stream is not None:
            self._stream.close()
        super().close()


def open_raw(path: str, what: str = ""):
    """``open(path, "rb")``, or a DataFormatError naming the file (``what``: e.g. "feature index"). A gzip,
    bzip2, xz or one-member zip file is read decompressed (a buffered stream); zstd, 7z and a tar archive
    (plain or compressed) are errors saying how to get at the text."""
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise DataFormatError(f"{path}: cannot open{' ' + what if what else ''} ({e.strerror})") from e
    packed = compression(fh.peek(10)[:10])
    if packed:
        fh.close()
        if packed[0] in UNREAD:
            raise DataFormatError(f"{path}: a {packed[0]}-compressed file; the readers take plain text, gzip, bzip2, xz "
                                  f"or zip: decompress it first ({packed[1]} {path}) and point the config at the result")
        fh = io.BufferedReader(_Decompressed(path, packed[0]), READ_BYTES)
    try:
        twice = packed and compression(fh.peek(10)[:10])
        if twice:
            raise DataFormatError(f"{path}: {packed[0]}-compressed, and what that holds is {twice[0]}-compressed "
                                  f"again; decompress it twice and point the config at the text")
        first = tar_member(fh.peek(tarfile.BLOCKSIZE)[:tarfile.BLOCKSIZE])
        if first is not None:  # Criteo's dac.tar.gz: its header block would be read as a row
            raise DataFormatError(f"{path}: a tar archive{f' ({packed[0]}-compressed)' if packed else ''}, first file "
                                  f"{first!r}; the readers take one file: extract it (tar xf {path}) and point the "
                                  f"config at a file inside it")
    except BaseException:  # (a peek into damaged data raises too)
        fh.close()
        raise
    return fh


def tar_member(head: bytes) -> str | None:
    """The name of the first file of a tar archive whose first 512 bytes are ``head`` (its "ustar" magic and
    header checksum both right), else None: text that happens to hold "ustar" at byte 257 is text."""
    if len(head) < tarfile.BLOCKSIZE or head[TAR_AT:TAR_AT + len(TAR_MAGIC)] != TAR_MAGIC:
        return None
    try:
        return tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape").name
    except tarfile.HeaderError:
        return None


def _isrc_country(v: str) -> str:
    return v[:2]


def _kkbox_age(v: str) -> str:
    """KKBox ``bd``: "" if missing or outside [1, 95]; else "1" (≤10), "2" (≤20) … "7" (>60)."""
    if v == "":
        return ""
    a = parse_number(v)
    if not 1 <= a <= 95:
        return ""
    for i, hi in enumerate((10, 20, 30, 40, 50, 60), start=1):
        if a <= hi:
            return str(i)
    return "7"


def _yymmddhh(v: str) -> tuple:
    if len(v) != 8 or not v.isdigit():
        raise ValueError(f"expected an hour stamp YYMMDDHH, got {v!r}")
    return datetime.date(2000 + int(v[0:2]), int(v[2:4]), int(v[4:6])), int(v[6:8])


def _hour_of_day(v: str) -> str:
    return str(_yymmddhh(v)[1])


def _weekday(v: str) -> str:
    return _yymmddhh(v)[0].strftime("%w")  # Sunday = 0, as FuxiCTR's Avazu convert_weekday


def _weekend(v: str) -> str:
    return "1" if _yymmddhh(v)[0].strftime("%w") in ("6", "0") else "0"


def _libfm_index(v: str) -> str:
    idx, colon, val = v.partition(":")
    if not colon:
        raise ValueError(f"{v!r} is not an 'index:value' pair")
    if not (idx.isascii() and idx.isdigit()):
        raise ValueError(f"pair {v!r}: the index {idx!r} is not a non-negative integer")
    try:
        one = parse_number(val) == 1
    except ValueError:
        raise ValueError(f"pair {v!r}: the value {val!r} is not a finite number") from None
    if not one:  # 0 means the feature is absent in libFM; a row of one-hot fields holds value 1 in each
        raise ValueError(f"pair {v!r}: the value {val!r} is not 1 (a row has one feature of value 1 per field)")
    return str(int(idx))  # "03" and "3" are one index, as libFM reads them


TRANSFORMS: dict[str, Callable[[str], str]] = {
    "isrc_country": _isrc_country,  # KKBox isrc → 2-letter country code
    "kkbox_age": _kkbox_age,  # KKBox bd → 7 age buckets
    "hour_of_day": _hour_of_day,  # Avazu hour YYMMDDHH → "0".."23"
    "weekday": _weekday,  # Avazu hour YYMMDDHH → "0" (Sunday) .. "6"
    "weekend": _weekend,  # Avazu hour YYMMDDHH → "1" on Saturday/Sunday
    "libfm_index": _libfm_index,  # "idx:val" → "idx"
}


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str = "categorical"
    min_count: int = 1
    max_len: int = 1
    splitter: str = "|"
    na_value: str = ""
    pandas_na: bool = True  # PANDAS_NA_STRINGS are missing values too (FuxiCTR's pandas reader)
    zero_is_missing: bool = True  # numeric_bucket only
    source: str = ""  # raw column this field reads ("" = the field's own name)
    transform: str = ""  # a TRANSFORMS key applied to the raw value first ("" = none)

    def __post_init__(self):
        if self.kind not in COLUMN_KINDS:
            raise ValueError(f"column {self.name!r}: kind {self.kind!r} not in {COLUMN_KINDS}")
        for key in ("min_count", "max_len"):  # 3.0 would fail later as a bare TypeError; 1.5 would pass unnoticed
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"column {self.name!r}: {key} must be an integer, got {value!r}")
        if self.min_count < 1:
            raise ValueError(f"column {self.name!r}: min_count must be >= 1, got {self.min_count}")
        if self.kind == "sequence" and self.max_len < 1:
            raise ValueError(f"column {self.name!r}: sequence max_len must be >= 1")
        if self.kind != "sequence" and self.max_len != 1:
            raise ValueError(f"column {self.name!r}: max_len applies to sequence fields only")
        if self.kind == "sequence" and not self.splitter:
            raise ValueError(f"column {self.name!r}: a sequence needs a splitter")
        if not isinstance(self.pandas_na, bool):
            raise ValueError(f"column {self.name!r}: pandas_na must be true or false, got {self.pandas_na!r}")
        if self.transform and self.transform not in TRANSFORMS:
            raise ValueError(f"column {self.name!r}: transform {self.transform!r} not in {sorted(TRANSFORMS)}")

    @property
    def raw(self) -> str:
        return self.source or self.name

    @property
    def fill(self) -> str:
        """What a missing raw value becomes: ``na_value`` ("" for a number, whatever na_value says)."""
        return "" if self.kind == "numeric_bucket" else self.na_value

    @property
    def missing_strings(self) -> frozenset:
        """Raw values that are missing: :attr:`fill`, and PANDAS_NA_STRINGS with ``pandas_na``."""
        own = frozenset({self.fill})
        return own | PANDAS_NA_STRINGS if self.pandas_na else own


# ------------------------------------------------------------------------------------ label rule

DROP = -1.0  # label value of a row the rule drops (e.g. MovieLens rating 3)


@dataclasses.dataclass(frozen=True)
class LabelRule:
    """How a raw label becomes 0/1 or is dropped.

    ``map``: the raw string must be a key of ``mapping`` (else the row is bad).
    ``threshold``: float(raw) ≥ ``positive_min`` → 1, ≤ ``negative_max`` → 0, in between → dropped
    (MovieLens: ``threshold:4:2`` keeps ratings 4, 5 as positives, 1, 2 as negatives, drops 3).
    """

    kind: str = "map"
    mapping: tuple = (("0", 0.0), ("1", 1.0), ("0.0", 0.0), ("1.0", 1.0))
    positive_min: float = 1.0
    negative_max: float = 0.0

    @classmethod
    def parse(cls, text: str, default: "LabelRule | None" = None) -> "LabelRule":
        """"" → ``default``; "binary"; "libfm" (1/+1 → 1, -1/0 → 0); "threshold:POS:NEG";
        "map:raw=0|1,raw=0|1,..."."""
        text = (text or "").strip()
        if not text:
            return default or cls()
        if text == "binary":
            return cls()
        if text == "libfm":
            return cls(mapping=(("1", 1.0), ("+1", 1.0), ("-1", 0.0), ("0", 0.0)))
        kind, _, rest = text.partition(":")
        try:
            if kind == "threshold":
                pos, neg = (float(t) for t in rest.split(":"))
                if not (math.isfinite(pos) and math.isfinite(neg)):
                    raise ValueError("POS and NEG must be finite numbers")
                if neg >= pos:
                    raise ValueError("NEG must be < POS")
                return cls(kind="threshold", mapping=(), positive_min=pos, negative_max=neg)
            if kind == "map":
                pairs = tuple((k, float(v)) for k, _, v in (p.partition("=") for p in rest.split(",")))
                if not pairs or any(v not in (0.0, 1.0) for _, v in pairs):
                    raise ValueError("every mapped label must be 0 or 1")
                both = sorted({k for k, v in pairs if (k, 1.0 - v) in pairs})
                if both:
                    raise ValueError(f"raw value(s) {both} mapped to both 0 and 1")
                return cls(mapping=pairs)
        except ValueError as e:
            raise ValueError(f"label rule {text!r}: {e}") from None
        raise ValueError(f"label rule {text!r}: use binary, libfm, threshold:POS:NEG or map:raw=0|1,...")

    def describe(self) -> str:
        if self.kind == "threshold":
            return f">= {self.positive_min:g} -> 1, <= {self.negative_max:g} -> 0, otherwise dropped"
        return "one of " + str(sorted(k for k, _ in self.mapping))

    def apply(self, values: Sequence[str]) -> tuple[np.ndarray, dict]:
        """Label per distinct raw value (float32; DROP for dropped) and {entry: message} of bad ones."""
        out = np.empty(len(values), np.float32)
        bad = {}
        if self.kind == "map":
            m = dict(self.mapping)
            for j, v in enumerate(values):
                lab = m.get(v)
                if lab is None:
                    bad[j] = f"label {v!r} is not {self.describe()}"
                    lab = DROP
                out[j] = lab
            return out, bad
        for j, v in enumerate(values):
            try:
                f = parse_number(v)
            except ValueError:
                bad[j] = f"label {v!r} is not a number ({self.describe()})"
                out[j] = DROP
                continue
            out[j] = 1.0 if f >= self.positive_min else (0.0 if f <= self.negative_max else DROP)
        return out, bad


# ------------------------------------------------------------------------------------ blocks


@dataclasses.dataclass
class Block:
    """Consecutive rows of one raw file, column by column."""

    path: str
    line_numbers: np.ndarray  # int64 [n], 1-based line numbers (for error messages)
    row_index: np.ndarray  # int64 [n], 0-based data-row index in the file, counting skipped rows
    columns: dict  # raw column name (LABEL for the label) -> (indices int32 [n], values) or a polars Series
    skipped: int = 0  # malformed rows skipped in this block (on_bad_rows="skip")
    error: str = ""  # on_bad_rows="error": the malformed row right after the block's rows (``row_error``)

    def __len__(self) -> int:
        return int(self.line_numbers.shape[0])


def encode_local(strings: Sequence[str]) -> tuple[np.ndarray, list]:
    """Dictionary-encode a list of strings in first-seen order: (indices int32, distinct values)."""
    d: dict = {}
    setdefault = d.setdefault
    idx = [setdefault(v, len(d)) for v in strings]
    return np.fromiter(idx, np.int32, len(idx)), list(d)


def make_block(path: str, lines: Sequence[int], rows: Sequence[Sequence[str]], names: Sequence[str],
               *, header_lines: int = 0, skipped: int = 0, error: str = "") -> Block:
    """Block from Python rows (lists of strings, one per name); ``names[i]`` may be LABEL."""
    n = len(rows)
    lines = np.asarray(lines, dtype=np.int64)
    cols = {}
    for j, name in enumerate(names):
        cols[name] = encode_local([r[j] for r in rows]) if n else (np.zeros(0, np.int32), [])
    return Block(path, lines, lines - 1 - header_lines, cols, skipped, error)


# ------------------------------------------------------------------------------------ bucketing


_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)


def parse_number(text: str) -> float:
    """A finite number written as pandas' CSV parser reads one: ASCII digits, an optional sign, point and
    exponent, spaces around. Python's ``float`` also takes '1_000', fullwidth or Arabic-Indic digits,
    'inf' and 'nan'; those are a ValueError here, as they are not numbers of a CTR file."""
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{text!r} is not a number")
    f = float(text)
    if not math.isfinite(f):  # (1e999)
        raise ValueError(f"{text!r} is not a finite number")
    return f


def bucket_value(v: float) -> int:
    """⌊(ln v)²⌋ if v > 2 else int(v) (truncation toward 0); spec §1.3."""
    return int(math.floor(math.log(v) ** 2)) if v > 2 else int(v)


def iter_lines(fh, chunk_rows: int, *, path: str = "?", encoding: str = "utf-8", first_line: int = 1,
               strict: bool = True) -> Iterator[list]:
    """Yield lists of up to ``chunk_rows`` decoded lines from a file opened in BINARY mode.

    Each line is decoded on its own, so undecodable bytes are a DataFormatError naming their line
    (``strict``), or an :class:`Undecodable` in the list for a data reader to treat as a malformed row.
    The lines before damaged compressed data are yielded before its error, as the fast engines read them.
    """
    buf, line_no, lines = [], first_line, iter(fh)
    while True:
        try:
            raw = next(lines)
        except StopIteration:
            break
        except DataFormatError:  # damaged compressed data: an error in the whole lines before it comes first
            if buf:
                yield buf
            raise
        try:
            buf.append(raw.decode(encoding))
        except UnicodeDecodeError as e:
            reason = e.reason
            try:  # the reason for the line's text without its ending, as the fast engines decode it ("é" at
                raw.rstrip(b"\r\n").decode(encoding)  # the end: "unexpected end of data", not "invalid
            except UnicodeDecodeError as text_error:  # continuation byte" for the newline after it)
                reason = text_error.reason
            if strict:
                raise DataFormatError(f"{path}:{line_no}: {Undecodable(reason, encoding).problem}") from None
            buf.append(Undecodable(reason, encoding))
        line_no += 1
        if len(buf) >= chunk_rows:
            yield buf
            buf = []
    if buf:
        yield buf
