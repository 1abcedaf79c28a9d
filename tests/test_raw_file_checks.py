"""Raw files a user brings that used to load silently wrong (found by a review of mutated real files,
2026-12-07): repeated ids in MovieLens metadata or an iPinYou feature index (the last line won), genre
flags other than 0/1, libFM values other than 1, numbers Python's float() reads but a CSV parser does
not ('1_000', fullwidth digits), encodings that do not write ASCII as ASCII, and split paths that are
folders, broken links or pipes (reported as "not found")."""
import os

import pytest

from data_helpers import TRAIN_LIBFM, data_cfg, delimited_cfg, load_data, load_error, write_file, write_libfm_dir
from kdef_jax.config import base_config, validate
from kdef_jax.data.formats import libfm
from kdef_jax.data.formats.movielens import load_metadata
from kdef_jax.data.schema import DataFormatError, parse_number

GENRES = "unknown|0\nAction|1\nComedy|2\n"
USERS = "1|24|M|technician|85711\n2|53|F|other|T8H1N\n"
ITEMS = "1|Toy Story (1995)|01-Jan-1995||url|0|1|1\n2|Heat (1995)|01-Jan-1995||url|0|1|0\n"


def _ml(tmp_path, genres=GENRES, users=USERS, items=ITEMS):
  d = tmp_path / "ml"
  for name, text in (("u.genre", genres), ("u.user", users), ("u.item", items)):
    write_file(d / name, text)
  return d


@pytest.mark.parametrize("change,message", [
  ({"users": USERS + "1|99|F|doctor|00000\n"}, r"u\.user:3: id '1' again \(first on line 1\)"),
  ({"items": ITEMS + "2|Heat again|01-Jan-1995||url|0|0|1\n"}, r"u\.item:3: id '2' again \(first on line 2\)"),
  ({"genres": GENRES + "Westerns|2\n"}, r"u\.genre:4: genre id '2' again \(first on line 3\)"),
  ({"items": ITEMS.replace("|0|1|1\n", "|0|2|1\n")}, r"u\.item:1: genre flag '2' is not 0 or 1"),
])
def test_movielens_metadata_with_a_repeated_id_or_an_odd_genre_flag_is_an_error(tmp_path, change, message):
  users, items = load_metadata(str(_ml(tmp_path)), "100k")  # as given: loads
  assert users["1"] == ["24", "M", "technician", "85711"] and items["1"] == ["Toy Story (1995)", "Action^Comedy"]
  with pytest.raises(DataFormatError, match=message):
    load_metadata(str(_ml(tmp_path / "changed", **change)), "100k")


def test_a_feature_index_that_gives_an_index_twice_is_an_error(tmp_path):
  p = write_file(tmp_path / "fi.txt", "weekday:1\t1\nweekday:2\t2\n\nweekday:9\t1\n")
  with pytest.raises(DataFormatError, match=r"fi\.txt:4: index 1 again \(weekday:9; line 1 gave weekday:1\)"):
    libfm.read_featindex(str(p))


@pytest.mark.parametrize("pair,why", [("10:0", "is not 1"), ("10:2.5", "is not 1"), ("10:1_0", "is not a finite number")])
def test_a_libfm_value_other_than_1_is_an_error(tmp_path, pair, why):
  """'74:0' (absent, in libFM) counted as present and '74:2.5' was taken as 1."""
  d = tmp_path / "raw"
  p = write_file(d / "train.libfm", TRAIN_LIBFM.replace("1 10:1 200:1 7:1", f"1 {pair} 200:1 7:1", 1))
  assert f"{p}:1: column 'f1': pair '{pair}': the value" in load_error(data_cfg(d, tmp_path / "cache"))
  assert why in load_error(data_cfg(d, tmp_path / "cache"))
  write_libfm_dir(tmp_path / "ok")  # "1.0" is 1
  write_file(tmp_path / "ok" / "raw" / "train.libfm", TRAIN_LIBFM.replace("10:1 ", "10:1.0 ", 1))
  assert load_data(data_cfg(tmp_path / "ok" / "raw", tmp_path / "cache2")).feature_map.num_rows["train"] == 6


@pytest.mark.parametrize("text", ["1_000", "\uff11\uff12", "\u0661\u0662", "inf", "nan", "1e999", "0x10", "", "1e"])
def test_parse_number_takes_what_a_csv_parser_reads_and_nothing_else(text):
  with pytest.raises(ValueError, match="is not a"):
    parse_number(text)


def test_parse_number_by_hand():
  assert [parse_number(t) for t in ("12", " 3", "1.5e3", "-2", ".5", "5.", "+1", "4E-1")] == [12, 3, 1500, -2, 0.5, 5, 1, 0.4]


@pytest.mark.parametrize("value", ["1_000", "\uff11\uff12"])
def test_a_numeric_field_holding_python_only_numbers_is_an_error(tmp_path, value):
  """'１２' read as 12 and '1_000' as 1000 (Python's float), where pandas would not read a number."""
  d = tmp_path / "raw"
  p = write_file(d / "train.tsv", f"1\t3\t4\ta\tb\n0\t{value}\t1\tc\td\n")
  assert f"{p}:2: column 'I1' is numeric but holds {value!r}" in load_error(delimited_cfg(d, tmp_path / "cache"))


