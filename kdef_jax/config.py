"""The configuration schema (every key a config file may set) and its validation.

Config files in ``configs/`` start from ``base_config()`` and change values; the structure is fixed,
so ``--config.some.key=v`` for a key not listed here is an error that names the key.
"""

from __future__ import annotations

import codecs
import difflib
import functools
import importlib.util
import json
import math
import os
import sys

import ml_collections

from kdef_jax.losses import CONSISTENCIES, VARIANTS
from kdef_jax.run_files import flat_dict


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 2024  # init, dropout and shuffling all derive from it
    c.resume = False  # continue from workdir/checkpoints/latest

    c.data = ml_collections.ConfigDict()
    d = c.data
    d.name = "synthetic"  # dataset id (cache folder name, results)
    d.format = "synthetic"  # synthetic | libfm | delimited | movielens | tfds (kdef_jax/data/dataset.py)
    d.data_dir = ""  # "" → $KDEF_DATA_DIR/<subdir> ($KDEF_DATA_DIR defaults to ../shared/data)
    d.subdir = ""
    d.cache_dir = ""  # "" → $KDEF_CACHE_DIR or ~/.cache/kdef_jax
    d.verify_cache = True  # check the cache's arrays against the checksums recorded when it was built
    d.files = ml_collections.ConfigDict({"train": "", "valid": "", "test": ""})
    d.split = "files"  # files | mod | random (see kdef_jax.data.preprocess.SourceSpec)
    d.valid_mod = 0
    d.split_fractions = (0.8, 0.1, 0.1)
    d.split_seed = 2018
    d.fields = ()  # feature columns, in model order
    d.numeric_fields = ()  # subset of fields bucketed by ⌊ln² v⌋ (Criteo I1-I13)
    d.min_count = 1  # default for every field (field_options.<name>.min_count overrides)
    # a raw value equal to one of pandas.read_csv's default NA strings ("NA", "null", "NaN", "None", ...)
    # is missing, as in FuxiCTR's pandas reader (kdef_jax.data.schema.PANDAS_NA_STRINGS); False: a token
    d.pandas_na = True
    # Per-field schema overrides, name -> {kind: categorical|numeric_bucket|sequence, min_count,
    # max_len, splitter, na_value, pandas_na, source (raw column), transform (kdef_jax.data.schema.TRANSFORMS)}.
    d.field_options = ml_collections.ConfigDict()
    d.column_names = ()  # delimited files without header: every raw column, in file order
    d.label_column = "label"
    d.label_rule = ""  # "" (format default) | binary | libfm | threshold:POS:NEG | map:raw=0|1,...
    d.header = False
    d.delimiter = "\t"
    d.quotechar = ""  # "" = no quoting (Criteo TSV); '"' for CSV written by pandas (BARS)
    d.encoding = "utf-8"
    d.featindex = ""  # libFM: feature-index file (field:value<TAB>index) in the data dir, e.g. iPinYou
    d.movielens_variant = "100k"  # format=movielens: 100k (u.user/u.item/u.genre) | 1m (users.dat/movies.dat)
    d.tfds_name = ""  # format=tfds: e.g. movielens/100k-ratings; data.files.* are TFDS split strings
    d.engine = "auto"  # auto (native if numba is installed) | native | columnar (polars CSV parser) | python
    d.on_bad_rows = "error"  # error | skip (skipped rows are counted and reported)
    d.synthetic = ml_collections.ConfigDict(
        {"preset": "small", "num_train": 100_000, "num_valid": 20_000, "num_test": 20_000, "seed": 2024, "positive_rate": 0.25}
    )

    c.model = ml_collections.ConfigDict()
    m = c.model
    m.embedding_dim = 16
    m.embedding_init_std = 1e-4
    m.embedding_rows = 0  # table rows; 0 = Σ V_f (more: zero rows no id reaches; set by mesh.embedding="rows")
    m.num_students = 3
    m.student = "mlp"
    m.students = ""  # groups "kind:count,kind:count" (overrides student/num_students); logits [K, B] follow this order
    m.hidden_units = (400, 400, 400)
    m.dropout = 0.1
    m.batch_norm = True
    m.dropout_rng = "hash"  # hash (counter-hash masks, fast) | jax (jax.random.bernoulli)
    m.compute_dtype = "float32"  # float32 | bfloat16 (params and optimizer state stay float32)
    m.group_impl = "auto"  # a group of K students: vmap (batched) | unrolled (per student) | auto (unrolled on CPU)
    m.student_modules = ()  # modules (names or .py paths) registering kinds of your own: use_student_modules
    # Per-kind student settings (kdef_jax/models/registry.py). hidden_units, batch_norm and dropout_rng
    # above are shared by every kind with an MLP tower / BN, as in the reference's EKTF_L; model.dropout
    # is the "mlp" kind's. The kinds the reference never ran (crossnet, dcn*, cin, xdeepfm, autoint, afn)
    # take their own settings (cross/CIN layers, attention, logarithmic neurons) from the reference
    # Backbone's constructor defaults, but dropout 0.1 with the shared width and BN (the Backbone: 0,
    # [64, 64, 64], no BN).
    m.ipnn = ml_collections.ConfigDict({"dropout": 0.1})
    m.final = ml_collections.ConfigDict(
        {"dropout": 0.1, "field_gate": True, "gate_init": "xavier", "blocks": 1}  # gate_init xavier | ones; blocks 1 (1B) | 2 (2B)
    )
    # ECN's batch_norm: its BN when model.batch_norm is on (off = the original ECN's default; spec §2.4)
    m.ecn = ml_collections.ConfigDict({"dropout": 0.1, "num_cross_layers": 3, "batch_norm": True})
    m.crossnet = ml_collections.ConfigDict({"num_cross_layers": 3})
    m.dcnv2 = ml_collections.ConfigDict({"dropout": 0.1, "num_cross_layers": 3})
    m.dcn = ml_collections.ConfigDict({"dropout": 0.1, "num_cross_layers": 3})
    m.cin = ml_collections.ConfigDict({"cin_layers": (16, 16, 16)})
    m.xdeepfm = ml_collections.ConfigDict({"dropout": 0.1, "cin_layers": (16, 16, 16)})
    m.widedeep = ml_collections.ConfigDict({"dropout": 0.1})
    m.deepfm = ml_collections.ConfigDict({"dropout": 0.1})
    m.autoint = ml_collections.ConfigDict(
        {"dropout": 0.1, "attention_layers": 2, "num_heads": 1, "attention_dim": 8, "use_residual": True, "use_scale": True,
         "layer_norm": False}
    )
    m.afn = ml_collections.ConfigDict({"dropout": 0.1, "logarithmic_neurons": 5})

    c.loss = ml_collections.ConfigDict({"variant": "kdef", "consistency": "mse", "huber_delta": 1.0})

    c.optim = ml_collections.ConfigDict()
    o = c.optim
    o.learning_rate = 1e-3
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-8
    o.clip_norm = 10.0  # global-norm clipping (all parameters), 0 disables
    o.embedding_l2 = 0.01  # R = (λ/2)·‖E‖²_F over the whole table, added to the loss
    o.embedding_optimizer = "dense"  # dense (reference) | lazy_adam (row-sparse; rows of the batch only)
    o.lr_decay = 0.1  # LR ×= lr_decay on every non-improving epoch
    o.min_lr = 1e-6
    o.patience = 2  # stop after this many consecutive non-improving epochs
    o.min_delta = 1e-6  # improvement threshold on the teacher's validation AUC

    # Devices (kdef_jax/sharding.py): batch rows split over mesh.data devices (0 = every device the
    # student axis leaves), each student group's K axis over mesh.student; one device = no mesh.
    # mesh.embedding: "replicated" (every device holds the table) or "rows" (the table and its Adam
    # moments split by rows over every device; padded with zero rows to a multiple of the mesh size).
    c.mesh = ml_collections.ConfigDict({"data": 0, "student": 1, "embedding": "replicated"})
    # Many processes (kdef_jax/distributed.py): coordinator "" = one process, "auto" = jax's cluster
    # detection (SLURM, Open MPI, TPU pods), "host:port" = explicit, with num_processes and process_id.
    c.distributed = ml_collections.ConfigDict({"coordinator": "", "num_processes": 0, "process_id": -1})

    c.train = ml_collections.ConfigDict()
    t = c.train
    t.batch_size = 4096
    t.eval_batch_size = 0  # 0 → batch_size
    t.num_epochs = 100
    t.steps_per_epoch = 0  # 0 → full epochs; > 0 truncates (smoke tests, throughput runs)
    t.log_every = 50  # steps between progress-bar loss updates (one host sync each)
    t.prefetch = 2  # batches prepared ahead in a background thread (0 = off)
    t.progress = True  # tqdm bars
    t.plot = True  # training curves PNG at the end (needs matplotlib)
    return c


