"""Bad input data: every malformed row, label, value, header or file is an error naming the file and
line (and column), or with ``on_bad_rows="skip"`` a counted skip of the row."""
import re

import numpy as np
import pytest

from data_helpers import ENGINES, FAST, data_cfg, delimited_cfg, load_data, load_error, vocab_of, write_file, x_of, y_of
from kdef_jax.data.formats import columnar


@pytest.fixture(autouse=True)
def _cache_env(no_home_cache):
  """Every test in this file runs with KDEF_CACHE_DIR inside tmp_path."""
  yield


def test_libfm_wrong_number_of_fields_names_file_and_line(tmp_path):
  d = tmp_path / "raw"
  p = write_file(d / "train.libfm", "1 1:1 2:1 3:1\n-1 1:1 2:1 3:1\n1 1:1 2:1\n")
  msg = load_error(data_cfg(d, tmp_path / "cache"))
  assert f"{p}:3:" in msg
  assert "expected 3" in msg and "found 2" in msg


def test_libfm_label_outside_map_names_file_and_line(tmp_path):
  d = tmp_path / "raw"
  p = write_file(d / "train.libfm", "1 1:1 2:1 3:1\n2 1:1 2:1 3:1\n")
  msg = load_error(data_cfg(d, tmp_path / "cache"))
  assert f"{p}:2:" in msg
  assert "'2'" in msg


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("pair,message", [
    ("garbage", "column 'f2': 'garbage' is not an 'index:value' pair"),
    ("abc:1", "column 'f2': pair 'abc:1': the index 'abc' is not a non-negative integer"),
    ("7:x", "column 'f2': pair '7:x': the value 'x' is not a finite number"),
    ("7:nan", "column 'f2': pair '7:nan': the value 'nan' is not a finite number"),
])
def test_libfm_token_that_is_not_an_index_value_pair_names_file_and_line(tmp_path, engine, pair, message):
  d = tmp_path / "raw"
  p = write_file(d / "train.libfm", f"1 1:1 2:1 3:1\n-1 1:1 {pair} 3:1\n1 1:1 2:1 3:1\n")
  msg = load_error(data_cfg(d, tmp_path / "cache", engine=engine))
  assert f"{p}:2: {message}" in msg
  ds = load_data(data_cfg(d, tmp_path / "cache2", engine=engine, on_bad_rows="skip"))
  assert len(ds.splits["train"]) == 2 and pair.split(":")[0] not in vocab_of(ds)["f2"]


def test_libfm_blank_line_is_an_error_with_line(tmp_path):
  d = tmp_path / "raw"
  p = write_file(d / "train.libfm", "1 1:1 2:1 3:1\n\n-1 1:1 2:1 3:1\n")
  msg = load_error(data_cfg(d, tmp_path / "cache"))
  assert f"{p}:2:" in msg


@pytest.mark.parametrize("fmt", ["libfm", "delimited"])
def test_empty_file_names_path(tmp_path, fmt):
  d = tmp_path / "raw"
  write_file(d / "train.txt", "1 1:1 2:1 3:1\n" if fmt == "libfm" else "1\t1\t2\t3\n")
  p = write_file(d / "test.txt", "")
  extra = {} if fmt == "libfm" else {"column_names": ("label", "f1", "f2", "f3")}
  msg = load_error(data_cfg(d, tmp_path / "cache", fmt=fmt, train="train.txt", test="test.txt", **extra))
  assert str(p) in msg and "empty" in msg


def test_missing_data_dir_names_path(tmp_path):
  missing = tmp_path / "does_not_exist"
  msg = load_error(data_cfg(missing, tmp_path / "cache"), FileNotFoundError)
  assert str(missing) in msg
  assert not (tmp_path / "cache").exists()


def test_missing_file_names_path(libfm_dir, tmp_path):
  msg = load_error(data_cfg(libfm_dir, tmp_path / "cache", test="nope.libfm"), FileNotFoundError)
  assert str(libfm_dir / "nope.libfm") in msg
  assert "test" in msg


def test_empty_data_dir_resolves_kdef_data_dir_subdir(tmp_path, monkeypatch, libfm_dir):
  monkeypatch.setenv("KDEF_DATA_DIR", str(libfm_dir.parent))
  cfg = data_cfg("", tmp_path / "cache", test="test.libfm")
  cfg.subdir = libfm_dir.name
  ds = load_data(cfg)
  assert ds.feature_map.num_rows == {"train": 6, "test": 4}
  cfg.subdir = "absent_subdir"
  msg = load_error(cfg, FileNotFoundError)
  assert str(libfm_dir.parent / "absent_subdir") in msg


