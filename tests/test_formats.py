"""Formats of issue 3 on tiny inline fixtures: every engine, sequences, Avazu / KKBox / iPinYou quirks,
label rules, every bad-input class, TFDS (mocked), and the shared real data (raw MovieLens:
test_movielens_raw.py).

Every fixture is written to tmp_path and every cache goes to tmp_path.
"""
import importlib.util
import re

import numpy as np
import pytest

from conftest import load_config_module, shared_data_dir
from data_helpers import ENGINES, FAST, assert_same_splits, data_cfg, load_data, load_error, quiet, raw_cfg as _cfg, vocab_of, write_file, x_of
from kdef_jax.config import base_config
from kdef_jax.data import preprocess
from kdef_jax.data.dataset import load_dataset
from kdef_jax.data.formats import columnar, delimited, libfm, movielens
from kdef_jax.data.formats import tfds as tfds_mod
from kdef_jax.data.schema import DataFormatError, LabelRule

try:
  HAS_TFDS = importlib.util.find_spec("tensorflow_datasets") is not None
except (ValueError, ImportError):  # blocked in sys.modules or by an import hook
  HAS_TFDS = False


@pytest.fixture(autouse=True)
def _cache_env(no_home_cache):
  yield


# ============================================================================ engines agree

CRITEO = (
    "1\t\t-1\tb\tx\n"
    "0\t0\t25\t\tx\n"
    "1\t3\t2\ta\ty\n"
    "0\t10\t-1.7\tb\t\n"
    "1\t1000\t1\tc\tx\n"
) * 7
COLS = ("label", "I1", "I2", "C1", "C2")


def _criteo_cfg(d, cache, engine, **kw):
  return _cfg(d, cache, format="delimited", files={"train": "train.tsv", "test": "test.tsv"}, column_names=COLS,
              fields=("I1", "I2", "C1", "C2"), numeric_fields=("I1", "I2"), engine=engine, **kw)


@pytest.mark.parametrize("engine", FAST)
@pytest.mark.parametrize("split", ["files", "random", "mod"])
def test_engines_give_identical_caches_across_blocks(tmp_path, monkeypatch, split, engine):
  d = tmp_path / "raw"
  write_file(d / "train.tsv", CRITEO)
  write_file(d / "test.tsv", "0\t2.5\t26\td\ty\n1\t4\t7\ta\tz\n")
  monkeypatch.setattr(columnar, "BLOCK_BYTES", 40)  # many tiny blocks: line numbers and splits must not depend on it
  kw = {"split": split, "valid_mod": 3} if split != "files" else {}
  a = load_data(_criteo_cfg(d, tmp_path / "c1", "python", **kw))
  b = load_data(_criteo_cfg(d, tmp_path / "c2", engine, **kw))
  assert a.feature_map.to_dict() | {"info": None} == b.feature_map.to_dict() | {"info": None}
  assert vocab_of(a) == vocab_of(b)
  assert_same_splits(a, b)
  assert a.cache_dir.name == b.cache_dir.name  # the engine is not part of the cache key


@pytest.mark.parametrize("engine", FAST)
def test_fast_engines_mix_plain_and_python_parsed_blocks_into_one_vocabulary(tmp_path, monkeypatch, engine):
  """CRLF, UTF-8, values longer than a word, and quoted lines (those blocks go to the Python parser):
  a value must get one id whichever parser read its block."""
  d = tmp_path / "raw"
  rows = ["label,u,v"] + [f"{i % 2},{['Amélie', 'x' * 13, 'ab', ''][i % 4]},{['é', 'k' * 9, 'z'][i % 3]}" for i in range(60)]
  rows[17] = '1,"ab",zz'  # quoted: its block is declined by the fast parsers
  rows[42] = '0,"Amélie, the film",é'
  write_file(d / "train.csv", "\r\n".join(rows).encode() + b"\r\n")
  monkeypatch.setattr(columnar, "BLOCK_BYTES", 48)
  kw = dict(format="delimited", files={"train": "train.csv"}, column_names=("label", "u", "v"), header=True,
            delimiter=",", quotechar='"', fields=("u", "v"), split="mod", valid_mod=5, min_count=1)
  a = load_data(_cfg(d, tmp_path / "c1", engine="python", **kw))
  b = load_data(_cfg(d, tmp_path / "c2", engine=engine, **kw))
  assert vocab_of(a) == vocab_of(b) and "Amélie, the film" in vocab_of(a)["u"] and "x" * 13 in vocab_of(a)["u"]
  assert_same_splits(a, b)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_quote_character_other_than_the_double_quote_is_honoured(tmp_path, engine):
  d = tmp_path / "raw"
  write_file(d / "train.csv", "1,5,'a,b'\n0,3,c\n1,4,'d'\n" * 4)
  ds = load_data(_cfg(d, tmp_path / "c", format="delimited", files={"train": "train.csv"}, column_names=("label", "n", "s"),
                      delimiter=",", quotechar="'", fields=("s",), split="mod", valid_mod=4, min_count=1, engine=engine))
  assert vocab_of(ds)["s"] == ["a,b", "c", "d"]


