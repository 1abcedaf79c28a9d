"""Strings kept packed — one bytes blob of UTF-8 values back to back plus their byte lengths — so a
vocabulary of millions of tokens is sorted and written as JSON without a Python object per token.

Byte-wise order of UTF-8 equals code-point order, i.e. Python's ``str`` order, so sorting the
packed bytes gives exactly ``sorted(strings)``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from kdef_jax.data.hash_ids import take, unpack

_NEEDS_ESCAPE = re.compile(rb'["\\\x00-\x1f\x7f-\xff]')  # what json.dumps (ensure_ascii) would escape


class PackedStrings:
    """Strings as (``blob``: their UTF-8 bytes back to back, ``lens``: int64 byte lengths)."""

    def __init__(self, blob: bytes, lens: np.ndarray):
        self.blob, self.lens = blob, np.asarray(lens, np.int64)

    def __len__(self) -> int:
        return int(self.lens.shape[0])

    def tolist(self) -> list:
        return unpack(self.blob, self.lens)

    def take(self, rows: np.ndarray) -> "PackedStrings":
        ends = np.cumsum(self.lens)
        return PackedStrings(*take(np.frombuffer(self.blob, np.uint8), ends - self.lens, ends, rows))

    def sort_order(self) -> np.ndarray:
        """Indices that sort the strings ascending (stable; ties keep their order)."""
        n = len(self)
        if n == 0 or int(self.lens.max()) > 8:
            items = [self.blob[a:b] for a, b in zip(*self._bounds())]
            return np.array(sorted(range(n), key=items.__getitem__), np.int64).reshape(-1)
        # ≤ 8 bytes: the bytes left-aligned in a big-endian word; a shorter string sorts before a
        # longer one with the same (zero-padded) word, as a prefix does
        starts, _ = self._bounds()
        row = np.repeat(np.arange(n), self.lens)
        col = np.arange(len(self.blob)) - np.repeat(starts, self.lens)
        mat = np.zeros((n, 8), np.uint8)
        mat[row, col] = np.frombuffer(self.blob, np.uint8)
        words = mat.view(">u8").reshape(n).astype(np.uint64)
        return np.lexsort((self.lens, words))

    def find(self, value: str) -> np.ndarray:
        """Indices of the strings equal to ``value``."""
        b = value.encode("utf-8")
        starts, ends = self._bounds()
        cand = np.flatnonzero(self.lens == len(b))
        return np.array([i for i in cand.tolist() if self.blob[starts[i] : ends[i]] == b], np.int64)

    def json(self) -> str:
        """The JSON array of the strings, exactly as ``json.dumps(self.tolist())`` writes it."""
        n = len(self)
        if n == 0 or _NEEDS_ESCAPE.search(self.blob):
            return json.dumps(self.tolist())
        total = len(self.blob) + 4 * n  # '"' value '", ' per string, minus the last ', ', plus '[' and ']'
        out = np.full(total, ord(" "), np.uint8)
        starts, ends = self._bounds()
        first = starts + 4 * np.arange(n) + 2  # where each value's first byte lands
        out[np.arange(len(self.blob)) + np.repeat(first - starts, self.lens)] = np.frombuffer(self.blob, np.uint8)
        out[first - 1] = out[first + self.lens] = ord('"')
        out[(first + self.lens + 1)[:-1]] = ord(",")
        out[0], out[-1] = ord("["), ord("]")
        return out.tobytes().decode("ascii")

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        ends = np.cumsum(self.lens)
        return ends - self.lens, ends


def vocab_json(vocabs: dict) -> str:
    """``json.dumps(vocabs)`` for {field: list or PackedStrings}; token lists that are not strings are
    written as strings."""
    parts = []
    for name, v in vocabs.items():
        if isinstance(v, PackedStrings):
            arr = v.json()
        else:
            arr = json.dumps([t if isinstance(t, str) else str(t) for t in v])
        parts.append(f"{json.dumps(name)}: {arr}")
    return "{" + ", ".join(parts) + "}"


def vocab_sha256(data: bytes) -> str:
    """The digest a cache's feature_map.json records of its vocab.json (``info["vocab_sha256"]``)."""
    return hashlib.sha256(data).hexdigest()


def check_vocab_file(path, fmap) -> bytes:
    """The bytes of the vocab.json at ``path``, checked against the digest ``fmap`` (its feature map)
    records: a changed or damaged vocab.json is a ValueError naming it (with it, ids would stand for
    other values). Feature maps from before the digest are not checked."""
    data = Path(path).read_bytes()
    want = fmap.info.get("vocab_sha256")
    if want is not None and vocab_sha256(data) != want:
        raise ValueError(f"{path}: not the vocabulary its feature_map.json was built with (sha256 differs): the file "
                         f"was changed or damaged; restore it, or rebuild the data cache and retrain")
    return data
