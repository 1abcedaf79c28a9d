"""gzip, bzip2, xz and one-member zip files are read decompressed by every engine, into the same cache as
the plain file; damaged data, a zip of several files and zstd are errors naming the file."""
import bz2
import gzip
import io
import lzma
import os
import zipfile

import pytest

from conftest import REPO_ROOT
from data_helpers import ENGINES, assert_same_splits, data_cfg, load_data, load_error, vocab_of, write_file
from kdef_jax.data.formats import columnar
from kdef_jax.data.formats.columnar import iter_chunks
from kdef_jax.data.schema import DataFormatError, open_raw


@pytest.fixture(autouse=True)
def _cache_env(no_home_cache):
  yield


def _zip_bytes(members: dict, **kw) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", **kw) as z:
    for name, data in members.items():
      z.writestr(name, data)
  return buf.getvalue()


def _zip(data: bytes, names=("train.csv",)) -> bytes:
  return _zip_bytes(dict.fromkeys(names, data), compression=zipfile.ZIP_DEFLATED)


PACK = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress, "zip": _zip}
# header, CRLF and a quoted line (a block the fast parsers decline), a UTF-8 value, no newline at the end
CSV = ("label,C1,C2\r\n" + "".join(f"{i % 2},{['a', 'Amélie', 'x' * 11][i % 3]},{i % 5}\r\n" for i in range(200))
       + '1,"q,r",7\r\n0,b,3').encode()


