"""The dataset cache's checksums (kdef_jax/data/checksums.py): recorded per slice when a cache is built,
checked when it is opened, so a byte changed on disk is an error naming the file and rows, not ids
trained on silently."""
import json
import sys
from pathlib import Path
import zlib

import numpy as np
import pytest

from data_helpers import load_data, raw_cfg, write_file
from kdef_jax.config import base_config
from kdef_jax.data import checksums


@pytest.fixture(autouse=True)
def _cache_env(no_home_cache):
  yield


@pytest.fixture
def small_chunks(monkeypatch):
  monkeypatch.setattr(checksums, "CHUNK_BYTES", 400)


def _flip(path, offset):
  b = bytearray(path.read_bytes())
  b[offset] ^= 0x10
  path.write_bytes(bytes(b))


def _array_folder(tmp_path):
  """100 rows × 5 int32 columns (20 bytes a row after numpy's 128-byte header) and an empty file."""
  d = tmp_path / "cache"
  d.mkdir()
  np.save(d / "train_x.npy", np.arange(500, dtype=np.int32).reshape(100, 5))
  (d / "empty.npy").write_bytes(b"")
  return d


def test_write_records_the_size_and_the_crc32_of_every_slice(tmp_path, small_chunks):
  d = _array_folder(tmp_path)
  checksums.write(d)
  rec = json.loads((d / "checksums.json").read_text())
  data = (d / "train_x.npy").read_bytes()
  assert len(data) == 128 + 100 * 20
  assert rec == {"chunk_bytes": 400, "files": {
      "empty.npy": {"size": 0, "crc32": []},
      "train_x.npy": {"size": 2128, "crc32": [zlib.crc32(data[i:i + 400]) for i in (0, 400, 800, 1200, 1600, 2000)]}}}
  assert checksums.verify(d) is True


def test_a_flipped_byte_names_the_file_and_the_rows_of_its_slice(tmp_path, small_chunks):
  d = _array_folder(tmp_path)
  checksums.write(d)
  _flip(d / "train_x.npy", 128 + 50 * 20 + 3)  # row 50, in bytes [800, 1200): rows (800-128)//20=33 to (1199-128)//20=53
  with pytest.raises(ValueError) as e:
    checksums.verify(d)
  assert str(e.value) == (f"{d / 'train_x.npy'}: damaged cache file (bytes 800–1,200, rows 33–53, differ from the checksum "
                          f"recorded when it was built); delete the folder {d} to rebuild it")


def test_a_flipped_header_byte_says_so(tmp_path, small_chunks):
  d = _array_folder(tmp_path)
  checksums.write(d)
  _flip(d / "train_x.npy", 20)
  with pytest.raises(ValueError, match=r"train_x.npy: damaged cache file \(bytes 0–400, its header, differ"):
    checksums.verify(d)


def test_a_file_of_another_size_or_missing_or_damaged_checksums_are_errors(tmp_path):
  d = _array_folder(tmp_path)
  checksums.write(d)
  p = d / "train_x.npy"
  p.write_bytes(p.read_bytes() + b"\0")
  with pytest.raises(ValueError, match=r"train_x.npy: damaged cache file \(2,129 bytes, 2,128 when it was built\); delete"):
    checksums.verify(d)
  p.unlink()
  with pytest.raises(ValueError, match=r"train_x.npy: missing from the cache \(checksums.json lists it\)"):
    checksums.verify(d)
  for bad in ("{", '{"files": {}}', '{"chunk_bytes": 0, "files": {}}', '{"chunk_bytes": 8, "files": {"a": 3}}'):
    (d / "checksums.json").write_text(bad)
    with pytest.raises(ValueError, match=r"checksums.json: damaged cache file \(.*\); delete the folder"):
      checksums.verify(d)


def test_a_cache_without_checksums_built_by_an_older_version_is_not_checked(tmp_path):
  d = _array_folder(tmp_path)
  assert checksums.verify(d) is False


def test_both_builders_record_checksums_and_loading_checks_them(tmp_path):
  syn = base_config().data
  syn.cache_dir = str(tmp_path / "c")
  syn.synthetic.num_train, syn.synthetic.num_valid, syn.synthetic.num_test = 300, 100, 100
  raw = raw_cfg(tmp_path / "raw", tmp_path / "c", files={"train": "t.csv"}, fields=("c",), delimiter=",", header=True)
  write_file(tmp_path / "raw" / "t.csv", "label,c\n1,x\n0,y\n1,x\n")
  for cfg, damaged in ((syn, "valid_y.npy"), (raw, "train_x.npy")):
    ds = load_data(cfg)
    names = {p.name for p in ds.cache_dir.glob("*.npy")}
    assert set(json.loads((ds.cache_dir / "checksums.json").read_text())["files"]) == names
    size = (ds.cache_dir / damaged).stat().st_size
    _flip(ds.cache_dir / damaged, size - 1)  # the last row's last byte
    with pytest.raises(ValueError, match=rf"{damaged}: damaged cache file \(bytes 0–{size:,}, rows 0–"):
      load_data(cfg)
    cfg.verify_cache = False  # the user's choice: the damaged cache opens unchecked
    assert load_data(cfg).cache_dir == ds.cache_dir


def _proc_status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) << 10
    raise KeyError(key)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/clear_refs and VmHWM are Linux's")
def test_checksumming_keeps_the_process_rss_to_a_few_slices_not_the_whole_file(tmp_path):
    """Every build and every run start checksum the cache: with each slice's pages kept mapped, the
    process's RSS grew by the whole cache (7 GB for Criteo), which RSS-limited schedulers count."""
    path = tmp_path / "train_x.npy"
    np.save(path, np.arange(48 << 20, dtype=np.int32))  # 192 MiB
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    base = _proc_status("VmRSS")
    crcs = checksums._crcs([path], 8 << 20)
    assert _proc_status("VmHWM") - base < 64 << 20
    data = path.read_bytes()
    assert crcs[path] == [zlib.crc32(data[lo:lo + (8 << 20)]) for lo in range(0, len(data), 8 << 20)]
