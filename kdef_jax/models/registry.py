"""Student kinds by name. A new kind of the library is one module file plus one line here (and, if it
has hyperparameters of its own, a ``model.<kind>`` section in ``kdef_jax.config.base_config``). A kind
of the user's own is registered from their module with :func:`register_student`; a config names that
module in ``model.student_modules`` (:func:`kdef_jax.config.use_student_modules`), so every command
that rebuilds the run's model from its config.json (resume, score_run, export_run) imports it again.

Each entry maps a name to (module class, builder) where builder(model_config) -> constructor kwargs.
``_kind(cls, section)`` builds those kwargs from the shared keys the class has as fields
(hidden_units, batch_norm, dropout_rng) updated by every key of ``model.<section>`` (batch_norm:
both must be on, so ``model.batch_norm=False`` switches off every student's BatchNorm).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path

import flax.linen as nn

from kdef_jax.models.students.afn import AFNStudent
from kdef_jax.models.students.autoint import AutoIntStudent
from kdef_jax.models.students.cin import CINStudent, XDeepFMStudent
from kdef_jax.models.students.dcn import CrossNetV2Student, DCNStudent, DCNv2Student
from kdef_jax.models.students.ecn import ECNStudent
from kdef_jax.models.students.final import FINALStudent
from kdef_jax.models.students.mlp import MLPStudent
from kdef_jax.models.students.pnn import IPNNStudent
from kdef_jax.models.students.wide import DeepFMStudent, WideDeepStudent

SHARED_KEYS = ("hidden_units", "batch_norm", "dropout_rng")


def _freeze(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


# per-kind settings a student cannot use outside a range: name -> the least value (an integer)
LEAST = {"num_cross_layers": 0, "attention_layers": 0, "num_heads": 1, "attention_dim": 1, "logarithmic_neurons": 1}


def _check_settings(section: str, kw: dict) -> None:
    """A ValueError naming ``model.<section>.<key>`` for a count, width or head split the student cannot use."""
    def bad(key, msg):
        raise ValueError(f"config model.{section}.{key}: {msg}, got {kw[key]!r}")

    for key, least in LEAST.items():
        if key in kw and (not isinstance(kw[key], int) or isinstance(kw[key], bool) or not least <= kw[key] < 2**31):
            bad(key, f"must be an integer in [{least}, 2**31)")
    if "cin_layers" in kw and (isinstance(kw["cin_layers"], str) or not kw["cin_layers"]
                               or not all(isinstance(u, int) and not isinstance(u, bool) and 1 <= u < 2**31
                                          for u in kw["cin_layers"])):
        bad("cin_layers", "must be a non-empty tuple of integer widths >= 1, e.g. (16, 16, 16)")
    if "num_heads" in kw and "attention_dim" in kw and kw["attention_dim"] % kw["num_heads"]:
        bad("num_heads", f"must divide attention_dim={kw['attention_dim']} (heads of equal size)")


def _kind(cls, section: str, defaults: dict | None = None):
    """(cls, builder): kwargs = shared keys that are fields of ``cls``, then ``model.<section>``'s keys
    (over ``defaults``, a registered kind's settings, where the config leaves them out)."""
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name", "dtype"}

    def build(m) -> dict:
        kw = {k: m[k] for k in SHARED_KEYS if k in fields and k in m}
        for k, v in {**(defaults or {}), **m.get(section, {})}.items():
            if k not in fields:
                raise ValueError(f"config model.{section}.{k}: {cls.__name__} has no such setting ({sorted(fields)})")
            # model.batch_norm is the master switch: a kind's own batch_norm (ECN's) can only turn its BN off
            kw[k] = bool(kw[k]) and bool(v) if k == "batch_norm" and k in kw else v
        kw = {k: _freeze(v) for k, v in kw.items()}
        _check_settings(section, kw)
        return kw

    return cls, build


def _mlp_kwargs(m) -> dict:
    return {
        "hidden_units": tuple(m.hidden_units),
        "dropout": float(m.dropout),
        "batch_norm": bool(m.batch_norm),
        "dropout_rng": m.dropout_rng,
    }


STUDENTS = {
    "mlp": (MLPStudent, _mlp_kwargs),
    "ipnn": _kind(IPNNStudent, "ipnn"),  # KDEF_Latest student 1 (spec §2.2)
    "final": _kind(FINALStudent, "final"),  # KDEF_Latest student 2: FINAL 1B + field gate (§2.3)
    "ecn": _kind(ECNStudent, "ecn"),  # KDEF_Latest student 3: ECN, one head (§2.4)
    "crossnet": _kind(CrossNetV2Student, "crossnet"),  # CrossNetV2 alone (§2.5)
    "dcnv2": _kind(DCNv2Student, "dcnv2"),
    "dcn": _kind(DCNStudent, "dcn"),  # DCN v1
    "cin": _kind(CINStudent, "cin"),  # CIN alone
    "xdeepfm": _kind(XDeepFMStudent, "xdeepfm"),
    "widedeep": _kind(WideDeepStudent, "widedeep"),
    "deepfm": _kind(DeepFMStudent, "deepfm"),
    "autoint": _kind(AutoIntStudent, "autoint"),  # AutoInt*: attention + MLP
    "afn": _kind(AFNStudent, "afn"),  # AFN*: logarithmic net + MLP
}


BUILT_IN = frozenset(STUDENTS)
CUSTOM: dict = {}  # kind -> its settings' defaults, for kinds registered with register_student
ORIGIN: dict = {}  # kind -> {the model.student_modules entry importing it, its class's and its registering module's names and files}
_importing: list = []  # the model.student_modules entries being imported now
_imported_files: set = set()  # .py paths imported already
KIND_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def get_student(kind: str):
    if kind not in STUDENTS:
        raise ValueError(f"unknown student kind {kind!r}; registered: {sorted(STUDENTS)} (a kind of your own: "
                         f"kdef_jax.models.registry.register_student in a module that the config names with "
                         f"kdef_jax.config.use_student_modules)")
    return STUDENTS[kind]


def register_student(kind: str, cls, settings: dict | None = None) -> None:
    """Make the Flax module ``cls`` the student kind ``kind`` (``model.students="mlp:8,<kind>:2"``).

    ``cls`` is a Linen module with a ``dtype`` field (the model's compute dtype) whose
    ``__call__(emb, train=False, mask=None)`` maps the shared embedding [B, F, d] to one logit per row,
    float32 [B]. ``train`` turns dropout and BatchNorm's batch statistics on (rngs "dropout", variables
    "params" and "batch_stats"); ``mask`` [B] marks the real rows of a padded last batch (None: all), for
    statistics over rows (:class:`kdef_jax.models.layers.BatchNorm` takes it). Fields named like the shared
    keys (hidden_units, batch_norm, dropout_rng) get the config's ``model.<key>``; ``settings``
    ({field: default}) become the config section ``model.<kind>``. A kind registered again from the same
    source file (a module imported twice, or reloaded) is replaced; from another file, a ValueError."""
    if not isinstance(kind, str) or not KIND_NAME.match(kind) or kind == "ensemble" or re.search(r"_\d+\Z", kind):
        raise ValueError(f"student kind {kind!r}: a name of lowercase letters, digits and _ starting with a letter, "
                         f"not 'ensemble' nor ending in _<digits> (the results name students kind_0, kind_1, ...)")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"student kind {kind!r}: {cls!r} is not a flax.linen Module class")
    try:
        inspect.signature(cls.__call__).bind(None, "emb", "train", "mask")
    except TypeError:
        raise TypeError(f"student kind {kind!r}: {cls.__name__}.__call__ must take (emb, train, mask), e.g. "
                        f"def __call__(self, emb, train: bool = False, mask=None)") from None
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    if "dtype" not in fields:
        raise TypeError(f"student kind {kind!r}: {cls.__name__} needs a dtype field (the model's compute dtype: "
                        f"compute in it, return float32 logits)")
    settings = dict(settings or {})
    for key, value in settings.items():
        if key not in fields or key in (*SHARED_KEYS, "dtype"):
            raise ValueError(f"student kind {kind!r}: setting {key!r} is not a field of {cls.__name__} of its own "
                             f"({', '.join(sorted(fields - {'dtype', *SHARED_KEYS})) or 'none'})")
        if not isinstance(value, (bool, int, float, str, tuple)):
            raise TypeError(f"student kind {kind!r}: setting {key}={value!r}: a config value is a bool, int, float, "
                            f"str or tuple")
    from kdef_jax.config import base_config  # the sections a kind's name must not take

    if kind in base_config().model:
        raise ValueError(f"student kind {kind!r}: model.{kind} is a config key already; choose another name")
    source = _source_file(cls)
    if kind in STUDENTS and (kind in BUILT_IN or source is None or _source_file(STUDENTS[kind][0]) != source):
        where = _source_file(STUDENTS[kind][0]) or STUDENTS[kind][0].__module__
        raise ValueError(f"student kind {kind!r} is registered already ({STUDENTS[kind][0].__name__} of {where}); "
                         f"choose another name")
    caller = sys._getframe(1).f_globals  # the registering module, which may import cls from another
    STUDENTS[kind] = _kind(cls, kind, settings)
    CUSTOM[kind] = settings
    ORIGIN[kind] = {cls.__module__, *_importing[-1:], *([source] if source else []), caller.get("__name__", ""),
                    *([os.path.abspath(caller["__file__"])] if caller.get("__file__") else [])}