def _cfg(d, cache, name, engine):
  return data_cfg(d, cache, fmt="delimited", train=name, fields=("C1", "C2"), header=True, delimiter=",",
                  quotechar='"', column_names=(), split="mod", valid_mod=7, engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", sorted(PACK))
def test_a_compressed_csv_gives_the_cache_of_the_plain_file(tmp_path, monkeypatch, engine, kind):
  d = tmp_path / "raw"
  write_file(d / "train.csv", CSV)
  write_file(d / "train.csv.packed", PACK[kind](CSV))
  monkeypatch.setattr(columnar, "BLOCK_BYTES", 64)  # many blocks, cut inside the decompressed stream
  a = load_data(_cfg(d, tmp_path / "c1", "train.csv", "python"))
  b = load_data(_cfg(d, tmp_path / "c2", "train.csv.packed", engine))
  assert vocab_of(a) == vocab_of(b) and "q,r" in vocab_of(a)["C1"] and "Amélie" in vocab_of(a)["C1"]
  assert a.feature_map.num_rows == b.feature_map.num_rows == {"train": 173, "valid": 29}
  assert_same_splits(a, b)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_gzipped_libfm_file_with_several_members_is_read_whole(tmp_path, engine):
  """``cat a.gz b.gz > c.gz`` is one valid gzip file (Frappe-style libFM here)."""
  d = tmp_path / "raw"
  lines = [f"{1 if i % 3 else -1} {i % 4}:1 {4 + i % 2}:1 {6 + i % 5}:1\n" for i in range(50)]
  write_file(d / "train.libfm", "".join(lines))
  write_file(d / "train.libfm.gz", gzip.compress("".join(lines[:20]).encode()) + gzip.compress("".join(lines[20:]).encode()))
  a = load_data(data_cfg(d, tmp_path / "c1", train="train.libfm", engine="python"))
  b = load_data(data_cfg(d, tmp_path / "c2", train="train.libfm.gz", engine=engine))
  assert b.feature_map.num_rows == {"train": 50}
  assert_same_splits(a, b)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_malformed_row_of_a_compressed_file_names_the_file_and_its_line(tmp_path, engine):
  d = tmp_path / "raw"
  p = write_file(d / "train.csv.gz", gzip.compress(b"label,C1,C2\n1,a,1\n0,b\n1,c,2\n"))
  assert load_error(_cfg(d, tmp_path / "c", p.name, engine)) == f"{p}:3: expected 3 columns, found 2"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_a_compressed_file_cut_short_is_an_error_naming_it(tmp_path, engine, kind):
  d = tmp_path / "raw"
  data = PACK[kind](b"label,C1,C2\n" + b"".join(b"%d,a%d,%d\n" % (i % 2, i % 50, i % 7) for i in range(20_000)))
  p = write_file(d / "train.csv.packed", data[: len(data) // 2])
  msg = load_error(_cfg(d, tmp_path / "c", p.name, engine))
  assert msg.startswith(f"{p}: the {kind} data is damaged or cut short ("), msg


def test_a_damaged_gzip_stream_is_an_error_naming_the_file(tmp_path):
  data = bytearray(gzip.compress(CSV * 20))
  data[len(data) // 2] ^= 0xFF
  p = write_file(tmp_path / "train.csv.gz", bytes(data))
  with pytest.raises(DataFormatError, match="damaged or cut short") as e, open_raw(str(p)) as fh:
    fh.read()
  assert str(e.value).startswith(f"{p}: the gzip data")


def test_a_zip_of_several_files_names_them_and_a_zstd_file_says_to_decompress_it(tmp_path):
  d = tmp_path / "raw"
  p = write_file(d / "data.zip", _zip(b"label,C1,C2\n1,a,1\n", names=("train.csv", "test.csv")))
  assert load_error(_cfg(d, tmp_path / "c", p.name, "python")) == (
      f"{p}: a zip archive of 2 files (train.csv, test.csv); the readers take a zip of one file: unzip it and "
      f"point the config at the file to read")
  z = write_file(d / "train.csv.zst", b"\x28\xb5\x2f\xfd" + b"\0" * 20)
  assert load_error(_cfg(d, tmp_path / "c", z.name, "python")) == (
      f"{z}: a zstd-compressed file; the readers take plain text, gzip, bzip2, xz or zip: decompress it first "
      f"(unzstd {z}) and point the config at the result")


@pytest.mark.parametrize("block", [7, 64, 1 << 20])
def test_chunks_of_a_compressed_file_are_whole_lines_of_its_text(tmp_path, block):
  text = b"h\n" + b"".join(b"%d,%s\n" % (i, b"v" * (i % 13)) for i in range(300)) + b"last"
  p = write_file(tmp_path / "f.xz", lzma.compress(text))
  got = b"".join(c.tobytes() for c in iter_chunks(str(p), block_bytes=block, header_lines=1))
  assert got == text[2:] + b"\n"


def test_the_cache_key_follows_the_compressed_file(tmp_path):
  """A compressed file replaced by another gets another cache, as a plain one does."""
  d = tmp_path / "raw"
  p = write_file(d / "train.csv.gz", gzip.compress(CSV))
  a = load_data(_cfg(d, tmp_path / "c", p.name, "python"))
  write_file(p, gzip.compress(CSV.replace("Amélie".encode(), b"Zoe")))
  b = load_data(_cfg(d, tmp_path / "c", p.name, "python"))
  assert a.cache_dir != b.cache_dir and "Zoe" in vocab_of(b)["C1"]


def _tar(members: dict, mode: str = "w") -> bytes:
  import tarfile

  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode=mode) as t:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      t.addfile(info, io.BytesIO(data))
  return buf.getvalue()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode,said", [("w", ""), ("w:gz", " (gzip-compressed)")])
def test_a_tar_archive_says_to_extract_it(tmp_path, engine, mode, said):
  """Criteo's dac.tar.gz (train.txt, test.txt, readme.txt): its header block was read as a malformed row."""
  d = tmp_path / "raw"
  p = write_file(d / "dac.tar.gz", _tar({"train.txt": b"1\t2\ta\n", "readme.txt": b"x\n"}, mode))
  cfg = data_cfg(d, tmp_path / "c", fmt="delimited", train=p.name, fields=("C1",), column_names=("label", "I1", "C1"),
                 engine=engine)
  assert load_error(cfg) == (f"{p}: a tar archive{said}, first file 'train.txt'; the readers take one file: extract it "
                             f"(tar xf {p}) and point the config at a file inside it")


def test_text_holding_ustar_where_a_tar_header_has_it_is_text(tmp_path):
  text = b"1,a," + b"x" * 253 + b"ustar,b\n" + b"0,c,%s\n" % (b"y" * 300)  # "ustar" at byte 257, 570 bytes
  assert text.index(b"ustar") == 257 and len(text) > 512
  p = write_file(tmp_path / "train.csv", text)
  with open_raw(str(p)) as fh:  # the header checksum does not match: text
    assert fh.read() == text


def test_a_7z_file_says_to_extract_it(tmp_path):
  p = write_file(tmp_path / "train.7z", b"7z\xbc\xaf\x27\x1c" + b"\0" * 30)
  with pytest.raises(DataFormatError) as e:
    open_raw(str(p))
  assert str(e.value) == (f"{p}: a 7z-compressed file; the readers take plain text, gzip, bzip2, xz or zip: decompress "
                          f"it first (7z x {p}) and point the config at the result")


# Found by a review of the compressed reading (2026-12-08); each failed on the first version.
def test_an_encrypted_or_unsupported_zip_is_an_error_naming_the_file_not_a_traceback(tmp_path):
  data = bytearray(_zip_bytes({"train.csv": b"label,C1,C2\n1,a,1\n"}))
  data[6] |= 1  # the member's "encrypted" flag, in its local header ...
  cd = data.index(b"PK\x01\x02")
  data[cd + 8] |= 1  # ... and in the central directory
  enc = write_file(tmp_path / "enc.zip", bytes(data))
  with pytest.raises(DataFormatError) as e:
    open_raw(str(enc))
  assert str(e.value).startswith(f"{enc}: File <ZipInfo filename='train.csv'") and "password required" in str(e.value)
  assert str(e.value).endswith("; unzip it (with its password) and point the config at the file")
  data = bytearray(_zip_bytes({"train.csv": b"label,C1,C2\n1,a,1\n"}))
  data[8] = 9  # method 9: deflate64
  data[data.index(b"PK\x01\x02") + 10] = 9
  odd = write_file(tmp_path / "odd.zip", bytes(data))
  with pytest.raises(DataFormatError) as e:
    open_raw(str(odd))
  assert str(e.value) == f"{odd}: That compression method is not supported here; unzip it and point the config at the file"


def test_a_failed_open_leaves_nothing_to_complain_at_exit(tmp_path):
  """Python's development mode reports an exception in a stream's close at collection ("Exception ignored
  in: <_Decompressed ...> AttributeError: ... '_stream'")."""
  import subprocess
  import sys

  p = write_file(tmp_path / "two.zip", _zip_bytes({"a.csv": b"1\n", "b.csv": b"2\n"}))
  code = ("import gc\nfrom kdef_jax.data.schema import DataFormatError, open_raw\ntry:\n    open_raw(%r)\n"
          "except DataFormatError as e:\n    print(e)\ngc.collect()\n" % str(p))
  out = subprocess.run([sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  assert out.returncode == 0 and "a zip archive of 2 files (a.csv, b.csv)" in out.stdout
  assert "Exception ignored" not in out.stderr, out.stderr


def test_an_empty_zip_a_macos_zip_and_a_file_compressed_twice(tmp_path):
  empty = write_file(tmp_path / "empty.zip", _zip_bytes({}))
  with pytest.raises(DataFormatError, match=r"a zip archive of 0 files \(none\)"):
    open_raw(str(empty))
  mac = write_file(tmp_path / "mac.zip", _zip_bytes({"train.csv": b"a\n", "__MACOSX/._train.csv": b"\0\5\26\7"}))
  with open_raw(str(mac)) as fh:
    assert fh.read() == b"a\n"
  twice = write_file(tmp_path / "t.gz", gzip.compress(bz2.compress(b"label\n1\n")))
  with pytest.raises(DataFormatError) as e:
    open_raw(str(twice))
  assert str(e.value) == (f"{twice}: gzip-compressed, and what that holds is bzip2-compressed again; decompress it "
                          f"twice and point the config at the text")


@pytest.mark.parametrize("engine", ENGINES)
def test_bytes_after_the_gzip_data_are_named_as_such(tmp_path, engine):
  p = write_file(tmp_path / "raw" / "t.csv.gz", gzip.compress(CSV) + b"GARBAGE")
  msg = load_error(_cfg(tmp_path / "raw", tmp_path / "c", p.name, engine))
  assert msg.startswith(f"{p}: bytes after the end of its gzip data (Not a gzipped file (b'GA')): the file was joined")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("rows,bad_line", [(60_000, 3), (60_000, 40_000), (2_000, 3)])
def test_a_bad_row_before_damaged_data_is_the_error_in_every_engine(tmp_path, engine, rows, bad_line):
  """The first error in file order, whatever the engine: a malformed row in the text before the damage,
  not the damage (the fast engines lost the text of the read that hit it, the Python one its last
  100,000 lines; 2,000 rows: the text open_raw had peeked at, the first MiB)."""
  lines = [b"label,C1,C2"] + [b"%d,v%d,%d" % (i % 2, i % 97, i % 5) for i in range(rows)]
  lines[bad_line - 1] = b"1,short"
  data = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=1)
  p = write_file(tmp_path / "raw" / "t.csv.gz", data[: len(data) * 3 // 4])
  assert load_error(_cfg(tmp_path / "raw", tmp_path / "c", p.name, engine)) == f"{p}:{bad_line}: expected 3 columns, found 2"


@pytest.mark.parametrize("engine", ENGINES)
def test_an_empty_gzipped_libfm_file_is_empty_in_every_engine(tmp_path, engine):
  p = write_file(tmp_path / "raw" / "e.gz", gzip.compress(b""))
  assert load_error(data_cfg(tmp_path / "raw", tmp_path / "c", train="e.gz", engine=engine)) == f"{p}: file is empty"


def test_a_failed_peek_closes_the_file(tmp_path):
  """A gzip cut inside its first block: the peek for a tar header raises; the file is closed then, not
  whenever the exception's traceback is collected."""
  p = write_file(tmp_path / "cut.gz", gzip.compress(b"label,C1\n" * 1000)[:12])
  before, kept = len(os.listdir("/proc/self/fd")), []
  for _ in range(20):
    with pytest.raises(DataFormatError, match="damaged or cut short") as e:
      open_raw(str(p))
    kept.append(e.value)  # its traceback, and the frames in it, alive (as a caller keeping the error would)
  assert len(os.listdir("/proc/self/fd")) == before

