"""From the ``config.data`` section to an opened, cached dataset (int32 memmaps + feature map)."""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import numpy as np

from kdef_jax.data import checksums
from kdef_jax.data.feature_map import FeatureMap
from kdef_jax.data.formats import movielens as movielens_mod
from kdef_jax.data.formats.delimited import lines_to_block as delimited_lines_to_block
from kdef_jax.data.formats.delimited import open_layout, read_delimited
from kdef_jax.data.formats.libfm import lines_to_block as libfm_lines_to_block
from kdef_jax.data.formats.libfm import read_featindex, read_libfm
from kdef_jax.data.formats.movielens import read_movielens
from kdef_jax.data.formats.tfds import read_tfds, tfds_identity
from kdef_jax.data.preprocess import SPLITS, SourceSpec, build_cache, file_identity
from kdef_jax.data.schema import LABEL, ColumnSpec, DataFormatError, LabelRule, open_raw
from kdef_jax.data.synthetic import CRITEO_VOCAB, SMALL_VOCAB, SyntheticSpec, build_synthetic

FORMATS = ("synthetic", "libfm", "delimited", "movielens", "tfds")
SYNTHETIC_PRESETS = {"small": SMALL_VOCAB, "criteo": CRITEO_VOCAB}


@dataclasses.dataclass
class Split:
    name: str
    x: np.ndarray  # int32 [N, C], memmap
    y: np.ndarray  # float32 [N]
    line: np.ndarray | None = None  # int64 [N], each row's 1-based line in its raw file (a cache built keep_lines)

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
    """$KDEF_DATA_DIR, else ../shared/data beside the repository checkout; an installed copy (no checkout
    around it: its parents[2] is site-packages) has no such default and says so."""
    env = os.environ.get("KDEF_DATA_DIR")
    if env:
        return Path(env)
    if not (repo_root() / "pyproject.toml").is_file():
        raise FileNotFoundError("no data directory: set KDEF_DATA_DIR or --config.data.data_dir (the default, "
                                "../shared/data beside the repository, applies to a source checkout only)")
    return repo_root().parent / "shared" / "data"