def test_a_threshold_label_in_python_only_digits_is_an_error(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.tsv", "4_0\t3\t4\ta\tb\n1\t2\t1\tc\td\n")
  assert "label '4_0' is not a number" in load_error(delimited_cfg(d, tmp_path / "cache", label_rule="threshold:4:2"))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "cp037"])
def test_an_encoding_that_does_not_write_ascii_as_ascii_is_refused(encoding):
  """A UTF-16 file always failed as 'not utf-16': lines are split on the raw bytes before decoding."""
  c = base_config()
  c.data.encoding = encoding
  with pytest.raises(ValueError, match=rf"config data.encoding: '{encoding}' does not write ASCII as ASCII"):
    validate(c)
  c.data.encoding = "utf-8-sig"  # a BOM is read
  validate(c)


def test_a_split_path_that_is_no_file_says_what_it_is(tmp_path):
  d = write_libfm_dir(tmp_path)
  (d / "folder.libfm").mkdir()
  os.symlink(d / "gone.libfm", d / "link.libfm")
  os.mkfifo(d / "pipe.libfm")
  for name, exc, text in (("folder.libfm", IsADirectoryError, "is a folder, not a file"),
                          ("link.libfm", FileNotFoundError, f"is a link to {d / 'gone.libfm'}, which does not exist"),
                          ("pipe.libfm", ValueError, "is not a regular file"),
                          ("none.libfm", FileNotFoundError, "not found")):
    message = load_error(data_cfg(d, tmp_path / "cache", test=name), exc)
    assert "data file for split 'test'" in message and text in message and "config data.files.test" in message


def test_a_file_replaced_by_another_of_the_same_size_and_time_gets_a_new_cache(tmp_path):
  """The cache was keyed on path, size and mtime only: labels rewritten in place with the time kept
  (cp -p, rsync -t, an archive's timestamps) reused the stale cache."""
  d = write_libfm_dir(tmp_path)
  train = d / "train.libfm"
  first = load_data(data_cfg(d, tmp_path / "cache"))
  st = train.stat()
  train.write_text(TRAIN_LIBFM.replace("-1 9:1 200:1 7:1", " 1 9:1 200:1 7:1"))  # same size, another label
  os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns))
  assert train.stat().st_size == st.st_size and train.stat().st_mtime_ns == st.st_mtime_ns
  second = load_data(data_cfg(d, tmp_path / "cache"))
  assert second.cache_dir != first.cache_dir
  assert second.feature_map.positive_rate["train"] == pytest.approx(3 / 6) != first.feature_map.positive_rate["train"]


def test_the_content_sample_reads_the_whole_of_a_small_file_and_samples_a_large_one(tmp_path, monkeypatch):
  from kdef_jax.data import preprocess

  monkeypatch.setattr(preprocess, "SAMPLE_WHOLE", 8)
  monkeypatch.setattr(preprocess, "SAMPLE_HEAD", 4)
  monkeypatch.setattr(preprocess, "SAMPLE_TAIL", 4)
  monkeypatch.setattr(preprocess, "SAMPLE_BLOCKS", 3)
  monkeypatch.setattr(preprocess, "SAMPLE_BLOCK", 2)
  p = tmp_path / "f"
  data = bytearray(b"0123456789abcdefghijklmnopqrstuvwxyz")  # 36 bytes > 4 + 4 + 3 * 2: sampled
  p.write_bytes(bytes(data))
  base = preprocess.content_sample(str(p), 36)
  # sampled: [0, 4), blocks at 4 + i * gap (gap = (36 - 4 - 4 - 2) // 2 = 13): [4, 6), [17, 19), [30, 32), and [32, 36)
  for i, changes in ((0, True), (4, True), (17, True), (33, True), (10, False), (25, False)):
    changed = bytearray(data)
    changed[i] = ord("#")
    p.write_bytes(bytes(changed))
    assert (preprocess.content_sample(str(p), 36) != base) == changes, i
  p.write_bytes(b"abc")
  import hashlib

  assert preprocess.content_sample(str(p), 3) == hashlib.sha256(b"abc").hexdigest()  # small: all of it


def test_an_undecodable_byte_at_the_end_of_a_line_reads_alike_in_every_engine(tmp_path):
  """The Python engine decoded the line with its newline ('invalid continuation byte'), the fast ones
  without it ('unexpected end of data')."""
  d = tmp_path / "raw"
  p = write_file(d / "train.tsv", b"1\t3\t4\ta\tb\n0\t2\t1\tc\td\xe9\n1\t1\t1\ta\tb\n" * 3)
  for engine in ("python", "native", "columnar"):
    message = load_error(delimited_cfg(d, tmp_path / f"cache_{engine}", engine=engine))
    assert message == f"{p}:2: undecodable bytes (unexpected end of data); the file is not utf-8", engine
