"""Student kinds by name. A new kind is one module file plus one line here (and, if it has
hyperparameters of its own, a ``model.<kind>`` section in ``kdef_jax.config.base_config``).

Each entry maps a name to (module class, builder) where builder(model_config) -> constructor kwargs.
``_kind(cls, section)`` builds those kwargs from the shared keys the class has as fields
(hidden_units, batch_norm, dropout_rng) updated by every key of ``model.<section>`` (batch_norm:
both must be on, so ``model.batch_norm=False`` switches off every student's BatchNorm).
"""

from __future__ import annotations

import dataclasses

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


def _kind(cls, section: str):
    """(cls, builder): kwargs = shared keys that are fields of ``cls``, then ``model.<section>``'s keys."""
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name", "dtype"}

    def build(m) -> dict:
        kw = {k: m[k] for k in SHARED_KEYS if k in fields and k in m}
        for k, v in m[section].items():
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


def get_student(kind: str):
    if kind not in STUDENTS:
        raise ValueError(f"unknown student kind {kind!r}; registered: {sorted(STUDENTS)}")
    return STUDENTS[kind]
