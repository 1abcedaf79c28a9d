"""Student kinds by name. A new kind is one module file plus one line here.

Each entry maps a name to (module class, builder) where builder(model_config) -> constructor kwargs.
"""

from __future__ import annotations

from kdef_jax.models.students.mlp import MLPStudent


def _mlp_kwargs(m) -> dict:
    return {
        "hidden_units": tuple(m.hidden_units),
        "dropout": float(m.dropout),
        "batch_norm": bool(m.batch_norm),
        "dropout_rng": m.dropout_rng,
    }


STUDENTS = {
    "mlp": (MLPStudent, _mlp_kwargs),
}


def get_student(kind: str):
    if kind not in STUDENTS:
        raise ValueError(f"unknown student kind {kind!r}; registered: {sorted(STUDENTS)}")
    return STUDENTS[kind]