def default_cache_dir() -> Path:
    env = os.environ.get("KDEF_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "kdef_jax"


def resolve_data_dir(cfg) -> Path:
    if cfg.data_dir:
        return Path(cfg.data_dir).expanduser()
    return default_data_dir() / cfg.subdir


def open_cache(cache_dir: Path, verify: bool = True, log=None) -> Dataset:
    """The cache folder's arrays (memmaps) and feature map; ``verify``: check the arrays against the
    cache's ``checksums.json`` first (kdef_jax.data.checksums)."""
    fmap = FeatureMap.load(cache_dir / "feature_map.json")
    missing = [f"{s}_{a}.npy" for s in fmap.num_rows for a in ("x", "y") if not (cache_dir / f"{s}_{a}.npy").exists()]
    if missing:
        raise ValueError(f"{cache_dir}: incomplete cache, feature_map.json lists {', '.join(missing)} but they are "
                         f"missing; delete the folder")
    def load(path: Path):
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:  # a truncated or overwritten file
            raise ValueError(f"{path}: damaged cache file ({e}); delete the folder {cache_dir} to rebuild it") from None

    if verify:
        checksums.verify(cache_dir, log)

    splits = {}
    for s in SPLITS:
        if (cache_dir / f"{s}_x.npy").exists():
            x, y = load(cache_dir / f"{s}_x.npy"), load(cache_dir / f"{s}_y.npy")
            line_path = cache_dir / f"{s}_line.npy"
            line = load(line_path) if line_path.exists() else None
            if (x.shape != (fmap.num_rows.get(s, -1), fmap.num_columns) or y.shape != (x.shape[0],)
                    or (line is not None and line.shape != y.shape)):
                raise ValueError(f"{cache_dir}: {s} arrays {x.shape}/{y.shape} do not match feature_map.json; delete the folder")
            splits[s] = Split(s, x, y, line)
    return Dataset(fmap, splits, cache_dir)


FIELD_OPTION_KEYS = ("kind", "min_count", "max_len", "splitter", "na_value", "pandas_na", "source", "transform",
                     "zero_is_missing")


def column_specs(cfg) -> tuple:
    """``data.fields`` + ``data.numeric_fields`` + ``data.field_options`` → ColumnSpecs (model order)."""
    numeric = set(cfg.numeric_fields)
    unknown = numeric - set(cfg.fields)
    if unknown:
        raise ValueError(f"config data.numeric_fields {sorted(unknown)} are not in data.fields")
    options = cfg.field_options.to_dict() if hasattr(cfg.field_options, "to_dict") else dict(cfg.field_options)
    stray = set(options) - set(cfg.fields)
    if stray:
        raise ValueError(f"config data.field_options {sorted(stray)} are not in data.fields")
    if len(set(cfg.fields)) != len(cfg.fields):
        raise ValueError(f"config data.fields has duplicates: {list(cfg.fields)}")
    cols = []
    for f in cfg.fields:
        o = dict(options.get(f, {}))
        bad = set(o) - set(FIELD_OPTION_KEYS)
        if bad:
            raise ValueError(f"config data.field_options.{f}: unknown keys {sorted(bad)} (use {FIELD_OPTION_KEYS})")
        o.setdefault("kind", "numeric_bucket" if f in numeric else "categorical")
        o.setdefault("min_count", cfg.min_count)
        o.setdefault("pandas_na", cfg.pandas_na)
        if cfg.format == "libfm":
            o.setdefault("transform", "libfm_index")
        try:
            cols.append(ColumnSpec(name=f, **o))
        except (TypeError, ValueError) as e:
            raise ValueError(f"config data.field_options.{f}: {e}") from None
    leak = [c.name for c in cols if c.raw == cfg.label_column] if cfg.format in ("delimited", "movielens", "tfds") else []
    if leak:  # the label as an input: the model would read its own target
        raise ValueError(f"config data.fields: {leak} read the label column {cfg.label_column!r} (data.label_column); "
                         f"drop it, or give it another raw column with data.field_options.{leak[0]}.source")
    return tuple(cols)


def _columnar():
    """The fast engines' module, imported on first use: numba and polars take ~0.5 s to import, which a
    synthetic, tfds or MovieLens dataset never needs."""
    from kdef_jax.data.formats import columnar

    return columnar


def _engine(cfg) -> str:
    """``native`` / ``columnar`` (the ``preprocess`` extra: numba, polars) or ``python``; ``auto`` picks
    ``native`` when numba is installed."""
    columnar_mod = _columnar()
    if cfg.engine == "python" or (cfg.engine == "auto" and not columnar_mod.available("native")):
        return "python"
    engine = "native" if cfg.engine == "auto" else cfg.engine
    if not columnar_mod.available(engine):
        raise ImportError(f"config data.engine={cfg.engine!r} needs the 'preprocess' extra (numba, polars): "
                          "pip install 'kdef-jax[preprocess]'")
    return engine


def _libfm_reader(cfg, fields, engine):
    if engine == "python":
        return functools.partial(read_libfm, field_names=fields, on_bad_rows=cfg.on_bad_rows)

    def read(path, admit=None, emit=None):
        with open_raw(path) as fh:  # empty once decompressed, as the Python engine says
            if not fh.peek(1):
                raise DataFormatError(f"{path}: file is empty")
        slow = functools.partial(_libfm_slow, path=path, fields=fields, on_bad_rows=cfg.on_bad_rows)
        return _columnar().read_blocks(path, names=(LABEL, *fields), wanted=(LABEL, *fields), keys=(LABEL, *fields),
                                       delimiter=" ", slow=slow, parser=engine, admit=admit, emit=emit,
                                       any_whitespace=True)

    read.takes_hooks = True
    return read


def _libfm_slow(lines, first_line, *, path, fields, on_bad_rows):
    return libfm_lines_to_block(path, lines, first_line, fields, on_bad_rows)


def _delimited_reader(cfg, raw_cols, engine):
    kw = dict(label_column=cfg.label_column, feature_columns=raw_cols, column_names=list(cfg.column_names),
              header=cfg.header, delimiter=cfg.delimiter, quotechar=cfg.quotechar, encoding=cfg.encoding,
              on_bad_rows=cfg.on_bad_rows)
    if engine == "python":
        return functools.partial(read_delimited, **kw)

    def read(path, admit=None, emit=None):
        lay = open_layout(path, **kw)
        keys = (LABEL, *lay.wanted[1:])
        slow = functools.partial(delimited_lines_to_block, lay)
        return _columnar().read_blocks(path, names=lay.names, wanted=lay.wanted, keys=keys, delimiter=lay.delimiter,
                                       quotechar=lay.quotechar, header_lines=lay.header_lines, encoding=lay.encoding,
                                       slow=slow, parser=engine, admit=admit, emit=emit)

    read.takes_hooks = True
    return read


def _source_spec(cfg, vocab: dict | None = None, keep_lines: bool = False) -> SourceSpec:
    columns = column_specs(cfg)
    raw_cols = list(dict.fromkeys(c.raw for c in columns))
    engine = _engine(cfg)
    identity = file_identity
    if cfg.format == "tfds":
        if not cfg.tfds_name:
            raise ValueError("config data.format='tfds' needs data.tfds_name (e.g. movielens/100k-ratings)")
        files = tuple((s, cfg.files[s]) for s in SPLITS if cfg.files[s])
        root = Path(cfg.data_dir).expanduser() if cfg.data_dir else None
        reader = functools.partial(read_tfds, name=cfg.tfds_name, data_dir=str(root) if root else None,
                                   label_column=cfg.label_column, feature_columns=raw_cols)
        identity = functools.partial(tfds_identity, name=cfg.tfds_name, data_dir=str(root) if root else None)
        reader_key = {"format": "tfds", "name": cfg.tfds_name, "label": cfg.label_column}
        default_rule = LabelRule.parse("threshold:4:2")
    else:
        root = resolve_data_dir(cfg)
        named = [cfg.files[s] for s in SPLITS if cfg.files[s]]
        only_absolute = named and all(Path(n).is_absolute() for n in named) and cfg.format in ("libfm", "delimited") \
            and not cfg.featindex  # absolute file paths need no data directory
        if not root.is_dir() and not only_absolute:
            raise FileNotFoundError(
                f"data directory {root} does not exist (config data.data_dir={cfg.data_dir!r}, "
                f"data.subdir={cfg.subdir!r}, KDEF_DATA_DIR={os.environ.get('KDEF_DATA_DIR')!r})"
            )
        files = []
        for split in SPLITS:
            name = cfg.files[split]
            if name:
                path = root / name
                need_file(path, f"data file for split {split!r}", f"config data.files.{split}")
                files.append((split, str(path)))
        files = tuple(files)
        if cfg.format == "libfm":
            reader = _libfm_reader(cfg, list(cfg.fields), engine)
            reader_key = {"format": "libfm", "fields": list(cfg.fields)}
            default_rule = LabelRule.parse("libfm")
        elif cfg.format == "movielens":
            reader = functools.partial(read_movielens, meta_dir=str(root), variant=cfg.movielens_variant,
                                       feature_columns=raw_cols, label_column=cfg.label_column,
                                       on_bad_rows=cfg.on_bad_rows)
            meta = movielens_mod.VARIANTS.get(cfg.movielens_variant)
            if meta is None:
                raise ValueError(f"config data.movielens_variant={cfg.movielens_variant!r}; use 100k or 1m")
            metas = [root / meta[k] for k in ("users", "items", "genres") if meta[k]]
            for m in metas:
                need_file(m, "MovieLens metadata file", f"data.movielens_variant={cfg.movielens_variant!r} reads it")
            reader_key = {"format": "movielens", "variant": cfg.movielens_variant, "label": cfg.label_column,
                          "meta": [file_identity(str(m)) for m in metas]}
            default_rule = LabelRule.parse("threshold:4:2")
        else:
            reader = _delimited_reader(cfg, raw_cols, engine)
            reader_key = {"format": "delimited", "label": cfg.label_column, "cols": list(cfg.column_names),
                          "header": cfg.header, "delim": cfg.delimiter, "quote": cfg.quotechar, "enc": cfg.encoding}
            default_rule = LabelRule()
    if not any(s == "train" for s, _ in files) and vocab is None:
        raise ValueError("config data.files.train is empty: a training file is required")
    if vocab is not None and set(vocab) != {c.name for c in columns}:
        raise ValueError(f"the vocabulary's fields {sorted(vocab)} are not the config's {sorted(c.name for c in columns)}")
    featindex = None
    if cfg.featindex:
        if cfg.format != "libfm":
            raise ValueError("config data.featindex applies to data.format='libfm' only")
        fi_path = resolve_data_dir(cfg) / cfg.featindex
        need_file(fi_path, "feature index", "config data.featindex")
        featindex = read_featindex(str(fi_path))
        reader_key["featindex"] = file_identity(str(fi_path))
    return SourceSpec(
        dataset_id=cfg.name,
        columns=columns,
        files=files,
        reader=reader,
        reader_key=reader_key,
        label_rule=LabelRule.parse(cfg.label_rule, default_rule),
        on_bad_rows=cfg.on_bad_rows,
        split=cfg.split,
        valid_mod=cfg.valid_mod,
        split_fractions=tuple(cfg.split_fractions),
        split_seed=cfg.split_seed,
        featindex=featindex,
        identity=identity,
        vocab=vocab,
        keep_lines=keep_lines,
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


def check_source(cfg) -> None:
    """Raises what :func:`load_dataset` would on ``cfg`` before reading a row (an unknown format, a
    missing data directory or split file, named), so a sweep of configs fails before any of them trains."""
    if cfg.format not in FORMATS:
        raise ValueError(f"config data.format={cfg.format!r}; choose one of {FORMATS}")
    if cfg.format != "synthetic":
        _source_spec(cfg)


def need_file(path: Path, what: str, where: str) -> None:
    """Nothing for a regular file (or a link to one); else an error saying what ``path`` is instead: a
    folder (IsADirectoryError), a broken link or nothing (FileNotFoundError), a pipe or device (ValueError)."""
    if path.is_file():
        return
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder, not a file ({where})")
    if path.is_symlink():
        raise FileNotFoundError(f"{what} {path} is a link to {os.readlink(path)}, which does not exist ({where})")
    if path.exists():
        raise ValueError(f"{what} {path} is not a regular file (a pipe, socket or device: {where})")
    raise FileNotFoundError(f"{what} not found: {path} ({where})")


def load_dataset(cfg, log=print, vocab: dict | None = None, keep_lines: bool = False) -> Dataset:
    """Build (once) and open the dataset that ``config.data`` describes. ``vocab`` ({field: tokens},
    a trained run's ``vocab.json``): encode the files with that vocabulary instead of one counted
    on their train rows (unseen values → OOV), so a trained model reads them; no train file needed.
    ``keep_lines``: each split also records its rows' raw-file lines (``Split.line``; raw formats).
    ``log``: where progress lines go (None: nowhere)."""
    log = log or (lambda *a, **k: None)
    if cfg.format not in FORMATS:
        raise ValueError(f"config data.format={cfg.format!r}; choose one of {FORMATS}")
    cache_root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    if cache_root.exists() and not cache_root.is_dir():
        where = "config data.cache_dir" if cfg.cache_dir else "$KDEF_CACHE_DIR" if os.environ.get("KDEF_CACHE_DIR") else "the default"
        raise FileExistsError(f"the data cache folder {cache_root} ({where}) is a file; give a folder (nothing was changed)")
    if cfg.format == "synthetic" and vocab is not None:
        raise ValueError("config data.format='synthetic' has no vocabulary to encode other files with")
    if cfg.format == "synthetic":
        path = build_synthetic(synthetic_spec(cfg), cache_root, dataset_id=cfg.name or "synthetic", log=log)
    else:
        if cfg.on_bad_rows not in ("error", "skip"):
            raise ValueError(f"config data.on_bad_rows={cfg.on_bad_rows!r}; use 'error' or 'skip'")
        hashed = cfg.format in ("libfm", "delimited") and _engine(cfg) != "python"
        path = build_cache(_source_spec(cfg, vocab, keep_lines), cache_root, log=log, hashed=hashed)
    ds = open_cache(path, verify=cfg.verify_cache, log=log)
    skipped = ds.feature_map.skipped_rows
    if skipped:
        log(f"[data] skipped malformed rows (on_bad_rows='skip'): {skipped}")
    dropped = ds.feature_map.info.get("dropped_by_label_rule")
    if dropped:
        log(f"[data] rows dropped by the label rule ({ds.feature_map.info.get('label_rule')}): {dropped}")
    return ds