@pytest.mark.parametrize("engine", ENGINES)
def test_criteo_tsv_quirks_empty_negative_and_buckets(tmp_path, engine):
  d = tmp_path / "raw"
  write_file(d / "train.tsv", CRITEO)
  write_file(d / "test.tsv", "0\t2.5\t26\td\ty\n1\t4\t7\ta\tz\n")
  ds = load_data(_criteo_cfg(d, tmp_path / "c", engine))
  v = vocab_of(ds)
  assert v["I1"] == ["1", "5", "47"]  # "" and 0 -> bucket 0 = NA (OOV); 3 -> 1; 10 -> 5; 1000 -> 47
  assert v["I2"] == ["-1", "1", "2", "10"]  # negative ints stay distinct tokens, numeric order
  assert v["C1"] == ["a", "b", "c"] and "" not in v["C2"]
  oov = [len(v[f]) + 1 for f in ("I1", "I2", "C1", "C2")]
  np.testing.assert_array_equal(x_of(ds, "train")[:5], [[oov[0], 1, 2, 1], [oov[0], 4, oov[2], 1], [1, 3, 1, 2],
                                                      [2, 1, 2, oov[3]], [3, 2, 3, 1]])
  # test: 2.5 -> bucket 0 -> OOV; 26 -> 10; "d" unseen -> OOV; "z" unseen -> OOV
  np.testing.assert_array_equal(x_of(ds, "test"), [[oov[0], 4, oov[2], 2], [1, oov[1], 1, oov[3]]])


@pytest.mark.parametrize("engine", ENGINES)
def test_per_field_min_count_overrides_the_default(tmp_path, engine):
  d = tmp_path / "raw"
  write_file(d / "train.tsv", CRITEO)
  write_file(d / "test.tsv", "0\t2.5\t26\td\ty\n")
  cfg = _criteo_cfg(d, tmp_path / "c", engine, min_count=1)
  cfg.field_options = {"C1": {"min_count": 8}}  # a x7, b x14, c x7 -> only b kept
  ds = load_data(cfg)
  assert vocab_of(ds)["C1"] == ["b"] and vocab_of(ds)["C2"] == ["x", "y"]


# ============================================================================ sequences, transforms

@pytest.mark.parametrize("engine", ENGINES)
def test_sequence_na_token_is_pad_oov_and_truncation(tmp_path, engine):
  d = tmp_path / "raw"
  write_file(d / "train.csv", "label,s\n1,a|b|c|d\n0,b||a\n1,\n0,c|c\n")
  write_file(d / "test.csv", "label,s\n1,z|a\n0,a|b|c|d|e\n")
  cfg = _cfg(d, tmp_path / "c", format="delimited", files={"train": "train.csv", "test": "test.csv"}, header=True,
             delimiter=",", fields=("s",), field_options={"s": {"kind": "sequence", "max_len": 3, "splitter": "|"}},
             engine=engine)
  ds = load_data(cfg)
  assert vocab_of(ds)["s"] == ["a", "b", "c", "d"]  # d (past max_len) still counted
  np.testing.assert_array_equal(x_of(ds, "train"), [[1, 2, 3], [2, 0, 1], [0, 0, 0], [3, 3, 0]])  # "" token -> PAD in place
  np.testing.assert_array_equal(x_of(ds, "test"), [[5, 1, 0], [1, 2, 3]])  # z unseen -> OOV (5)


def test_embedding_masked_mean_pooling_pad_rows_zero():
  import jax
  import jax.numpy as jnp
  from kdef_jax.models.embedding import FeatureEmbedding

  m = FeatureEmbedding(vocab_sizes=(4, 6), embedding_dim=3, max_lens=(1, 3), init_std=1.0)
  ids = jnp.array([[1, 2, 3, 0], [2, 0, 0, 0], [3, 5, 5, 1]], jnp.int32)
  params = m.init(jax.random.PRNGKey(0), ids)
  table = params["params"]["table"]
  np.testing.assert_array_equal(np.asarray(table)[[0, 4]], 0.0)  # PAD rows exactly 0
  out = np.asarray(m.apply(params, ids))
  t = np.asarray(table)
  np.testing.assert_allclose(out[0, 1], (t[4 + 2] + t[4 + 3]) / 2, rtol=1e-6)
  np.testing.assert_array_equal(out[1, 1], 0.0)  # all-PAD sequence -> exactly 0
  np.testing.assert_allclose(out[2, 1], (2 * t[4 + 5] + t[4 + 1]) / 3, rtol=1e-6)
  g = jax.grad(lambda p: m.apply(p, ids).sum())(params)["params"]["table"]
  np.testing.assert_array_equal(np.asarray(g)[[0, 4]], 0.0)  # PAD rows get no gradient


AVAZU = ("id,click,hour,C1,site_id\n"
         "a1,0,14102100,1005,s1\n"  # 2014-10-21: Tuesday
         "a2,1,14102523,1005,s2\n"  # 2014-10-25: Saturday
         "a3,0,14102600,1002,s1\n")  # 2014-10-26: Sunday