def load_config_file(spec: str):
    """``configs/x.py[:arg]`` → that file's ``get_config(arg)`` (configs/ is not a package; config files
    use this to build on one another)."""
    path, _, arg = spec.partition(":")
    if os.path.isfile(path) and not path.endswith(".py"):  # e.g. a run's config.json, which records, not configures
        raise FileNotFoundError(f"config file {path!r} is not a Python config (configs/*.py, with get_config()); to "
                                f"resume a run, give the --config and overrides that started it, and --config.resume=True")
    module_spec = importlib.util.spec_from_file_location("_kdef_config", path)
    if module_spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def use_student_modules(c, *modules: str) -> list:
    """Import ``modules`` (dotted module names, or paths of .py files: a relative one is relative to the
    file that calls this, the config file, and recorded absolute), each of which calls
    :func:`kdef_jax.models.registry.register_student`; record them in ``model.student_modules`` (a
    resume, score_run and export_run import them again from the run's config.json) and add a section
    ``model.<kind>`` with each registered kind's settings. Returns the kinds they registered."""
    caller = sys._getframe(1).f_globals.get("__file__")
    here = os.path.dirname(os.path.abspath(caller)) if caller else os.getcwd()
    names = [os.path.abspath(os.path.join(here, n)) if n.endswith(".py") else n for n in modules]
    from kdef_jax.models import registry

    c.model.student_modules = tuple(dict.fromkeys((*c.model.student_modules, *names)))
    resolve_student_modules(c)  # imports them
    return registry.kinds_of(names)