def _source_file(cls) -> str | None:
    """The absolute path of the file that defines ``cls``, if it has one."""
    module_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    return os.path.abspath(module_file) if module_file else None


def import_student_modules(modules) -> None:
    """Import each of ``modules`` (``model.student_modules``: a dotted module name, or the path of a .py
    file), whose import registers student kinds; a ValueError naming the config key if one fails."""
    if not isinstance(modules, (tuple, list)) or not all(isinstance(m, str) and m for m in modules):
        raise ValueError(f"config model.student_modules: must be a tuple of module names or .py paths, got {modules!r}")
    for name in modules:
        if not name.endswith(".py") and not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"config model.student_modules: {name!r} is neither a .py path nor a module name; on the "
                             f"command line give one --config.model.student_modules=NAME per module, or quote each "
                             f"name of a tuple: --config.model.student_modules=\"('a.py','b')\"")
        _importing.append(name)
        try:
            _import(name)
        except Exception as e:  # noqa: BLE001 - the user's module: any error, named with the key
            hint = ("; a module name is looked up on sys.path: put its folder on PYTHONPATH, or name the path of its "
                    ".py file" if isinstance(e, ModuleNotFoundError) and e.name == name.split(".")[0] else "")
            raise ValueError(f"config model.student_modules: importing {name!r} failed ({type(e).__name__}: {e}){hint}") from e
        finally:
            _importing.pop()