@pytest.mark.parametrize("engine", ENGINES)
def test_avazu_hour_to_hour_of_day_weekday_weekend(tmp_path, engine):
  d = tmp_path / "raw"
  write_file(d / "train", AVAZU)
  mod = load_config_module("avazu")
  cfg = mod.get_config().data
  cfg.data_dir, cfg.cache_dir, cfg.engine, cfg.split, cfg.min_count = str(d), str(tmp_path / "c"), engine, "files", 1
  cfg.fields = ("C1", "site_id") + mod.DERIVED
  ds = load_data(cfg)
  v = vocab_of(ds)
  assert v["hour_of_day"] == ["0", "23"] and v["weekday"] == ["0", "2", "6"] and v["weekend"] == ["0", "1"]
  np.testing.assert_array_equal(x_of(ds, "train")[:, 2:], [[1, 2, 1], [2, 3, 2], [1, 1, 2]])
  write_file(d / "train", AVAZU + "a4,1,141026,1002,s1\n")
  with pytest.raises(DataFormatError) as e:
    cfg.cache_dir = str(tmp_path / "c2")
    load_data(cfg)
  assert f"{d / 'train'}:5:" in str(e.value) and "YYMMDDHH" in str(e.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_avazu_reads_kaggles_train_gz_as_it_is(tmp_path, engine):
  import gzip

  d = tmp_path / "raw"
  text = AVAZU + "".join(AVAZU.splitlines(keepends=True)[1:]) * 20  # 63 rows, drawn 8:1:1 as configured
  write_file(d / "train", text)
  write_file(d / "train.gz", gzip.compress(text.encode()))
  mod = load_config_module("avazu")
  got = []
  for name in ("train", "train.gz"):
    cfg = mod.get_config().data
    cfg.data_dir, cfg.cache_dir, cfg.engine, cfg.min_count = str(d), str(tmp_path / name), engine, 1
    cfg.files.train, cfg.fields = name, ("C1", "site_id") + mod.DERIVED
    got.append(load_data(cfg))
  assert vocab_of(got[0]) == vocab_of(got[1]) and got[0].feature_map.num_rows == got[1].feature_map.num_rows
  assert sum(got[1].feature_map.num_rows.values()) == 63 and len(got[1].splits) == 3
  assert_same_splits(*got)


KKBOX = ('msno,song_id,source_system_tab,source_screen_name,source_type,city,gender,registered_via,language,'
         'genre_ids,artist_name,isrc,bd,label\n'
         'u1,s1,tab,scr,typ,1,male,7,3,465|958,"Jay Chou|Various, Artists",TWK231501010,25,1\n'
         'u2,s2,tab,scr,typ,1,,7,3,465,Adele,GBBKS1100170,0,0\n'
         'u1,s2,tab,scr,typ,1,male,7,3,,Adele,,96,1\n'
         'u2,s1,tab,scr,typ,1,,7,3,958|465|1,Adele,USAT21500001,61,0\n')


@pytest.mark.parametrize("engine", ENGINES)
def test_kkbox_isrc_country_age_buckets_and_pipe_sequences(tmp_path, engine):
  d = tmp_path / "raw"
  for s in ("train.csv", "valid.csv", "test.csv"):
    write_file(d / s, KKBOX)
  cfg = load_config_module("kkbox").get_config().data
  cfg.data_dir, cfg.cache_dir, cfg.engine, cfg.min_count = str(d), str(tmp_path / "c"), engine, 1
  ds = load_data(cfg)
  v = vocab_of(ds)
  assert v["isrc"] == ["GB", "TW", "US"]  # missing isrc -> OOV
  assert v["bd"] == ["3", "7"]  # 0 and 96 are outside [1, 95] -> missing -> OOV
  assert v["artist_name"] == ["Adele", "Jay Chou", "Various, Artists"]  # quoted comma kept
  assert v["genre_ids"] == ["1", "465", "958"]
  x = x_of(ds, "train")
  names = [f.name for f in ds.feature_map.fields]
  col = {n: sum(f.max_len for f in ds.feature_map.fields[: names.index(n)]) for n in names}
  np.testing.assert_array_equal(x[:, col["bd"]], [1, 3, 3, 2])
  np.testing.assert_array_equal(x[:, col["isrc"]], [2, 1, 4, 3])
  np.testing.assert_array_equal(x[:, col["genre_ids"]:col["genre_ids"] + 3], [[2, 3, 0], [2, 0, 0], [0, 0, 0], [3, 2, 1]])


def test_libfm_featindex_maps_indices_to_field_values(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "fi.txt", "weekday:other\t0\nweekday:2\t1\nweekday:3\t2\nhour:other\t3\nhour:01\t4\nhour:02\t5\n")
  write_file(d / "train.fm", "0 1:1 4:1\n1 2:1 5:1\n0 1:1 3:1\n")
  cfg = _cfg(d, tmp_path / "c", format="libfm", files={"train": "train.fm"}, fields=("weekday", "hour"),
             featindex="fi.txt", label_rule="binary")
  ds = load_data(cfg)
  assert vocab_of(ds) == {"weekday": ["2", "3"], "hour": ["01", "02", "other"]}
  write_file(d / "train.fm", "0 1:1 4:1\n1 4:1 5:1\n")  # index 4 is an hour, not a weekday
  cfg.cache_dir = str(tmp_path / "c2")
  with pytest.raises(DataFormatError) as e:
    load_data(cfg)
  assert f"{d / 'train.fm'}:2:" in str(e.value) and "'hour'" in str(e.value)


# ============================================================================ label rules

def test_label_rule_parsing_and_application():
  r = LabelRule.parse("threshold:4:2")
  lab, bad = r.apply(["5", "4", "3", "2.0", "x"])
  assert lab.tolist()[:4] == [1.0, 1.0, -1.0, 0.0] and list(bad) == [4]
  assert LabelRule.parse("map:yes=1,no=0").apply(["yes", "no", "maybe"])[1] == {2: "label 'maybe' is not one of ['no', 'yes']"}
  for text in ("threshold:2:4", "map:a=2", "nope"):
    with pytest.raises(ValueError, match="label rule"):
      LabelRule.parse(text)


# ============================================================================ bad input, every class

def _tsv_cfg(d, cache, engine, **kw):
  return _cfg(d, cache, format="delimited", files={"train": "train.tsv"}, column_names=COLS,
              fields=("I1", "I2", "C1", "C2"), numeric_fields=("I1", "I2"), engine=engine, **kw)


BAD_CASES = {
    "wrong_column_count": (b"1\t1\t2\ta\tb\n0\t1\t2\ta\n1\t1\t2\ta\tb\n", 2, "expected 5 columns, found 4"),
    "non_numeric": (b"1\t1\t2\ta\tb\n0\t1\t2\ta\tb\n0\tabc\t2\ta\tb\n", 3, "'abc'"),
    "label_outside_rule": (b"1\t1\t2\ta\tb\n7\t1\t2\ta\tb\n", 2, "label '7'"),
    "undecodable": (b"1\t1\t2\ta\tb\n0\t1\t2\t\xff\xfe\tb\n1\t1\t2\ta\tb\n", 2, "undecodable"),
    "empty_line": (b"1\t1\t2\ta\tb\n\n1\t1\t2\ta\tb\n", 2, "expected 5 columns, found 1"),
    # a long line and a short one that balance the block's delimiter count (polars would null-fill)
    "balanced_ragged": (b"1\t1\t2\ta\tb\tx\n0\t1\t2\ta\n1\t1\t2\ta\tb\n", 1, "expected 5 columns, found 6", 2),
    "byte_order_mark": (b"\xef\xbb\xbf1\t1\t2\ta\tb\n0\t1\t2\ta\tb\n", 1, "label '\\ufeff1'"),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_rows_error_with_file_and_line_or_skip_and_count(tmp_path, engine, case):
  data, line, text, *skipped = BAD_CASES[case]
  d = tmp_path / "raw"
  p = write_file(d / "train.tsv", data * 1)
  with pytest.raises(DataFormatError) as e:
    load_data(_tsv_cfg(d, tmp_path / "c", engine))
  assert f"{p}:{line}:" in str(e.value) and text in str(e.value)
  assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
  logs = []
  ds = load_dataset(_tsv_cfg(d, tmp_path / "c2", engine, on_bad_rows="skip"), log=logs.append)
  assert ds.feature_map.skipped_rows == {str(p): (skipped or [1])[0]}
  assert any("skipped" in m and str(p) in m for m in logs)


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_missing_file_and_header_without_schema_field(tmp_path, engine):
  d = tmp_path / "raw"
  p = write_file(d / "train.tsv", b"")
  with pytest.raises(DataFormatError, match="empty") as e:
    load_data(_tsv_cfg(d, tmp_path / "c", engine))
  assert str(p) in str(e.value)
  with pytest.raises(FileNotFoundError) as e:
    load_data(_cfg(d, tmp_path / "c", format="delimited", files={"train": "nope.tsv"}, fields=("a",), engine=engine))
  assert str(d / "nope.tsv") in str(e.value)
  p = write_file(d / "h.csv", "label,I1,C1\n1,2,a\n")
  with pytest.raises(DataFormatError) as e:
    load_data(_cfg(d, tmp_path / "c", format="delimited", files={"train": "h.csv"}, header=True, delimiter=",",
               fields=("I1", "C7"), engine=engine))
  assert str(p) in str(e.value) and "C7" in str(e.value)


def test_unknown_field_option_and_transform_are_config_errors(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "train.tsv", CRITEO)
  cfg = _criteo_cfg(d, tmp_path / "c", "python")
  cfg.field_options = {"C1": {"maxlen": 3}}
  with pytest.raises(ValueError, match="field_options.C1"):
    load_data(cfg)
  cfg.field_options = {"C1": {"transform": "nope"}}
  with pytest.raises(ValueError, match="transform"):
    load_data(cfg)


def test_npy_files_are_written_without_memmap(tmp_path, monkeypatch):
  """Pass 1 appends with plain writes and pass 2 rewrites in place: memmaps would grow the RSS."""
  def forbidden(*a, **k):
    raise AssertionError("preprocessing must not memmap its outputs")

  monkeypatch.setattr(np.lib.format, "open_memmap", forbidden)
  monkeypatch.setattr(np, "memmap", forbidden)
  d = tmp_path / "raw"
  write_file(d / "train.tsv", CRITEO)
  write_file(d / "test.tsv", "0\t2.5\t26\td\ty\n")
  cfg = _criteo_cfg(d, tmp_path / "c", "python")
  spec = __import__("kdef_jax.data.dataset", fromlist=["_source_spec"])._source_spec(cfg)
  out = preprocess.build_cache(spec, tmp_path / "c", log=quiet)
  x = np.load(out / "train_x.npy")
  assert x.shape == (35, 4) and x.dtype == np.int32 and x.min() >= 1


# ============================================================================ TFDS

@pytest.mark.skipif(not HAS_TFDS, reason="tensorflow-datasets (the 'tfds' extra) is not installed")
def test_tfds_movielens_ratings_into_the_cache_with_mock_data(tmp_path, monkeypatch):
  import tempfile

  import tensorflow_datasets as tfds

  # TFDS's DatasetInfo.initialize_from_bucket makes an empty mkdtemp("tfds") folder for a dataset without
  # prepared info (mock data) and never removes it: keep them in this test's folder, not in /tmp.
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

  c = base_config().data
  c.name, c.format, c.tfds_name, c.cache_dir = "ml_tfds", "tfds", "movielens/100k-ratings", str(tmp_path / "c")
  c.files.train = "train"
  c.split, c.split_fractions = "random", (0.8, 0.1, 0.1)
  c.label_column, c.label_rule = "user_rating", "threshold:0.5:0.4999"  # mock ratings are uniform in [0, 1)
  c.fields = ("user_id", "movie_id", "user_gender", "user_occupation_text", "movie_genres")
  c.field_options = {"movie_genres": {"kind": "sequence", "max_len": 5, "splitter": "^"}}
  with tfds.testing.mock_data(num_examples=200):
    ds = load_data(c)
  fm = ds.feature_map
  assert sum(fm.num_rows.values()) + sum(fm.info["dropped_by_label_rule"].values()) == 200
  assert fm.num_rows["train"] > 100 and fm.fields[-1].max_len == 5 and fm.fields[-1].type == "sequence"
  assert set(vocab_of(ds)["user_gender"]) <= {"0", "1"}
  assert (x_of(ds, "train")[:, :4] >= 1).all()


# ============================================================================ real data, one KDEF epoch each

# the last value: a floor for the one-epoch test AUC, well below what it gives
# (experiments/results/datasets_real.md: 0.9105, 0.8254, 0.6432, 0.6534); None where the split is too small
REAL = [
    ("frappe", None, "frappe", {"train": 51_949, "valid": 5_773, "test": 28_860}, 5_298, 0.85),
    ("movielens", None, "movielens_100k", {"train": 52_159, "valid": 5_878, "test": 14_818}, 3_442, 0.75),
    ("criteo", "sample", "criteo_sample", {"train": 7_200, "valid": 409, "test": 391}, None, 0.55),
    ("criteo_bars", "sample", "criteo_sample", None, None, None),
    ("ipinyou", "sample", "ipinyou_sample", {"train": 24_095, "valid": 2_678, "test": 21_150}, None, 0.55),
    ("movielens", "1m_sample", "movielens_1m_meta", None, None, None),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,arg,folder,rows,vocab,auc_floor", REAL, ids=[f"{r[0]}:{r[1] or ''}" for r in REAL])
def test_real_dataset_config_preprocesses_and_trains_one_kdef_epoch(tmp_path, name, arg, folder, rows, vocab, auc_floor):
  from kdef_jax.train import train_and_evaluate

  d = shared_data_dir() / folder
  if not d.is_dir():
    pytest.skip(f"{d} not found")
  c = load_config_module(name).get_config(arg)
  c.data.data_dir, c.data.cache_dir = str(d), str(tmp_path / "cache")
  c.train.num_epochs, c.train.progress, c.train.plot = 1, False, False
  c.model.num_students = 3
  res = train_and_evaluate(c, tmp_path / "run", log=quiet)
  fm = res["feature_map"]
  if rows:
    assert fm["num_rows"] == rows
  if vocab:
    assert fm["total_vocab"] == vocab
  ens = res["rows"][0]
  assert 0.0 <= ens["val_auc"] <= 1.0 and ("test_auc" not in ens or 0.0 <= ens["test_auc"] <= 1.0)
  if auc_floor is not None:  # it learned something in its one epoch
    assert ens["test_auc"] > auc_floor


# ============================================================================ BARS CSV configs

def _bars(tmp_path, module, arg, header, rows, engine):
  d = tmp_path / "bars"
  for s in ("train.csv", "valid.csv", "test.csv"):
    write_file(d / s, header + rows)
  c = load_config_module(module).get_config(arg).data
  c.data_dir, c.cache_dir, c.engine, c.min_count = str(d), str(tmp_path / f"c_{module}"), engine, 1
  return load_data(c)


@pytest.mark.parametrize("engine", ENGINES)
def test_bars_csv_configs_kdd12_frappe_latest_criteo(tmp_path, engine):
  kdd = _bars(tmp_path, "kdd12", None,
              "Click,Depth,Position,Impression,DisplayURL,AdID,AdvertiserID,QueryID,KeywordID,TitleID,DescriptionID,UserID,Gender,Age\n",
              "0,2,1,1,u1,a1,v1,q1,k1,t1,d1,x1,1,3\n1,3,2,30,u2,a1,v1,q2,k1,t1,d1,x2,2,4\n", engine)
  v = vocab_of(kdd)
  assert v["Depth"] == ["1", "2"] and v["Position"] == ["1", "2"] and v["Impression"] == ["1", "11"]  # ⌊ln² 3⌋=1, ⌊ln² 30⌋=11
  assert kdd.feature_map.num_fields == 13
  fr = _bars(tmp_path, "frappe", "bars", "label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city\n",
             "1,0,1,morning,sunday,weekend,unknown,free,sunny,United States,1\n0,2,3,night,monday,workday,home,paid,rainy,Spain,2\n",
             engine)
  assert vocab_of(fr)["country"] == ["Spain", "United States"] and fr.feature_map.num_rows["train"] == 2
  ml = _bars(tmp_path, "movielens_latest", None, "label,user_id,item_id,tag_id\n", "1,1,2,3\n0,1,4,5\n", engine)
  assert ml.feature_map.vocab_sizes == (3, 4, 4)
  cr = _bars(tmp_path, "criteo_bars", None, "label," + ",".join(f"I{i}" for i in range(1, 14)) + "," +
             ",".join(f"C{i}" for i in range(1, 27)) + "\n",
             "0,," + ",".join(["260.0"] * 12) + "," + ",".join(["05db9164"] * 26) + "\n", engine)
  assert vocab_of(cr)["I2"] == ["30"] and vocab_of(cr)["I1"] == []  # ⌊ln² 260⌋ = 30; missing I1 -> OOV only


def test_kkbox_age_bucket_boundaries():
  """Ages on every bucket edge: "" outside [1, 95]; "1" (≤10), "2" (≤20) … "6" (≤60), "7" (>60)."""
  from kdef_jax.data.schema import TRANSFORMS

  age = TRANSFORMS["kkbox_age"]
  cases = {"": "", "0": "", "0.5": "", "1": "1", "10": "1", "10.5": "2", "20": "2", "21": "3", "30": "3", "40": "4",
           "50": "5", "60": "6", "60.5": "7", "95": "7", "95.5": "", "-3": ""}
  assert {k: age(k) for k in cases} == cases


def test_threshold_label_rule_needs_neg_strictly_below_pos():
  """threshold:4:4 would make every 4 both positive and negative: NEG must be below POS."""
  from kdef_jax.data.schema import LabelRule

  with pytest.raises(ValueError, match="NEG must be < POS"):
    LabelRule.parse("threshold:4:4")
  r = LabelRule.parse("threshold:4:3.5")
  assert r.apply(["4", "3.75", "3.5"])[0].tolist() == [1.0, -1.0, 0.0]


def test_threshold_label_rule_rejects_non_finite_labels():
  """Labels inf, nan and -inf under a threshold rule are bad rows, not a positive or a silent drop."""
  from kdef_jax.data.schema import DROP, LabelRule

  lab, bad = LabelRule.parse("threshold:4:2").apply(["inf", "5", "nan", "-inf"])
  assert lab.tolist() == [DROP, 1.0, DROP, DROP]
  assert sorted(bad) == [0, 2, 3] and "label 'inf' is not a number" in bad[0]


def test_libfm_row_with_an_extra_pair_is_a_bad_row(tmp_path):
  """Too many pairs is a bad row too: a row of 3 pairs for 2 fields names its line."""
  from kdef_jax.data.formats.libfm import read_libfm

  p = tmp_path / "x.libfm"
  p.write_text("1 1:1 2:1\n0 1:1 2:1 3:1\n0 4:1\n")
  (block,) = read_libfm(str(p), ("a", "b"))  # ends before the bad row, which the driver raises after it
  assert block.error == f"{p}:2: expected 2 'index:value' pairs after the label, found 3"
  assert block.line_numbers.tolist() == [1] and block.skipped == 0
  (block,) = read_libfm(str(p), ("a", "b"), on_bad_rows="skip")
  assert block.skipped == 2 and block.line_numbers.tolist() == [1]




def test_binary_label_rule_maps_the_float_spellings_of_0_and_1():
  lab, bad = LabelRule().apply(["0", "1", "0.0", "1.0", "2"])
  assert lab.tolist()[:4] == [0.0, 1.0, 0.0, 1.0] and list(bad) == [4]
  assert LabelRule.parse("binary") == LabelRule()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_non_default_na_value_is_missing_in_categorical_and_sequence_fields(tmp_path, engine):
  d = tmp_path / "raw"
  write_file(d / "train.csv", "label,c,s\n1,x,a|NA|b\n0,NA,NA\n1,y,b\n0,x,\n")
  cfg = _cfg(d, tmp_path / "c", format="delimited", files={"train": "train.csv"}, header=True, delimiter=",",
             fields=("c", "s"), engine=engine,
             field_options={"c": {"na_value": "NA"},
                            "s": {"kind": "sequence", "max_len": 3, "splitter": "|", "na_value": "NA"}})
  ds = load_data(cfg)
  assert vocab_of(ds) == {"c": ["x", "y"], "s": ["a", "b"]}
  # c: x -> 1, y -> 2, "NA" is missing -> OOV 3; s: a -> 1, b -> 2, an "NA" token -> PAD 0 in place,
  # a whole-value "NA" or "" -> all PAD
  np.testing.assert_array_equal(x_of(ds, "train"), [[1, 1, 0, 2], [3, 0, 0, 0], [2, 2, 0, 0], [1, 0, 0, 0]])


PANDAS_NA_CSV = "label,c,n,s,a\n1,x,10,a|NA,NA\n0,NA,NaN,NA,25\n1,null,null,b,None\n0,y,,None,99\n1,N/A,1,a,\n"


@pytest.mark.parametrize("engine", ENGINES)
def test_pandas_default_na_strings_are_missing_as_in_fuxictrs_reader(tmp_path, engine):
  """FuxiCTR reads CSVs with pandas' defaults: a whole value "NA", "null", "NaN", "None", "N/A", ... is
  NaN, filled before any transform, so it is missing (OOV; all PAD for a sequence; bucket 0 for a
  number) in every column kind; an "NA" token inside a sequence stays a token."""
  d = tmp_path / "raw"
  write_file(d / "train.csv", PANDAS_NA_CSV)
  cfg = _cfg(d, tmp_path / "c", format="delimited", files={"train": "train.csv"}, header=True, delimiter=",",
             fields=("c", "n", "s", "a"), numeric_fields=("n",), engine=engine,
             field_options={"s": {"kind": "sequence", "max_len": 2, "splitter": "|"}, "a": {"transform": "kkbox_age"}})
  ds = load_data(cfg)
  v = vocab_of(ds)
  assert v["c"] == ["x", "y"] and v["s"] == ["NA", "a", "b"] and v["a"] == ["3"]
  assert [float(t) for t in v["n"]] == [1.0, 5.0]  # 10 -> floor(ln(10)^2) = 5; 1 -> 1; NaN/null/"" -> 0 = missing
  # c: x 1, y 2, OOV 3 | n: 1 -> 1, 5 -> 2, OOV 3 | s: NA 1, a 2, b 3 (pairs) | a: "3" 1, OOV 2
  np.testing.assert_array_equal(x_of(ds, "train"), [[1, 2, 2, 1, 2], [3, 3, 0, 0, 1], [3, 3, 3, 0, 2],
                                                    [2, 3, 0, 0, 2], [3, 1, 2, 0, 2]])


@pytest.mark.parametrize("engine", ENGINES)
def test_pandas_na_false_keeps_those_strings_as_tokens_globally_or_per_field(tmp_path, engine):
  d = tmp_path / "raw"
  write_file(d / "train.csv", PANDAS_NA_CSV)
  kw = dict(format="delimited", files={"train": "train.csv"}, header=True, delimiter=",", fields=("c", "s"),
            engine=engine)
  seq = {"kind": "sequence", "max_len": 2, "splitter": "|"}
  for name, extra in {"global": dict(pandas_na=False, field_options={"s": seq}),
                      "field": dict(field_options={"c": {"pandas_na": False}, "s": dict(seq, pandas_na=False)})}.items():
    ds = load_data(_cfg(d, tmp_path / name, **kw, **extra))
    assert vocab_of(ds) == {"c": ["N/A", "NA", "null", "x", "y"], "s": ["NA", "None", "a", "b"]}
    np.testing.assert_array_equal(x_of(ds, "train"), [[4, 3, 1], [2, 1, 0], [3, 4, 0], [5, 2, 0], [1, 3, 0]])
  # a number: "NaN" is an error naming its line without pandas_na, bucket 0 (missing) with it
  p = write_file(d / "num.csv", "label,n\n1,3\n0,NaN\n")
  num = dict(format="delimited", files={"train": "num.csv"}, header=True, delimiter=",", fields=("n",),
             numeric_fields=("n",), engine=engine)
  with pytest.raises(DataFormatError, match=f"{p}:3: .*'NaN'"):
    load_data(_cfg(d, tmp_path / "n1", pandas_na=False, **num))
  np.testing.assert_array_equal(x_of(load_data(_cfg(d, tmp_path / "n2", **num)), "train"), [[1], [2]])


# Edge cases of each reader that mutation testing showed no test pinned (2026-12-06).

def test_undecodable_header_names_line_1(tmp_path):  # D01
  p = write_file(tmp_path / "h.csv", b"lab\xffel,a\n1,x\n")
  with pytest.raises(DataFormatError, match=r"h\.csv:1: undecodable bytes in the header"):
    delimited.open_layout(str(p), label_column="label", feature_columns=["a"], header=True, delimiter=",")


def test_quoted_header_names_are_unquoted(tmp_path):  # D02
  p = write_file(tmp_path / "h.csv", '"label","a,b"\n1,x\n')
  lay = delimited.open_layout(str(p), label_column="label", feature_columns=["a,b"], header=True, delimiter=",",
                              quotechar='"')
  assert lay.names == ("label", "a,b") and lay.positions == [0, 1]


def test_featindex_value_may_hold_colons_and_tabs_and_index_is_stripped(tmp_path):  # L02, L03, L10
  p = write_file(tmp_path / "fi.txt", "url:http://x\t3\nf:a\tb\t5\ng:v\t7 \n")
  assert libfm.read_featindex(str(p)) == {"3": ("url", "http://x"), "5": ("f", "a\tb"), "7": ("g", "v")}


def test_featindex_empty_or_without_colon_is_an_error(tmp_path):  # L07, L08
  p = write_file(tmp_path / "fi.txt", "\n\n")
  with pytest.raises(DataFormatError, match="feature index is empty"):
    libfm.read_featindex(str(p))
  p = write_file(tmp_path / "fi2.txt", "f:a\t1\nnovalue\t2\n")
  with pytest.raises(DataFormatError, match="not 'field:value<TAB>index'"):
    libfm.read_featindex(str(p))


def test_libfm_blank_line_is_reported_as_empty(tmp_path):  # L04
  d = tmp_path / "raw"
  p = write_file(d / "train.libfm", "1 1:1 2:1 3:1\n\n-1 1:1 2:1 3:1\n")
  assert f"{p}:2: empty line" in load_error(data_cfg(d, tmp_path / "cache"))


def test_python_libfm_reader_rejects_an_empty_file(tmp_path):  # L05
  p = write_file(tmp_path / "e.libfm", b"")
  with pytest.raises(DataFormatError, match="file is empty"):
    list(libfm.read_libfm(str(p), ["a"]))


@pytest.mark.parametrize("engine", ["python", *FAST])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_libfm_double_space_is_one_separator_in_every_engine(tmp_path, engine, eol):  # S08, S09, C16
  # "-1  2:1": str.split() sees one pair (a wrong count); no engine may read an empty field there
  d = tmp_path / "raw"
  p = write_file(d / "train.libfm", eol.join(["1 1:1 2:1", "-1  2:1", "1 1:1 2:1"]) + eol)
  msg = load_error(data_cfg(d, tmp_path / "cache", fields=("a", "b"), engine=engine))
  assert f"{p}:2: expected 2 'index:value' pairs after the label, found 1" in msg


@pytest.mark.parametrize("engine", ["python", *FAST])
def test_latin1_file_is_decoded_as_latin1_by_every_engine(tmp_path, engine):  # C10
  d = tmp_path / "raw"
  write_file(d / "train.csv", "label,u\n1,\u00e9\n0,ab\n".encode("utf-8"))  # valid UTF-8 bytes, read as Latin-1
  ds = load_data(_cfg(d, tmp_path / "c", format="delimited", files={"train": "train.csv"}, header=True,
                         delimiter=",", fields=("u",), encoding="latin-1", min_count=1, engine=engine))
  assert vocab_of(ds)["u"] == ["ab", "Ã©"]  # sorted; "é" would be the UTF-8 reading


def _ml100k(tmp_path, users="1|24|M|technician|85711\n", genres="Action|0\nComedy|1\n"):
  write_file(tmp_path / "u.genre", genres)
  write_file(tmp_path / "u.user", users)
  write_file(tmp_path / "u.item", "7|Film (1990)|01-Jan-1990||url|1|0\n")


def test_movielens_metadata_line_numbers_count_blank_lines(tmp_path):  # M01
  _ml100k(tmp_path, users="1|24|M|technician|85711\n\n2|53|F\n")
  with pytest.raises(DataFormatError, match=r"u\.user:3: expected 5 '\|'-separated fields, found 3"):
    movielens.load_metadata(str(tmp_path), "100k")


def test_movielens_metadata_with_too_many_fields_or_a_bad_genre_id_is_an_error(tmp_path):  # M08, M10
  _ml100k(tmp_path, users="1|24|M|technician|85711|extra\n")
  with pytest.raises(DataFormatError, match=r"u\.user:1: expected 5 '\|'-separated fields, found 6"):
    movielens.load_metadata(str(tmp_path), "100k")
  _ml100k(tmp_path, genres="Action|0\nComedy|x\n")
  with pytest.raises(DataFormatError, match=r"u\.genre:2: expected 'name\|id'"):
    movielens.load_metadata(str(tmp_path), "100k")


def test_movielens_unknown_item_extra_field_and_empty_file(tmp_path):  # M05, M07, M12
  meta = ({"1": ["24", "M", "technician", "85711"]}, {"7": ["Film (1990)", "Action"]})
  kw = dict(meta_dir=str(tmp_path), variant="100k", feature_columns=["user_id", "item_id"], _meta=meta)
  p = write_file(tmp_path / "r.data", "1\t7\t5\t1\n1\t8\t4\t2\n1\t7\t3\t3\n")
  (block,) = movielens.read_movielens(str(p), **kw)  # ends before the bad row, which the driver raises after it
  assert block.error == f"{p}:2: item id '8' is not in the items file" and block.line_numbers.tolist() == [1]
  p = write_file(tmp_path / "r.data", "1\t7\t5\t1\n1\t7\t4\t2\t9\n")
  (block,) = movielens.read_movielens(str(p), **kw)
  assert re.fullmatch(r".*r\.data:2: expected 4 '\t'-separated fields .*found 5", block.error)
  p = write_file(tmp_path / "r.data", b"")
  with pytest.raises(DataFormatError, match="file is empty"):
    list(movielens.read_movielens(str(p), **kw))


def test_tfds_to_text_arrays_and_bytes():  # T02, T06
  assert tfds_mod.to_text(np.array([b"Action", b"Comedy"])) == "Action^Comedy"
  assert tfds_mod.to_text(np.array(b"abc")) == "abc"  # a 0-d bytes array


def test_tfds_reader_record_numbers_and_empty_split(monkeypatch):  # T03, T04, T05
  recs = [{"r": 1.0, "u": b"a"}, {"r": 0.0, "u": b"b"}, {"r": 1.0, "u": b"c"}]
  monkeypatch.setattr(tfds_mod, "_source", lambda name, split, data_dir: recs)
  blocks = list(tfds_mod.read_tfds("train", name="x", data_dir=None, label_column="r", feature_columns=["u"], chunk_rows=2))
  assert [b.line_numbers.tolist() for b in blocks] == [[1, 2], [3]]
  assert [b.row_index.tolist() for b in blocks] == [[0, 1], [2]]
  recs[2] = {"r": 1.0}
  with pytest.raises(DataFormatError, match=r"tfds:x\[train\]:3: features \['u'\]"):
    list(tfds_mod.read_tfds("train", name="x", data_dir=None, label_column="r", feature_columns=["u"], chunk_rows=2))
  recs.clear()
  with pytest.raises(DataFormatError, match="the split is empty"):
    list(tfds_mod.read_tfds("train", name="x", data_dir=None, label_column="r", feature_columns=["u"]))


@pytest.mark.parametrize("engine", FAST)
@pytest.mark.parametrize("space", ["\t", "\x0b", "\x0c", "\x1c", "\x1f", "\u00a0", "\u2003"])
@pytest.mark.parametrize("where", ["before_pair", "in_value"])
def test_libfm_whitespace_other_than_a_space_is_read_as_the_python_engine_reads_it(tmp_path, engine, space, where):
  """str.split() (the Python engine) splits a libFM line at any whitespace; a block holding whitespace other
  than " " goes to it from the fast engines, so a tab or a no-break space gives every engine the same rows."""
  d = tmp_path / "raw"
  line = f"-1 1:1 {space}2:1" if where == "before_pair" else f"-1 1:{space}1 2:1"
  write_file(d / "train.libfm", f"1 1:1 2:1\n{line}\n".encode())
  results = []
  for eng in ("python", engine):
    try:
      results.append(vocab_of(load_data(data_cfg(d, tmp_path / f"c_{eng}", fields=("a", "b"), engine=eng))))
    except DataFormatError as e:
      results.append(str(e))
  assert results[0] == results[1]


@pytest.mark.skipif(not columnar.available("native"), reason="numba (the 'preprocess' extra) is not installed")
def test_builds_compile_no_kernel_in_a_worker_thread_after_the_warm_up(tmp_path):
  """numba compiling inside a worker thread holds the GIL for seconds (and has deadlocked): warm_up
  compiles every signature a build uses, the memory map's read-only arrays and libFM's checks included."""
  from kdef_jax.data.formats import split_kernels

  columnar.warm_up("native")
  kernels = ("count_lines", "split", "split_words", "has_control_byte")
  before = {k: len(getattr(split_kernels, k).signatures) for k in kernels}
  d = tmp_path / "raw"
  write_file(d / "train.libfm", "1 1:1 2:1\n-1 2:1 2:1\r\n1 1:1 3:1\n")
  write_file(d / "train.csv", "label\tc\n1\tx\n0\ty\r\n")
  load_data(data_cfg(d, tmp_path / "c1", fields=("a", "b"), engine="native"))
  load_data(_cfg(d, tmp_path / "c2", format="delimited", files={"train": "train.csv"}, header=True, delimiter="\t",
                 fields=("c",), engine="native"))
  assert {k: len(getattr(split_kernels, k).signatures) for k in kernels} == before


def test_the_fast_engines_are_imported_only_when_a_raw_file_is_read():
  """Training on a synthetic, tfds or MovieLens dataset does not pay polars' and the columnar
  engine's import (~0.4 s of each run's start)."""
  import subprocess
  import sys

  code = "import sys, kdef_jax.train; print(sorted(m for m in ('polars', 'kdef_jax.data.formats.columnar') if m in sys.modules))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "[]"