def resolve_student_modules(c) -> list:
    """``model.student_modules`` as a run records it: each .py path absolute (a relative one: from the
    working directory, as given on the command line), each module imported, and a ``model.<kind>``
    section with its settings' defaults for every kind they register that has none. Returns those kinds;
    a value that is not a tuple of strings is left for :func:`validate` to name."""
    from kdef_jax.models import registry

    modules = c.model.get("student_modules", ())
    if not isinstance(modules, (tuple, list)) or not all(isinstance(n, str) and n for n in modules):
        return []
    names = tuple(os.path.abspath(n) if n.endswith(".py") else n for n in modules)
    registry.import_student_modules(names)
    kinds = registry.kinds_of(names)
    with c.unlocked():
        c.model.student_modules = names
        for kind in kinds:
            if kind not in c.model:
                c.model[kind] = ml_collections.ConfigDict(dict(registry.CUSTOM[kind]))
    return kinds


def use_ektf(c, *, embedding_l2: float, batch_size: int, num_students: int = 3, embedding_dim: int = 16,
             hidden_units=(400, 400, 400), dropout: float = 0.1):
    """The authors' EKTF setting of one dataset (spec §5): K MLP students (Linear→BN→ReLU→Dropout per
    hidden layer) on one shared d-dim embedding, the dataset's embedding L2 and batch size."""
    m = c.model
    m.embedding_dim, m.num_students, m.hidden_units, m.dropout = embedding_dim, num_students, tuple(hidden_units), dropout
    c.optim.embedding_l2, c.train.batch_size = embedding_l2, batch_size
    return c


KDEF_LATEST = "ipnn:1,final:1,ecn:1"  # EKTF_L's students, in the reference's order


def use_kdef_latest(c, dropouts=(0.1, 0.1, 0.1), num_cross_layers: int = 3):
    """Make ``c`` KDEF_Latest (EKTF_L): IPNN, FINAL 1B with field gate, ECN, in that order (spec §3.2).

    ``dropouts`` = (net1, net2, net3) = (IPNN, FINAL, ECN); hidden_units and batch_norm stay shared.
    """
    c.model.students = KDEF_LATEST
    c.model.ipnn.dropout, c.model.final.dropout, c.model.ecn.dropout = (float(p) for p in dropouts)
    c.model.ecn.num_cross_layers = num_cross_layers
    return c


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    if text.startswith("(") or text.startswith("["):
        return tuple(_parse_value(t.strip()) for t in text.strip("()[]").split(",") if t.strip())
    return text


STRING_TUPLE_KEYS = ("data.fields", "data.numeric_fields", "data.column_names",  # tuples of names, not numbers
                     "model.student_modules")


def _parse_tuple(text: str, strings: bool) -> tuple:
    """"(a,b)" or "[a, b]" (a trailing comma allowed) → a tuple: of names (``strings``; quotes around one
    are dropped, "(label,1,2)" keeps "1" a name) or of numbers; an empty element or a missing bracket is a
    ValueError."""
    t = text.strip()
    if not (t[:1], t[-1:]) in (("(", ")"), ("[", "]")):
        raise ValueError("expected a tuple such as (400,400)")
    parts = [p.strip() for p in t[1:-1].split(",")]
    if parts and not parts[-1] and len(parts) > 1:  # "(400,)"
        parts = parts[:-1]
    if parts == [""]:
        return ()
    if "" in parts:
        raise ValueError("expected a tuple without an empty element, such as (400,400)")
    if strings:
        return tuple(p[1:-1] if len(p) > 1 and p[0] == p[-1] and p[0] in "'\"" else p for p in parts)
    return tuple(_parse_value(p) for p in parts)