def kinds_of(modules) -> list:
    """The kinds that the ``model.student_modules`` entries ``modules`` registered (a package: its submodules
    too), in registration order."""
    return [k for k, origin in ORIGIN.items()
            if origin & set(modules) or any(o.startswith(m + ".") for o in origin for m in modules)]


def _import(name: str) -> None:
    if not name.endswith(".py"):
        importlib.import_module(name)
        return
    path = os.path.abspath(name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file {path}")
    if path in _imported_files or any(getattr(m, "__file__", None) and os.path.abspath(m.__file__) == path
                                      for m in list(sys.modules.values())):
        _imported_files.add(path)
        return  # imported already (by name, or by this path): once, so its kinds register once
    folder = os.path.dirname(path)
    _check_helpers(path)
    # while it runs, its folder comes first, as for `python my_students.py`: it imports its helpers, not a
    # same-named file of the working folder; then last, so that it shadows nothing the library imports later
    sys.path.insert(0, folder)
    module = f"kdef_students_{Path(path).stem}_{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[module]
        raise
    finally:
        sys.path.remove(folder)
        if folder not in sys.path:
            sys.path.append(folder)  # for what its helpers import when called
    _imported_files.add(path)


def _imported_names(path: str) -> set:
    """The top-level names of the absolute imports in the Python file ``path`` (none if it does not parse)."""
    import ast

    try:
        tree = ast.parse(Path(path).read_bytes(), path)
    except (OSError, SyntaxError, ValueError):
        return set()  # the import reports it
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}


@functools.lru_cache(maxsize=1)
def _installed() -> frozenset:
    """The top-level import names of the installed distributions (kdef_jax, numpy, ...)."""
    import importlib.metadata

    return frozenset(importlib.metadata.packages_distributions())


def helpers_of(path: str) -> dict:
    """{name: file} of the student file ``path``'s helpers: the modules beside it (``name.py`` or a package
    ``name/``) that it imports, directly or through one another, by a name that is neither the standard
    library's nor an installed distribution's (so kdef_jax beside a student file in the checkout is not one).
    Read from the code, so the same whatever was imported before."""
    folder, found, todo = os.path.dirname(path), {}, [path]
    while todo:
        for name in sorted(_imported_names(todo.pop())):
            if name in found or name in sys.stdlib_module_names or name in _installed():
                continue
            here = next((c for c in (os.path.join(folder, name + ".py"), os.path.join(folder, name, "__init__.py"))
                         if os.path.isfile(c)), None)
            if here:
                found[name] = here
                todo.append(here)
    return found


def _check_helpers(path: str) -> None:
    """A ValueError where a helper of the student file ``path`` (:func:`helpers_of`) has a name that Python
    has imported already from another file (e.g. a ``utils.py`` beside another student file, or one of the
    working folder's): the student would get that one, as Python keeps one module per name."""
    for name, here in helpers_of(path).items():
        loaded = getattr(sys.modules.get(name), "__file__", None)
        if loaded and os.path.realpath(loaded) != os.path.realpath(here):
            raise ValueError(f"{path} imports {name!r}, which is {here} beside it, but Python has imported {name!r} "
                             f"from {os.path.abspath(loaded)} already (one module per name in a process): rename one "
                             f"of them")


def _package_files(init: str) -> list:
    """The .py files of the package whose ``__init__.py`` is ``init``, sorted."""
    root = os.path.dirname(init)
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".py"))


def code_digests(modules) -> dict:
    """{entry: sha256} of the code of each imported ``model.student_modules`` entry: a .py path's file and
    its helpers' (:func:`helpers_of`; a package helper: its .py files); a module's file; a package's .py
    files (names and bytes, sorted). What a run records of that code."""
    out = {}
    for name in modules:
        path = name if name.endswith(".py") else getattr(sys.modules.get(name), "__file__", None)
        if not path or not os.path.isfile(path):
            continue
        h = hashlib.sha256()
        if os.path.basename(path) == "__init__.py":
            files = _package_files(path)
        else:  # a file, with its helpers where it is a .py path's
            files = [path]
            for helper in sorted(helpers_of(path).values()) if name.endswith(".py") else ():
                files += _package_files(helper) if os.path.basename(helper) == "__init__.py" else [helper]
        for f in files:
            h.update(os.path.relpath(f, os.path.dirname(path)).encode() + b"\0")
            with open(f, "rb") as fh:
                h.update(fh.read())
        out[name] = h.hexdigest()
    return out

