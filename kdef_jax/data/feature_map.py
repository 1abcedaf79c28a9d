"""The feature map: what each column of an encoded id matrix means (FuxiCTR's feature_map.json).

Conventions (reference spec §1.2): per field, index 0 = PAD, indices 1..n = the kept tokens in
ascending order, index n+1 = OOV, so ``vocab_size = n + 2``. A categorical field takes one column
of the id matrix; a sequence field takes ``max_len`` consecutive columns (post-padded with 0).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from kdef_jax.run_files import write_atomic

FIELD_TYPES = ("categorical", "sequence")


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str  # "categorical" | "sequence"
    vocab_size: int  # including PAD (0) and OOV (vocab_size - 1)
    max_len: int = 1
    source: str = "categorical"  # how raw values became tokens: categorical | numeric_bucket | sequence

    def __post_init__(self):
        if self.type not in FIELD_TYPES:
            raise ValueError(f"field {self.name!r}: type {self.type!r} not in {FIELD_TYPES}")
        if self.vocab_size < 2:
            raise ValueError(f"field {self.name!r}: vocab_size {self.vocab_size} < 2 (PAD+OOV)")
        if self.max_len < 1 or (self.type == "categorical" and self.max_len != 1):
            raise ValueError(f"field {self.name!r}: bad max_len {self.max_len} for {self.type}")

    @property
    def oov_index(self) -> int:
        return self.vocab_size - 1


@dataclasses.dataclass
class FeatureMap:
    dataset_id: str
    fields: tuple[FieldSpec, ...]
    num_rows: dict = dataclasses.field(default_factory=dict)  # split -> rows
    positive_rate: dict = dataclasses.field(default_factory=dict)  # split -> mean label
    skipped_rows: dict = dataclasses.field(default_factory=dict)  # split -> rows skipped
    info: dict = dataclasses.field(default_factory=dict)  # free-form provenance

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def num_columns(self) -> int:
        return sum(f.max_len for f in self.fields)

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        return tuple(f.vocab_size for f in self.fields)

    @property
    def max_lens(self) -> tuple[int, ...]:
        return tuple(f.max_len for f in self.fields)

    @property
    def total_vocab(self) -> int:
        """Rows of the embedding tables, all fields together (the paper's '#Features')."""
        return sum(self.vocab_sizes)

    def to_dict(self) -> dict:
        return {
            "dataset_id": self.dataset_id,
            "num_fields": self.num_fields,
            "total_vocab": self.total_vocab,
            "fields": [dataclasses.asdict(f) for f in self.fields],
            "num_rows": self.num_rows,
            "positive_rate": self.positive_rate,
            "skipped_rows": self.skipped_rows,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureMap":
        return cls(
            dataset_id=d["dataset_id"],
            fields=tuple(FieldSpec(**f) for f in d["fields"]),
            num_rows=dict(d.get("num_rows", {})),
            positive_rate=dict(d.get("positive_rate", {})),
            skipped_rows=dict(d.get("skipped_rows", {})),
            info=dict(d.get("info", {})),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Written atomically: a kill mid-write leaves the previous file (or none), never half of one."""
        write_atomic(Path(path), lambda fh: fh.write(json.dumps(self.to_dict(), indent=1)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureMap":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a valid feature_map.json ({e})") from e