def _parse_as(text: str, like, key: str):
    """``text`` as a value of the type of the field's current value ``like`` (a str field keeps the
    text as it is, e.g. data.name=123); a field without a typed value gets :func:`_parse_value`."""
    try:
        if isinstance(like, bool):
            if text.lower() not in ("true", "false"):  # any case, as absl reads --config.a.b=false
                raise ValueError("expected True or False")
            return text.lower() == "true"
        if isinstance(like, str):
            return text
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
        if isinstance(like, (tuple, list)):
            return _parse_tuple(text, strings=key in STRING_TUPLE_KEYS)
    except ValueError as e:
        what = {int: "an integer", float: "a number"}.get(type(like), type(like).__name__)
        raise ValueError(f"{key}={text!r}: {e if 'expected' in str(e) else 'expected ' + what}") from None
    return _parse_value(text)


class UnknownKeyError(KeyError, ValueError):
    """An override of a key the config does not have: a KeyError, and a ValueError (a bad value of the
    command line) whose text is the message itself (a KeyError's text is its repr, quoted)."""

    def __str__(self) -> str:
        return str(self.args[0])


def unknown_key(config: ml_collections.ConfigDict, key: str) -> str | None:
    """None where the dotted ``key`` is a key of ``config``; else the error naming its first unknown part,
    the closest valid spelling (difflib) and the keys valid there."""
    node, walked = config, []
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            where = ".".join(walked) or "<top level>"
            valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(part, valid, n=1)
            hint = f"did you mean {'.'.join(walked + close)!r}? " if close else ""
            if not close and walked == ["model"] and len(key.split(".")) > 2:  # model.<kind>.<setting>
                hint = "a kind of your own has its section once model.student_modules names its module; "
            return f"unknown config key {key!r} (no {part!r} under {where}; {hint}valid: {', '.join(valid)})"
        node, walked = node[part], walked + [part]
    return None


def config_value(config: ml_collections.ConfigDict, key: str):
    """The value at the dotted ``key`` of ``config`` (a KeyError where a part is missing)."""
    return functools.reduce(lambda node, part: node[part], key.split("."), config)


def set_config_value(config: ml_collections.ConfigDict, key: str, value) -> None:
    """Set the existing dotted ``key`` of ``config`` to ``value``."""
    *path, leaf = key.split(".")
    (config_value(config, ".".join(path)) if path else config)[leaf] = value


def apply_overrides(config: ml_collections.ConfigDict, items) -> None:
    """``KEY=VALUE`` items (dotted keys of the config), each value parsed as its field's type
    (experiments/run_seeds.py's settings, the benchmarks' ``--set``); an unknown key is a KeyError
    naming it (:class:`UnknownKeyError`, also a ValueError), a value of the wrong type a ValueError naming ``KEY=VALUE``."""
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{item!r}: an override is KEY=VALUE")
        error = unknown_key(config, key)
        if error:
            raise UnknownKeyError(error)
        was = config_value(config, key)
        if isinstance(was, ml_collections.ConfigDict):
            raise ValueError(f"{item!r}: {key} is a group of settings; override one of them ({key}.NAME=VALUE)")
        set_config_value(config, key, _parse_as(value, was, key))
        if key == "model.student_modules":  # their kinds' sections, for the overrides that follow
            resolve_student_modules(config)


# model keys read beside the students' own settings (the table, the group's vmap, the dtype); every other
# model key reaches the run only through a student group's settings (kdef_jax/models/registry.py)
_MODEL_KEYS_NOT_OF_STUDENTS = ("embedding_dim", "embedding_init_std", "embedding_rows", "compute_dtype", "group_impl",
                               "num_students", "student", "students", "student_modules")


def check_overrides_are_read(config, base) -> None:
    """A ValueError for an override (``config`` against the config file's own values ``base``) that the run
    would not read: model.num_students or model.student while model.students names the students; a
    student setting no student in use reads (model.dropout, the "mlp" kind's, for KDEF_Latest's IPNN,
    FINAL and ECN; model.ecn.* without an ECN student), found by building the student groups with and
    without it; loss.huber_delta with another loss.consistency than huber. ``config`` is validated first."""
    validate(config)
    m = config.model
    if m.students.strip():
        for key in ("num_students", "student"):
            if m[key] != base.model[key]:
                raise ValueError(f"config model.{key}={m[key]!r} is not read: model.students={m.students!r} names "
                                 f"the students (override model.students instead, e.g. mlp:6)")
    from kdef_jax.models.ensemble import groups_from_config

    spec = m.students.strip() or f"{m.student}:{m.num_students}"
    ours, theirs = flat_dict(m.to_dict()), flat_dict(base.model.to_dict())
    # each override alone on the config file's student settings, with the run's students (the keys above):
    # two overrides that only matter together (model.batch_norm and model.ecn.batch_norm, both False) each count
    alone = base.model.copy_and_resolve_references()
    for key in _MODEL_KEYS_NOT_OF_STUDENTS:
        alone[key] = m[key]
    plain = groups_from_config(alone)
    for key, value in ours.items():
        if key in _MODEL_KEYS_NOT_OF_STUDENTS or key not in theirs or value == theirs[key]:
            continue
        probe = alone.copy_and_resolve_references()
        set_config_value(probe, key, value)
        if groups_from_config(probe) == plain:
            raise ValueError(f"config model.{key}={value!r} is not read: no student of {spec!r} uses it"
                             + (" (model.dropout is the mlp kind's; the others have model.<kind>.dropout)"
                                if key == "dropout" else ""))
    # (loss.consistency and huber_delta under a variant without distillation: a warning of the run, so that
    # a sweep's --set over variants such as mean and kdef passes for both)
    loss, was = config.loss, base.loss
    if loss.huber_delta != was.huber_delta and loss.consistency != "huber":
        raise ValueError(f"config loss.huber_delta={loss.huber_delta!r} is not read: loss.consistency is "
                         f"{loss.consistency!r} (huber_delta is the huber consistency's)")


