"""PackedStrings: sorting and JSON without a Python string per value must equal the Python results."""

import json

import numpy as np
import pytest

from kdef_jax.data import hash_ids
from kdef_jax.data.packed import PackedStrings, vocab_json


def _pack(values):
  enc = [v.encode("utf-8") for v in values]
  return PackedStrings(b"".join(enc), np.array([len(e) for e in enc], np.int64))


SHORT = ["b", "", "a", "ab", "a\x00", "a", "zz", "0", "10", "9", "é", "ÿ", "\x7f", "abcdefgh", "abcdefg", "~"]
LONG = SHORT + ["abcdefghi", "abcdefgh\x00", "ééééé", "a" * 20]


@pytest.mark.parametrize("values", [SHORT, LONG, [], ["only"]], ids=["short", "long", "empty", "one"])
def test_sort_order_equals_python_sorted(values):
  order = _pack(values).sort_order()
  assert [values[i] for i in order] == sorted(values)
  # stable: equal strings keep their order (the two "a" of SHORT)
  if values is SHORT:
    a = [i for i in order if values[i] == "a"]
    assert a == sorted(a)


def test_sort_order_random_hex_tokens():
  rng = np.random.default_rng(0)
  values = [f"{h:x}" for h in rng.integers(0, 2**32, 2000)] + [str(i) for i in rng.integers(-50, 5000, 500)]
  order = _pack(values).sort_order()
  assert [values[i] for i in order] == sorted(values)


@pytest.mark.parametrize("values", [["a", "bc", ""], ['q"uote', "back\\slash", "tab\t"], ["é", "x"], [],
                                    ["\x7fb", "a\x7f", "~"]])
def test_json_equals_json_dumps(values):
  assert _pack(values).json() == json.dumps(values)


def test_take_find_and_vocab_json():
  p = _pack(["x", "", "yy", ""])
  assert p.take(np.array([2, 0])).tolist() == ["yy", "x"]
  assert p.find("").tolist() == [1, 3]
  assert p.find("zz").tolist() == []
  got = vocab_json({"f": p, "n": [0, 3, 12], "s": ["u", "v"]})
  assert got == json.dumps({"f": ["x", "", "yy", ""], "n": ["0", "3", "12"], "s": ["u", "v"]})


# Found by mutation testing: backslashes escaped, find() counts bytes.

def test_packed_json_escapes_backslashes_and_find_counts_bytes():  # P04, P07
  for values in (["a\\b", "c"], ["\\"]):
    p = PackedStrings(*hash_ids.take(np.frombuffer("".join(values).encode(), np.uint8),
                                     np.cumsum([0] + [len(v) for v in values])[:-1], np.cumsum([len(v) for v in values]),
                                     np.arange(len(values))))
    assert p.json() == json.dumps(values)
  enc = [v.encode() for v in ("é", "ab", "é")]
  p = PackedStrings(b"".join(enc), [len(b) for b in enc])
  assert p.find("é").tolist() == [0, 2] and p.find("ab").tolist() == [1]
