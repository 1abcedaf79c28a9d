"""tensorflow-datasets (optional ``tfds`` extra, no TensorFlow needed): a TFDS dataset into the cache.

Reads a prepared TFDS dataset through ``tfds.data_source`` (random access, array_record files; no
TensorFlow), e.g. ``movielens/100k-ratings`` or ``movielens/1m-ratings``, and yields the same
:class:`~kdef_jax.data.schema.Block`s as the file readers, so it shares the vocabulary rules,
splits, label rules and cache format. ``data.files.train`` etc. are TFDS split strings
("train", "train[:80%]", ...). Values become strings: text as is, numbers via ``str`` of the Python
value (a float rating 4.0 → "4.0", so ``label_rule="threshold:4:2"`` works), booleans "0"/"1", and
1-D arrays (``movie_genres``) as their elements joined with ``^`` — a sequence field with splitter ``^``.
Error messages name the dataset, split and 1-based record number.
"""

from __future__ import annotations

import importlib
from typing import Iterator, Sequence

import numpy as np

from kdef_jax.data.schema import LABEL, DataFormatError, make_block


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - depends on the extra
        raise ImportError("data.format='tfds' needs tensorflow-datasets: pip install 'kdef-jax[tfds]'") from e
    return tfds


def _import_builder(name: str) -> None:
    """TFDS imports dataset modules lazily; make sure the builder of ``name`` is registered."""
    family = name.split("/")[0].split(":")[0]
    for group in ("structured", "recommendation", "text", "image_classification"):
        try:
            importlib.import_module(f"tensorflow_datasets.{group}.{family}")
            return
        except ImportError:
            continue


def _source(name: str, split: str, data_dir: str | None):
    tfds = _tfds()
    _import_builder(name)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - TFDS raises many kinds; report them uniformly
        raise DataFormatError(f"tfds:{name}[{split}]: cannot open ({type(e).__name__}: {e})") from e


def tfds_identity(split: str, *, name: str, data_dir: str | None) -> list:
    src = _source(name, split, data_dir)
    info = getattr(getattr(src, "dataset_info", None), "version", "")
    return [name, split, data_dir or "", str(info), len(src)]


def to_text(v) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, str):
        return v
    a = np.asarray(v)
    if a.ndim == 0:
        x = a.item()
        if isinstance(x, bool):
            return "1" if x else "0"
        if isinstance(x, bytes):
            return x.decode("utf-8")
        return str(x)
    return "^".join(to_text(e) for e in a.reshape(-1).tolist())


def read_tfds(split: str, *, name: str, data_dir: str | None, label_column: str, feature_columns: Sequence[str],
              chunk_rows: int = 50_000) -> Iterator:
    """Yield Blocks of one TFDS split with the label and ``feature_columns`` features."""
    src = _source(name, split, data_dir)
    wanted = [label_column, *dict.fromkeys(feature_columns)]
    where = f"tfds:{name}[{split}]"
    n = len(src)
    if n == 0:
        raise DataFormatError(f"{where}: the split is empty")
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        records = [src[i] for i in range(lo, hi)]
        rows = []
        for k, rec in enumerate(records):
            missing = [c for c in wanted if c not in rec]
            if missing:
                raise DataFormatError(f"{where}:{lo + k + 1}: features {missing} are not in the record "
                                      f"(it has {sorted(rec)})")
            try:
                rows.append([to_text(rec[c]) for c in wanted])
            except UnicodeDecodeError as e:
                raise DataFormatError(f"{where}:{lo + k + 1}: undecodable bytes ({e.reason})") from None
        block = make_block(where, np.arange(lo + 1, hi + 1), rows, (LABEL, *wanted[1:]))
        yield block