MAX_SIZE = 2**31  # sizes (widths, batches) index int32 arrays

FLOAT32_MAX = 3.4028234663852886e38  # a float key is used in float32 on the device: 1e39 would be inf there

_TYPE_NAMES = {bool: "True or False", int: "an integer", float: "a number", str: "a string", tuple: "a tuple"}


def _check_types(values: dict, defaults: dict, bad) -> None:
    """Every key of ``defaults`` (base_config's flat leaves) holds a value of its default's type in
    ``values``: a bool for a bool, an int (not a bool) for an int, an int or float for a float, a str
    for a str, a tuple or list for a tuple. A config file or API caller can set any Python value
    (None, True for a width); the command line parses by type already."""
    for key, default in defaults.items():
        v, kind = values.get(key), type(default)
        if kind is bool:
            ok = isinstance(v, bool)
        elif kind is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif kind is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        elif kind is tuple:
            ok = isinstance(v, (tuple, list))
        else:
            ok = isinstance(v, kind)
        if not ok:
            bad(key, f"must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {v!r}")
        if kind is float and math.isfinite(v) and abs(v) > FLOAT32_MAX:
            bad(key, f"must be below 3.4e38 in size (it is used as a float32, where {v!r} is inf)")


_ELEMENT_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", tuple: "tuple"}


def _element_kind(x) -> type:
    """bool, int, float, str or tuple (a list too): the kind of a config tuple's element ``x``."""
    return next((k for k in _ELEMENT_NAMES if isinstance(x, (tuple, list) if k is tuple else k)), type(x))


def _check_elements(key: str, value: tuple, default: tuple, bad) -> None:
    """A tuple setting of a kind of your own holds elements of its default's one element type (an int for a
    float too), and names without brackets or commas (absl keeps an unquoted tuple as one name)."""
    if not default or len({_element_kind(x) for x in default}) > 1:
        return
    want = _element_kind(default[0])
    if not all(_element_kind(x) is want or (want is float and _element_kind(x) is int) for x in value):
        bad(key, f"must be a tuple of {_ELEMENT_NAMES[want]} elements like its default {default!r}, got {value!r}")
    if want is str:
        _check_quoted(key, value, bad)


def _check_quoted(key: str, names: tuple, bad, example: str = "('a','b')") -> None:
    """A tuple of names given unquoted on the command line reaches the config as one name such as "(a,b)"
    (absl keeps a tuple it cannot parse as one string): a name with a bracket or a comma is refused."""
    if any(isinstance(n, str) and (n.lstrip().startswith(("(", "[")) or "," in n) for n in names):
        bad(key, f"{tuple(names)!r}: a name holds a bracket or a comma; on the command line quote each name, "
                 f"e.g. --config.{key}=\"{example}\"")