def test_unknown_on_bad_rows_rejected(libfm_dir, tmp_path):
  with pytest.raises(ValueError, match="on_bad_rows"):
    load_data(data_cfg(libfm_dir, tmp_path / "cache", on_bad_rows="ignore"))


def test_delimited_wrong_column_count_names_file_and_line(tmp_path):
  d = tmp_path / "raw"
  p = write_file(d / "train.tsv", "1\t1\t2\ta\tb\n0\t1\t2\ta\tb\n0\t1\t2\ta\n1\t1\t2\ta\tb\n")
  msg = load_error(delimited_cfg(d, tmp_path / "cache"))
  assert f"{p}:3:" in msg
  assert "expected 5 columns, found 4" in msg


def test_delimited_bad_label_names_file_and_line(tmp_path):
  d = tmp_path / "raw"
  p = write_file(d / "train.tsv", "1\t1\t2\ta\tb\n0\t1\t2\ta\tb\nyes\t1\t2\ta\tb\n")
  msg = load_error(delimited_cfg(d, tmp_path / "cache"))
  assert f"{p}:3:" in msg and "'yes'" in msg


def test_delimited_non_numeric_in_numeric_field_names_file_line_column(tmp_path):
  d = tmp_path / "raw"
  p = write_file(d / "train.tsv", "1\t1\t2\ta\tb\n0\t1\t2\ta\tb\n1\t3\t2\ta\tb\n0\tabc\t2\ta\tb\n")
  msg = load_error(delimited_cfg(d, tmp_path / "cache"))
  assert f"{p}:4:" in msg
  assert "'I1'" in msg and "'abc'" in msg


def test_delimited_non_finite_numeric_is_an_error(tmp_path):
  d = tmp_path / "raw"
  p = write_file(d / "train.tsv", "1\t1\t2\ta\tb\n0\t1\tinf\ta\tb\n")
  msg = load_error(delimited_cfg(d, tmp_path / "cache"))
  assert f"{p}:2:" in msg and "'I2'" in msg


def test_delimited_header_line_numbers_count_the_header(tmp_path):
  d = tmp_path / "raw"
  p = write_file(d / "train.csv", "label,I1,I2,C1,C2\n1,1,2,a,b\n0,x1,2,a,b\n")
  msg = load_error(delimited_cfg(d, tmp_path / "cache", train="train.csv", header=True, delimiter=",", column_names=()))
  assert f"{p}:3:" in msg


def test_delimited_header_missing_schema_column(tmp_path):
  d = tmp_path / "raw"
  p = write_file(d / "train.csv", "label,I1,C1,C2\n1,1,a,b\n")
  msg = load_error(delimited_cfg(d, tmp_path / "cache", train="train.csv", header=True, delimiter=",", column_names=()))
  assert str(p) in msg and "I2" in msg


