"""From the ``config.data`` section to an opened, cached dataset (int32 memmaps + feature map)."""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import numpy as np

from kdef_jax.data.feature_map import FeatureMap
from kdef_jax.data.formats.delimited import read_delimited
from kdef_jax.data.formats.libfm import read_libfm
from kdef_jax.data.preprocess import SPLITS, SourceSpec, build_cache
from kdef_jax.data.schema import ColumnSpec
from kdef_jax.data.synthetic import CRITEO_VOCAB, SMALL_VOCAB, SyntheticSpec, build_synthetic

FORMATS = ("synthetic", "libfm", "delimited")
SYNTHETIC_PRESETS = {"small": SMALL_VOCAB, "criteo": CRITEO_VOCAB}


@dataclasses.dataclass
class Split:
    name: str
    x: np.ndarray  # int32 [N, C], memmap
    y: np.ndarray  # float32 [N]

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclasses.dataclass
class Dataset:
    feature_map: FeatureMap
    splits: dict  # name -> Split
    cache_dir: Path


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """$KDEF_DATA_DIR, else ../shared/data beside the repository root."""
    env = os.environ.get("KDEF_DATA_DIR")
    if env:
        return Path(env)
    return repo_root().parent / "shared" / "data"


def default_cache_dir() -> Path:
    env = os.environ.get("KDEF_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "kdef_jax"


def resolve_data_dir(cfg) -> Path:
    if cfg.data_dir:
        return Path(cfg.data_dir).expanduser()
    return default_data_dir() / cfg.subdir


def open_cache(cache_dir: Path) -> Dataset:
    fmap = FeatureMap.load(cache_dir / "feature_map.json")
    splits = {}
    for s in SPLITS:
        if (cache_dir / f"{s}_x.npy").exists():
            x = np.load(cache_dir / f"{s}_x.npy", mmap_mode="r")
            y = np.load(cache_dir / f"{s}_y.npy", mmap_mode="r")
            if x.shape != (fmap.num_rows.get(s, -1), fmap.num_columns) or y.shape != (x.shape[0],):
                raise ValueError(f"{cache_dir}: {s} arrays {x.shape}/{y.shape} do not match feature_map.json; delete the folder")
            splits[s] = Split(s, x, y)
    return Dataset(fmap, splits, cache_dir)


def _source_spec(cfg) -> SourceSpec:
    root = resolve_data_dir(cfg)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data directory {root} does not exist (config data.data_dir={cfg.data_dir!r}, "
            f"data.subdir={cfg.subdir!r}, KDEF_DATA_DIR={os.environ.get('KDEF_DATA_DIR')!r})"
        )
    files = []
    for split in SPLITS:
        name = cfg.files[split]
        if name:
            path = root / name
            if not path.is_file():
                raise FileNotFoundError(f"data file for split {split!r} not found: {path} (config data.files.{split})")
            files.append((split, str(path)))
    if not any(s == "train" for s, _ in files):
        raise ValueError("config data.files.train is empty: a training file is required")
    numeric = set(cfg.numeric_fields)
    unknown = numeric - set(cfg.fields)
    if unknown:
        raise ValueError(f"config data.numeric_fields {sorted(unknown)} are not in data.fields")
    columns = tuple(
        ColumnSpec(name=f, kind="numeric_bucket" if f in numeric else "categorical", min_count=cfg.min_count)
        for f in cfg.fields
    )
    if cfg.format == "libfm":
        reader = functools.partial(read_libfm, field_names=list(cfg.fields), on_bad_rows=cfg.on_bad_rows)
        reader_key = {"format": "libfm", "fields": list(cfg.fields), "on_bad_rows": cfg.on_bad_rows}
    else:
        reader = functools.partial(
            read_delimited,
            label_column=cfg.label_column,
            feature_columns=list(cfg.fields),
            column_names=list(cfg.column_names),
            header=cfg.header,
            delimiter=cfg.delimiter,
            on_bad_rows=cfg.on_bad_rows,
        )
        reader_key = {"format": "delimited", "label": cfg.label_column, "cols": list(cfg.column_names), "header": cfg.header, "delim": cfg.delimiter, "on_bad_rows": cfg.on_bad_rows}
    return SourceSpec(
        dataset_id=cfg.name,
        columns=columns,
        files=tuple(files),
        reader=reader,
        reader_key=reader_key,
        split=cfg.split,
        valid_mod=cfg.valid_mod,
        split_fractions=tuple(cfg.split_fractions),
        split_seed=cfg.split_seed,
    )


def synthetic_spec(cfg) -> SyntheticSpec:
    s = cfg.synthetic
    if s.preset not in SYNTHETIC_PRESETS:
        raise ValueError(f"config data.synthetic.preset={s.preset!r}; choose one of {sorted(SYNTHETIC_PRESETS)}")
    return SyntheticSpec(
        vocab_sizes=SYNTHETIC_PRESETS[s.preset],
        num_train=s.num_train,
        num_valid=s.num_valid,
        num_test=s.num_test,
        seed=s.seed,
        positive_rate=s.positive_rate,
    )


def load_dataset(cfg, log=print) -> Dataset:
    """Build (once) and open the dataset that ``config.data`` describes."""
    if cfg.format not in FORMATS:
        raise ValueError(f"config data.format={cfg.format!r}; choose one of {FORMATS}")
    cache_root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    if cfg.format == "synthetic":
        path = build_synthetic(synthetic_spec(cfg), cache_root, dataset_id=cfg.name or "synthetic", log=log)
    else:
        if cfg.on_bad_rows not in ("error", "skip"):
            raise ValueError(f"config data.on_bad_rows={cfg.on_bad_rows!r}; use 'error' or 'skip'")
        path = build_cache(_source_spec(cfg), cache_root, log=log)
    ds = open_cache(path)
    skipped = ds.feature_map.skipped_rows
    if skipped:
        log(f"[data] skipped malformed rows (on_bad_rows='skip'): {skipped}")
    return ds