def validate(c) -> None:
    """Raise ValueError naming the config key for any value the run cannot use."""

    def bad(key, msg):
        raise ValueError(f"config {key}: {msg}")

    from kdef_jax.models import registry  # here: the models import this module's siblings

    registry.import_student_modules(c.model.get("student_modules", ()))  # kinds of the user's own, and their sections
    defaults = flat_dict(base_config().to_dict())
    custom = {f"model.{k}.{key}": v for k, settings in registry.CUSTOM.items() for key, v in settings.items()}
    known = set(defaults) | set(custom)  # data.field_options is free-form, one section per field
    defaults.update({key: v for key, v in custom.items() if key.split(".")[1] in c.model})
    unknown = sorted(k for k in flat_dict(json.loads(c.to_json())) if k not in known and not k.startswith("data.field_options."))
    if unknown:  # a config file's typo (c.train.batchsize = 64) would otherwise be silently ignored
        section, _, leaf = unknown[0].rpartition(".")
        close = difflib.get_close_matches(leaf, [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == section], n=1)
        hint = f"did you mean {'.'.join(filter(None, (section, *close)))!r}?" if close else "misspelt?"
        bad(unknown[0], f"is not a config key ({hint} every key is listed in kdef_jax/config.py:base_config)"
            + (f"; other unknown keys: {', '.join(unknown[1:])}" if unknown[1:] else ""))
    values = flat_dict(c.to_dict())
    _check_types(values, defaults, bad)
    for key, default in custom.items():  # a tuple setting of a kind of your own: elements of its default's type
        if isinstance(default, tuple) and key in values:
            _check_elements(key, tuple(values[key]), default, bad)
    m, o, t, d = c.model, c.optim, c.train, c.data
    if not m.students and (not isinstance(m.num_students, int) or m.num_students < 1):
        bad("model.num_students", f"must be an integer >= 1, got {m.num_students!r}")
    from kdef_jax.models.ensemble import groups_from_config  # here: the models import this module's siblings

    students_key = "model.students" if m.students.strip() else "model.student"
    try:  # the student groups build (known kinds, counts >= 1) before any data is read
        kinds = {g.kind for g in groups_from_config(m)}
    except ValueError as e:
        raise e if str(e).startswith("config ") else ValueError(f"config {students_key}: {e}") from None
    unnamed = sorted(k for k in kinds if k in registry.CUSTOM and k not in registry.kinds_of(m.student_modules))
    if unnamed:  # registered by an import of this process: a resume, score_run, export_run would not know it
        origin = sorted(o for o in registry.ORIGIN[unnamed[0]] if o.endswith(".py")) or sorted(registry.ORIGIN[unnamed[0]])
        bad(students_key, f"student kind {unnamed[0]!r} comes from {origin[0]}, which model.student_modules "
                          f"{tuple(m.student_modules)!r} does not name, so the run could not be rebuilt from its "
                          f"config.json; name it there (use_student_modules in the config file; on the command line, "
                          f"one --config.model.student_modules=PATH per module, all of them)")
    if c.loss.variant not in VARIANTS:
        bad("loss.variant", f"{c.loss.variant!r} is not one of {VARIANTS}")
    if c.loss.variant == "concat":
        if kinds != {"mlp"}:
            bad("loss.variant", f"'concat' (the MLPs_concat head over the students' last hidden layers) needs MLP "
                                f"students; model.students / model.student give {', '.join(sorted(kinds))}")
    if c.loss.consistency not in CONSISTENCIES:
        bad("loss.consistency", f"{c.loss.consistency!r} is not one of {CONSISTENCIES}")
    if not 0.0 <= m.dropout < 1.0:
        bad("model.dropout", f"must be in [0, 1), got {m.dropout}")
    for kind, section in m.items():
        if isinstance(section, ml_collections.ConfigDict) and "dropout" in section and not 0.0 <= section.dropout < 1.0:
            bad(f"model.{kind}.dropout", f"must be in [0, 1), got {section.dropout}")
    if m.final.gate_init not in ("xavier", "ones"):
        bad("model.final.gate_init", f"{m.final.gate_init!r} is not one of xavier, ones")
    if m.final.blocks not in (1, 2):
        bad("model.final.blocks", f"must be 1 (FINAL 1B) or 2 (FINAL 2B), got {m.final.blocks}")
    if "final" in kinds and any(u % 2 for u in m.hidden_units):  # model.students or model.student
        bad("model.hidden_units", f"FINAL students need even widths, got {tuple(m.hidden_units)}")
    if m.dropout_rng not in ("hash", "jax"):
        bad("model.dropout_rng", f"{m.dropout_rng!r} is not one of hash, jax")
    if m.group_impl not in ("auto", "vmap", "unrolled"):
        bad("model.group_impl", f"{m.group_impl!r} is not one of auto, vmap, unrolled")
    if m.compute_dtype not in ("float32", "bfloat16"):
        bad("model.compute_dtype", f"{m.compute_dtype!r} is not one of float32, bfloat16")
    if not 1 <= m.embedding_dim < MAX_SIZE:
        bad("model.embedding_dim", f"must be in [1, 2**31), got {m.embedding_dim}")
    if isinstance(m.hidden_units, str) or not all(isinstance(u, int) and not isinstance(u, bool) for u in m.hidden_units):
        bad("model.hidden_units", f"must be a tuple of integer widths such as (400, 400, 400), got {m.hidden_units!r}")
    if any(not 1 <= u < MAX_SIZE for u in m.hidden_units):
        bad("model.hidden_units", f"widths must be in [1, 2**31), got {tuple(m.hidden_units)}")
    if not 1 <= t.batch_size < MAX_SIZE:
        bad("train.batch_size", f"must be in [1, 2**31), got {t.batch_size}")
    if not 0 <= t.eval_batch_size < MAX_SIZE:
        bad("train.eval_batch_size", f"must be in [0, 2**31), got {t.eval_batch_size}")
    for key, seed in (("seed", c.seed), ("data.split_seed", d.split_seed), ("data.synthetic.seed", d.synthetic.seed)):
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:  # a PRNGKey keeps 32 bits
            bad(key, f"must be an integer in [0, 2**32), got {seed!r}")
    if t.log_every < 1:
        bad("train.log_every", f"must be >= 1, got {t.log_every}")
    if t.num_epochs < 1:
        bad("train.num_epochs", f"must be >= 1, got {t.num_epochs}")
    if not 0 < o.learning_rate < math.inf:  # NaN fails every comparison
        bad("optim.learning_rate", f"must be a finite number > 0, got {o.learning_rate}")
    if not 0 <= o.embedding_l2 < math.inf:
        bad("optim.embedding_l2", f"must be a finite number >= 0, got {o.embedding_l2}")
    if not 0 <= o.min_lr < math.inf:
        bad("optim.min_lr", f"must be a finite number >= 0, got {o.min_lr}")
    if not 0 <= o.min_delta <= 1:  # 1: no epoch after the first counts as improving
        bad("optim.min_delta", f"must be in [0, 1] (the validation AUC gain that counts as improving), got {o.min_delta}")
    if not 0 <= o.clip_norm < math.inf:
        bad("optim.clip_norm", f"must be a finite number >= 0 (0 = no clipping), got {o.clip_norm}")
    for key in ("b1", "b2"):
        if not 0 <= o[key] < 1:
            bad(f"optim.{key}", f"must be in [0, 1), got {o[key]}")
    if not 0 < o.eps < math.inf:
        bad("optim.eps", f"must be a finite number > 0, got {o.eps}")
    if not 0 < c.loss.huber_delta < math.inf:
        bad("loss.huber_delta", f"must be a finite number > 0, got {c.loss.huber_delta}")
    if not 0 <= m.embedding_init_std < math.inf:
        bad("model.embedding_init_std", f"must be a finite number >= 0, got {m.embedding_init_std}")
    if t.steps_per_epoch < 0:
        bad("train.steps_per_epoch", f"must be >= 0 (0 = full epochs), got {t.steps_per_epoch}")
    if t.prefetch < 0:
        bad("train.prefetch", f"must be >= 0 (0 = off), got {t.prefetch}")
    if o.embedding_optimizer not in ("dense", "lazy_adam"):
        bad("optim.embedding_optimizer", f"{o.embedding_optimizer!r} is not one of dense, lazy_adam")
    if not 0 < o.lr_decay <= 1:
        bad("optim.lr_decay", f"must be in (0, 1], got {o.lr_decay}")
    if o.patience < 1:
        bad("optim.patience", f"must be >= 1, got {o.patience}")
    if not isinstance(c.mesh.data, int) or c.mesh.data < 0:
        bad("mesh.data", f"must be an integer >= 0 (0 = all devices), got {c.mesh.data!r}")
    if not isinstance(c.mesh.student, int) or c.mesh.student < 1:
        bad("mesh.student", f"must be an integer >= 1, got {c.mesh.student!r}")
    if c.mesh.embedding not in ("replicated", "rows"):
        bad("mesh.embedding", f"{c.mesh.embedding!r} is not one of replicated, rows")
    if not 0 <= m.embedding_rows < MAX_SIZE:
        bad("model.embedding_rows", f"must be an integer in [0, 2**31) (0 = the feature map's rows), got {m.embedding_rows!r}")
    dist = c.distributed
    if not isinstance(dist.coordinator, str):
        bad("distributed.coordinator", f"must be '', 'auto' or 'host:port', got {dist.coordinator!r}")
    if dist.coordinator not in ("", "auto"):
        host, _, port = dist.coordinator.rpartition(":")
        if not host.strip("[]") or not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            bad("distributed.coordinator", f"{dist.coordinator!r} is not '', 'auto' or 'host:port' (a host name "
                                           f"or address, and a port 1-65535)")
        if not isinstance(dist.num_processes, int) or dist.num_processes < 1:
            bad("distributed.num_processes", f"must be >= 1 with coordinator {dist.coordinator!r}, got {dist.num_processes!r}")
        if not isinstance(dist.process_id, int) or not 0 <= dist.process_id < dist.num_processes:
            bad("distributed.process_id", f"must be in [0, {dist.num_processes}) with coordinator "
                f"{dist.coordinator!r}, got {dist.process_id!r}")
    syn = d.synthetic
    if d.format == "synthetic" and not 0.0 < syn.positive_rate < 1.0:
        bad("data.synthetic.positive_rate", f"must be in (0, 1), got {syn.positive_rate}")
    for n in ("num_train", "num_valid", "num_test") if d.format == "synthetic" else ():
        if not 1 <= syn[n] < MAX_SIZE:
            bad(f"data.synthetic.{n}", f"must be in [1, 2**31), got {syn[n]}")
    if d.split not in ("files", "mod", "random"):
        bad("data.split", f"{d.split!r} is not one of files, mod, random")
    if d.split == "mod" and not 2 <= d.valid_mod < MAX_SIZE:
        bad("data.valid_mod", f"split='mod' needs valid_mod in [2, 2**31), got {d.valid_mod}")
    if d.format != "synthetic" and not d.fields:
        bad("data.fields", "is empty: list the feature columns, e.g. --config.data.fields=\"('user','item')\" "
                           "(no default of every column: an id or the label column would become a feature)")
    if d.format == "delimited" and d.header and d.column_names:
        bad("data.column_names", "is read only without a header, and data.header=True: the header names the "
                                 "columns; leave it empty, or set data.header=False")
    if d.format != "synthetic" and d.split == "files" and d.files.train and not d.files.valid:
        bad("data.files.valid", "is empty, and split='files' takes each split from its own file: give the "
                                "validation file, or draw it from data.files.train with split='random' or split='mod'")
    drawn = {"mod": ("valid",), "random": ("valid", "test")}.get(d.split, ()) if d.format != "synthetic" else ()
    for split in drawn:  # its rows would be added to those the rule draws from the train file
        if d.files[split]:
            bad(f"data.files.{split}", f"split={d.split!r} draws the {split} rows from data.files.train, so "
                                       f"{d.files[split]!r} would be mixed into them; leave it empty, or use split='files'")
    if d.min_count < 1:
        bad("data.min_count", f"must be >= 1, got {d.min_count}")
    if d.engine not in ("auto", "native", "columnar", "python"):
        bad("data.engine", f"{d.engine!r} is not one of auto, native, columnar, python")
    if d.on_bad_rows not in ("error", "skip"):
        bad("data.on_bad_rows", f"{d.on_bad_rows!r} is not one of error, skip")
    fr = tuple(d.split_fractions)
    if len(fr) != 3 or not all(0 <= f < math.inf for f in fr) or sum(fr) <= 0:
        bad("data.split_fractions", f"must be 3 finite numbers >= 0 (train, valid, test) with a sum > 0, got {fr}")
    if d.split == "random" and not (fr[0] > 0 and fr[1] > 0):
        bad("data.split_fractions", f"split='random' needs train and valid fractions > 0 (a run trains and "
                                    f"validates), got {fr}")
    if not isinstance(d.delimiter, str) or len(d.delimiter) != 1 or d.delimiter in "\r\n":
        bad("data.delimiter", f"must be one character other than a line break, e.g. '\\t' or ',', got {d.delimiter!r}")
    if d.quotechar and (len(d.quotechar) != 1 or d.quotechar == d.delimiter or d.quotechar in "\r\n"):
        bad("data.quotechar", f"must be '' (no quoting) or one character other than the delimiter and a line break, "
                              f"got {d.quotechar!r}")
    for key in STRING_TUPLE_KEYS:
        section, leaf = key.split(".")
        names = tuple(c[section][leaf])
        if not all(isinstance(n, str) and n.strip() for n in names):
            bad(key, f"must be a tuple of names (non-empty strings), got {names!r}")
        if key == "data.column_names" and len(set(names)) < len(names):
            bad(key, f"names a column twice: {sorted({n for n in names if names.count(n) > 1})}")
        _check_quoted(key, names, bad, "('user','item')")
    try:
        text_encoding = getattr(codecs.lookup(d.encoding), "_is_text_encoding", True)
    except (LookupError, TypeError):
        text_encoding = False
    if not text_encoding:  # rot13, hex, base64 are codecs, but not of bytes to text
        bad("data.encoding", f"{d.encoding!r} is not a text encoding Python knows (e.g. utf-8, latin-1)")
    ascii_text = "\n\t ,;:|^\"'0123456789.+-eE_azAZ"
    try:
        ascii_compatible = ascii_text.encode("ascii").decode(d.encoding) == ascii_text
    except (UnicodeError, LookupError):
        ascii_compatible = False
    if not ascii_compatible:  # lines and fields are split on the raw bytes before decoding
        bad("data.encoding", f"{d.encoding!r} does not write ASCII as ASCII (UTF-16 and UTF-32 do not): files are "
                             f"split into lines and fields before they are decoded; convert the file to utf-8")