def test_delimited_header_columns_in_any_order(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.csv", "C2,C1,extra,I2,label,I1\nq,a,zz,2,1,3\nr,b,zz,1,0,\n")
  ds = load_data(delimited_cfg(d, tmp_path / "cache", train="train.csv", header=True, delimiter=",", column_names=()))
  # I1: 3 -> bucket 1 (id 1), "" -> OOV 2; I2: 2 -> id 2, 1 -> id 1; C1 a/b; C2 q/r
  np.testing.assert_array_equal(x_of(ds, "train"), [[1, 2, 1, 1], [2, 1, 2, 2]])
  np.testing.assert_array_equal(y_of(ds, "train"), [1, 0])


def test_delimited_undecodable_bytes_names_path(tmp_path):
  d = tmp_path / "raw"
  p = d / "train.tsv"
  d.mkdir()
  p.write_bytes(b"1\t1\t2\ta\tb\n0\t1\t2\ta\tb\n0\t1\t2\t\xff\xfe\tb\n")
  msg = load_error(delimited_cfg(d, tmp_path / "cache"))
  assert str(p) in msg
  assert not any((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


def test_delimited_undecodable_bytes_names_line(tmp_path):
  d = tmp_path / "raw"
  p = d / "train.tsv"
  d.mkdir()
  p.write_bytes(b"1\t1\t2\ta\tb\n0\t1\t2\ta\tb\n0\t1\t2\t\xff\xfe\tb\n")
  msg = load_error(delimited_cfg(d, tmp_path / "cache"))
  assert re.search(r"line 3\b|:3:", msg), msg


def test_libfm_undecodable_bytes_names_path(tmp_path):
  d = tmp_path / "raw"
  p = d / "train.libfm"
  d.mkdir()
  p.write_bytes(b"1 1:1 2:1 3:1\n-1 1:1 2:1 3:1\n1 \xff\xfe:1 2:1 3:1\n")
  msg = load_error(data_cfg(d, tmp_path / "cache"))
  assert f"{p}:3:" in msg


def test_libfm_skip_bad_rows_counts_and_keeps_good_rows(tmp_path):
  d = tmp_path / "raw"
  p = write_file(
      d / "train.libfm",
      "1 1:1 5:1\n"  # row 0 good
      "-1 2:1\n"  # row 1 wrong field count
      "1 3:1 6:1\n"  # row 2 good
      "7 1:1 5:1\n"  # row 3 bad label
      "-1 2:1 6:1\n"  # row 4 good
      "\n"  # row 5 empty line
      "1 :1 6:1\n",  # row 6 no index
  )
  ds = load_data(data_cfg(d, tmp_path / "cache", fields=("a", "b"), on_bad_rows="skip"))
  assert ds.feature_map.skipped_rows == {str(p): 4}
  assert ds.feature_map.num_rows == {"train": 3}
  assert vocab_of(ds) == {"a": ["1", "2", "3"], "b": ["5", "6"]}
  np.testing.assert_array_equal(x_of(ds, "train"), [[1, 1], [3, 2], [2, 2]])
  np.testing.assert_array_equal(y_of(ds, "train"), [1, 1, 0])


def test_skip_with_mod_split_counts_skipped_rows_in_row_index(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.libfm", "1 1:1\n-1\n1 2:1\n-1 3:1\n1 4:1\n-1 5:1\n")  # row 1 malformed
  ds = load_data(data_cfg(d, tmp_path / "cache", fields=("a",), on_bad_rows="skip", split="mod", valid_mod=3))
  # data rows 0..5, row 1 skipped: valid = rows 0, 3; train = rows 2, 4, 5 (tokens 2, 4, 5)
  assert vocab_of(ds) == {"a": ["2", "4", "5"]}
  np.testing.assert_array_equal(x_of(ds, "train")[:, 0], [1, 2, 3])
  np.testing.assert_array_equal(y_of(ds, "valid"), [1, 0])
  assert sum(ds.feature_map.skipped_rows.values()) == 1


def test_delimited_mod_split_with_header(tmp_path):
  d = tmp_path / "raw"
  # data rows 0..4 (the header is not a data row): valid = rows 0, 2, 4 with valid_mod=2
  write_file(d / "train.csv", "label,I1,I2,C1,C2\n1,1,1,r0,x\n0,1,1,r1,x\n1,1,1,r2,x\n0,1,1,r3,x\n0,1,1,r4,x\n")
  ds = load_data(delimited_cfg(d, tmp_path / "cache", train="train.csv", header=True, delimiter=",", column_names=(),
                   split="mod", valid_mod=2))
  assert vocab_of(ds)["C1"] == ["r1", "r3"]
  np.testing.assert_array_equal(x_of(ds, "train")[:, 2], [1, 2])
  np.testing.assert_array_equal(x_of(ds, "valid")[:, 2], [3, 3, 3])
  np.testing.assert_array_equal(y_of(ds, "valid"), [1, 1, 0])
  np.testing.assert_array_equal(y_of(ds, "train"), [0, 0])


def test_delimited_skip_bad_rows(tmp_path):
  d = tmp_path / "raw"
  p = write_file(
      d / "train.tsv",
      "1\t1\t2\ta\tb\n"
      "0\t1\t2\ta\n"  # too few columns
      "2\t1\t2\ta\tb\n"  # bad label
      "0\t3\t1\tc\td\n"
      "1\t1\t2\ta\tb\textra\n",  # too many columns
  )
  ds = load_data(delimited_cfg(d, tmp_path / "cache", on_bad_rows="skip"))
  assert ds.feature_map.skipped_rows == {str(p): 3}
  np.testing.assert_array_equal(y_of(ds, "train"), [1, 0])
  # I1: 1 -> 1, 3 -> bucket 1 : same token; I2: 2 -> id 2, 1 -> id 1
  np.testing.assert_array_equal(x_of(ds, "train"), [[1, 2, 1, 1], [1, 1, 2, 2]])


def test_a_configured_test_file_that_gives_no_rows_is_an_error_not_a_missing_split(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.libfm", "1 1:1 2:1 3:1\n-1 4:1 5:1 6:1\n")
  p = write_file(d / "test.libfm", "-1 junk\n")
  msg = load_error(data_cfg(d, tmp_path / "cache", test="test.libfm", on_bad_rows="skip"), ValueError)
  assert f"the test file {p} gave no rows; skipped as malformed (on_bad_rows='skip'): {{'{p}': 1}}" in msg


def test_a_train_split_left_empty_by_skipped_rows_says_so(tmp_path):
  d = tmp_path / "raw"
  p = write_file(d / "train.libfm", "1 1:1 2:1\n-1 junk\n")
  msg = load_error(data_cfg(d, tmp_path / "cache", on_bad_rows="skip"), ValueError)
  assert f"the train split is empty (files read: train {p}; skipped as malformed (on_bad_rows='skip'): {{'{p}': 2}})" in msg



@pytest.mark.parametrize("engine", ENGINES)
def test_a_skipped_row_is_not_also_counted_as_dropped_by_the_label_rule(tmp_path, engine):
  d = tmp_path / "raw"
  p = write_file(d / "train.tsv",
                 "5\t1\t2\ta\tb\n"     # rating 5 -> 1
                 "3\t1\t2\ta\tb\n"     # rating 3 -> dropped by the rule
                 "x\t1\t2\ta\tb\n"     # label not a number -> skipped (not dropped)
                 "3\tabc\t2\ta\tb\n"   # bad value -> skipped, even though rating 3 would be dropped
                 "1\t3\t1\tc\td\n")    # rating 1 -> 0
  ds = load_data(delimited_cfg(d, tmp_path / "cache", engine=engine, label_rule="threshold:4:2", on_bad_rows="skip"))
  assert ds.feature_map.skipped_rows == {str(p): 2}
  assert ds.feature_map.info["dropped_by_label_rule"] == {str(p): 1}
  np.testing.assert_array_equal(y_of(ds, "train"), [1, 0])


@pytest.mark.parametrize("engine", ENGINES)
def test_the_first_bad_row_of_a_block_is_reported_whatever_its_kind(tmp_path, engine):
  d = tmp_path / "raw"
  # line 2: a bad numeric value; line 3: a bad label (checked first, but later in the file)
  p = write_file(d / "train.tsv", "1\t1\t2\ta\tb\n0\tabc\t2\ta\tb\n7\t1\t2\ta\tb\n")
  msg = load_error(delimited_cfg(d, tmp_path / "cache", engine=engine))
  assert f"{p}:2:" in msg and "'abc'" in msg
  p = write_file(d / "train.tsv", "1\t1\t2\ta\tb\n7\t1\t2\ta\tb\n0\tabc\t2\ta\tb\n")
  msg = load_error(delimited_cfg(d, tmp_path / "cache2", engine=engine))
  assert f"{p}:2:" in msg and "label '7'" in msg


# Found by differential fuzzing of the three engines (382 mutated files, 2,292 loads).
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("later", [b"0\t1\t2\ta\n", b"0\t1\t2\t\xff\xfe\tb\n", b"\n"], ids=["short_row", "undecodable", "empty_line"])
def test_a_malformed_row_after_a_bad_value_does_not_hide_it(tmp_path, engine, later):
  """A bad label on line 2 is reported before a structural problem on line 3 (the readers found those
  first: they reported line 3), and with skip both rows are left out and counted."""
  d = tmp_path / "raw"
  p = write_file(d / "train.tsv", b"1\t1\t2\ta\tb\n7\t1\t2\ta\tb\n" + later + b"1\t1\t2\tc\tb\n")
  msg = load_error(delimited_cfg(d, tmp_path / "c1", engine=engine))
  assert f"{p}:2:" in msg and "label '7'" in msg
  ds = load_data(delimited_cfg(d, tmp_path / "c2", engine=engine, on_bad_rows="skip"))
  assert ds.feature_map.skipped_rows == {str(p): 2} and ds.feature_map.num_rows["train"] == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_libfm_a_wrong_pair_count_after_a_bad_label_does_not_hide_it(tmp_path, engine):
  d = tmp_path / "raw"
  p = write_file(d / "train.libfm", "1 1:1 2:1 3:1\n5 1:1 2:1 3:1\n0 1:1 2:1\n")
  msg = load_error(data_cfg(d, tmp_path / "c1", engine=engine))
  assert f"{p}:2:" in msg and "'5'" in msg


@pytest.mark.parametrize("engine", FAST)
def test_every_engine_reports_the_same_first_bad_row_whatever_the_block_size(tmp_path, monkeypatch, engine):
  """The python engine read 100,000-line blocks, the others 8 MB ones: on a large file with a bad label
  early and a short row late they named different lines. 40-byte blocks stand in for a large file."""
  d = tmp_path / "raw"
  p = write_file(d / "train.tsv", "1\t1\t2\ta\tb\n7\t1\t2\ta\tb\n" + "0\t1\t2\ta\tb\n" * 20 + "0\t1\t2\ta\n")
  ref = load_error(delimited_cfg(d, tmp_path / "c1", engine="python"))
  assert f"{p}:2:" in ref and "label '7'" in ref
  monkeypatch.setattr(columnar, "BLOCK_BYTES", 40)
  assert load_error(delimited_cfg(d, tmp_path / "c2", engine=engine)) == ref


def _quoted_csv_cfg(d, cache, engine, **kw):
  return data_cfg(d, cache, fmt="delimited", train="train.csv", fields=("I1", "C1"), numeric_fields=("I1",),
                  header=True, delimiter=",", quotechar='"', engine=engine, **kw)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_csv_row_the_csv_module_cannot_read_is_a_bad_row_naming_file_and_line(tmp_path, engine):
  """A lone CR in a quoted CSV row made csv.reader raise _csv.Error: no file, no line, and a traceback
  even with on_bad_rows='skip'."""
  d = tmp_path / "raw"
  p = write_file(d / "train.csv", b'label,I1,C1\n1,2,"a"\n0,3,b"\rc\n1,4,d\n')
  msg = load_error(_quoted_csv_cfg(d, tmp_path / "c1", engine))
  assert f"{p}:3: unreadable CSV row" in msg
  ds = load_data(_quoted_csv_cfg(d, tmp_path / "c2", engine, on_bad_rows="skip"))
  assert ds.feature_map.skipped_rows == {str(p): 1} and ds.feature_map.num_rows == {"train": 2}
  p = write_file(d / "train.csv", b'label,"I1",C1\rx\n1,2,a\n')
  assert f"{p}:1: unreadable CSV header" in load_error(_quoted_csv_cfg(d, tmp_path / "c3", engine))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_quoted_csv_value_longer_than_the_csv_modules_default_limit_is_read(tmp_path, engine):
  """csv's default field limit (131,072 characters) rejected a valid row that pandas reads."""
  d = tmp_path / "raw"
  long = "z" * 200_000
  write_file(d / "train.csv", f'label,I1,C1\n1,2,"{long}"\n0,3,a\n')
  ds = load_data(_quoted_csv_cfg(d, tmp_path / "c1", engine))
  assert ds.feature_map.num_rows == {"train": 2} and long in vocab_of(ds)["C1"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("header", [True, False])
def test_a_field_that_reads_the_label_column_is_a_config_error(tmp_path, engine, header):
  """Before: the native engine left the label's slot of its scratch block unfilled (labels read from
  uninitialised memory, ~70% right, no error); the others took the label as an input feature."""
  d = tmp_path / "raw"
  write_file(d / "train.csv", ("label,C1\n" if header else "") + "1,a\n0,b\n")
  cfg = data_cfg(d, tmp_path / "cache", fmt="delimited", train="train.csv", fields=("label", "C1"), header=header,
                 delimiter=",", column_names=() if header else ("label", "C1"), engine=engine)
  msg = load_error(cfg, ValueError)
  assert msg.startswith("config data.fields: ['label'] read the label column 'label'")
  cfg.fields, cfg.field_options = ("y", "C1"), {"y": {"source": "label"}}  # through a source: the same
  assert "['y'] read the label column 'label'" in load_error(cfg, ValueError)


def _csv_with_header(tmp_path, text, fields, engine="python", **kw):
  """(path, config.data) of raw/train.csv holding ``text`` (comma-separated, a header line)."""
  p = write_file(tmp_path / "raw" / "train.csv", text)
  return p, data_cfg(tmp_path / "raw", tmp_path / "cache", fmt="delimited", train="train.csv", fields=fields,
                     header=True, delimiter=",", column_names=(), engine=engine, **kw)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_wanted_column_named_twice_in_the_header_is_an_error_naming_both(tmp_path, engine):
  p, cfg = _csv_with_header(tmp_path, "label,C1,C1,C2\n1,x,X,y\n0,z,Z,w\n", ("C1", "C2"), engine)
  assert load_error(cfg) == f"{p}: column 'C1' appears 2 times in its header (columns 2, 3); rename all but one"
  write_file(p, "label,C1,C2,X,X\n1,x,y,p,q\n0,z,w,p,q\n")  # twice, but not read: fine
  assert vocab_of(load_data(cfg))["C1"] == ["x", "z"]


def test_column_names_given_twice_is_a_config_error():
  from kdef_jax.config import base_config, validate

  c = base_config()
  c.data.column_names = ("label", "a", "a", "b")
  with pytest.raises(ValueError, match=r"data\.column_names: names a column twice: \['a'\]"):
    validate(c)


@pytest.mark.parametrize("split, key", [("mod", "valid"), ("random", "valid"), ("random", "test")])
def test_a_split_file_the_split_rule_would_mix_into_its_drawn_rows_is_a_config_error(split, key):
  """Before: split='mod' with files.valid set validated on the mod rows AND the whole valid file."""
  from kdef_jax.config import base_config, validate

  c = base_config()
  c.data.format, c.data.split, c.data.valid_mod, c.data.fields = "libfm", split, 10, ("f1",)
  c.data.files.train = "train.libfm"
  c.data.files[key] = "other.libfm"
  with pytest.raises(ValueError, match=rf"config data\.files\.{key}: split='{split}' draws the {key} rows from "
                                       rf"data\.files\.train, so 'other\.libfm' would be mixed into them"):
    validate(c)
  c.data.files[key] = ""
  validate(c)


@pytest.mark.parametrize("engine", ENGINES)
def test_libfm_indices_are_integers_whatever_their_leading_zeros(tmp_path, engine):
  d = tmp_path / "raw"
  write_file(d / "train.libfm", "1 03:1 7:1 5:1\n-1 3:1 007:1 5:1\n")
  ds = load_data(data_cfg(d, tmp_path / "cache", engine=engine))
  assert vocab_of(ds)["f1"] == ["3"] and vocab_of(ds)["f2"] == ["7"]
  assert x_of(ds, "train")[:, 0].tolist() == [1, 1]


@pytest.mark.parametrize("value", [3.0, 1.5, True, "2"])
def test_a_non_integer_max_len_or_min_count_names_the_field(tmp_path, value):
  d = tmp_path / "raw"
  write_file(d / "train.tsv", "1\t1\t2\ta\tb\n")
  for key, extra in (("max_len", {"kind": "sequence", "splitter": "^"}), ("min_count", {})):
    cfg = delimited_cfg(d, tmp_path / "cache", field_options={"C1": {**extra, key: value}})
    assert load_error(cfg, ValueError) == f"config data.field_options.C1: column 'C1': {key} must be an integer, got {value!r}"


def test_text_that_starts_like_a_bzip2_header_is_text(tmp_path):
  _, cfg = _csv_with_header(tmp_path, "BZh1,label\na,1\nb,0\n", ("BZh1",))
  assert vocab_of(load_data(cfg))["BZh1"] == ["a", "b"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_row_split_by_a_quoted_delimiter_suggests_quotechar(tmp_path, engine):
  p, cfg = _csv_with_header(tmp_path, 'label,C1,C2\n1,a,b\n0,"x,y",c\n', ("C1", "C2"), engine)
  assert load_error(cfg) == (f"{p}:3: expected 3 columns, found 4; the row holds a '\"': if values are quoted (a "
                             f"delimiter inside quotes), set data.quotechar='\"'")
  cfg.quotechar = '"'
  assert vocab_of(load_data(cfg))["C1"] == ["a", "x,y"]
