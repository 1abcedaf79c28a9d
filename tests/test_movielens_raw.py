"""MovieLens in its raw layouts (100K: u.user/u.item/u.genre joined to the ratings; 1M: the ``::`` files):
the join, labels from ratings, the split, Latin-1 titles, the genres sequence, bad rows, and the shared
real MovieLens-100K split."""
import numpy as np
import pytest

from conftest import load_config_module, shared_data_dir
from data_helpers import load_data, vocab_of, write_file, x_of, y_of
from kdef_jax.data.schema import DataFormatError


@pytest.fixture(autouse=True)
def _cache_env(no_home_cache):
  yield


GENRES = "unknown|0\nAction|1\nComedy|2\nDrama|3\nHorror|4\nRomance|5\nSci-Fi|6\n"
USERS = "1|24|M|technician|85711\n2|53|F|other|T8H1N\n3|24|M|writer|32067\n"
ITEMS = (
    "1|Toy Story (1995)|01-Jan-1995||url|0|1|1|1|1|1|1\n"  # 6 genres -> truncated to 5
    "2|Amélie (2001)|01-Jan-2001||url|0|0|1|0|0|1|0\n"  # Latin-1 title
    "3|Unknown (1990)|01-Jan-1990||url|1|0|0|0|0|0|0\n"
)
RATINGS = "1\t1\t5\t1\n1\t2\t3\t2\n2\t2\t1\t3\n2\t3\t4\t4\n3\t1\t2\t5\n1\t3\t5\t6\n3\t2\t4\t7\n"
TEST_RATINGS = "3\t3\t5\t8\n2\t1\t3\t9\n1\t2\t1\t10\n"


@pytest.fixture
def ml_dir(tmp_path):
  d = tmp_path / "ml"
  write_file(d / "u.genre", GENRES)
  write_file(d / "u.user", USERS)
  write_file(d / "u.item", ITEMS.encode("latin-1"))
  write_file(d / "u1.base", RATINGS)
  write_file(d / "u1.test", TEST_RATINGS)
  return d


def _ml_cfg(d, cache, **kw):
  mod = load_config_module("movielens")
  c = mod.get_config().data
  c.data_dir, c.cache_dir = str(d), str(cache)
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def test_movielens_100k_join_labels_split_and_genres_sequence(ml_dir, tmp_path):
  cfg = _ml_cfg(ml_dir, tmp_path / "c", valid_mod=3)
  ds = load_data(cfg)
  fm = ds.feature_map
  # rows 0..6 of u1.base; valid = i % 3 == 0 -> rows 0, 3, 6; rating 3 (row 1) is dropped after the split
  assert fm.num_rows == {"train": 3, "valid": 3, "test": 2}
  np.testing.assert_array_equal(y_of(ds, "valid"), [1, 1, 1])
  np.testing.assert_array_equal(y_of(ds, "train"), [0, 0, 1])  # rows 2, 4, 5
  np.testing.assert_array_equal(y_of(ds, "test"), [1, 0])  # rating 3 dropped
  assert sum(fm.info["dropped_by_label_rule"].values()) == 2
  v = vocab_of(ds)
  assert v["user_id"] == ["1", "2", "3"] and v["item_id"] == ["1", "2", "3"]
  assert v["zip"] == ["32067", "85711", "T8H1N"]  # full zip strings, Canadian included
  # genres of the train rows: item 2 (Comedy, Romance), item 1 (first 5 of 6), item 3 (unknown);
  # counts include Sci-Fi, the 6th genre past max_len
  assert v["genres"] == ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "unknown"]
  g = {t: i + 1 for i, t in enumerate(v["genres"])}
  f = {x.name: x for x in fm.fields}
  assert f["genres"].type == "sequence" and f["genres"].max_len == 5
  x = x_of(ds, "train")
  assert x.shape == (3, 6 + 5)
  np.testing.assert_array_equal(x[0, 6:], [g["Comedy"], g["Romance"], 0, 0, 0])  # post-padding
  np.testing.assert_array_equal(x[1, 6:], [g[k] for k in ("Action", "Comedy", "Drama", "Horror", "Romance")])  # truncation
  np.testing.assert_array_equal(x[2, 6:], [g["unknown"], 0, 0, 0, 0])


def test_movielens_latin1_titles_and_1m_layout(tmp_path):
  d = tmp_path / "ml1m"
  write_file(d / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
  write_file(d / "movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Amélie (2001)::Comedy|Romance\n".encode("latin-1"))
  write_file(d / "ratings.dat", "1::1::5::978300760\n2::2::4::978302109\n1::2::2::978301968\n2::1::3::978300275\n")
  cfg = _ml_cfg(d, tmp_path / "c", movielens_variant="1m", split="files")
  cfg.files.train, cfg.files.test = "ratings.dat", ""
  cfg.fields = ("user_id", "item_id", "gender", "age", "title", "genres")
  ds = load_data(cfg)
  v = vocab_of(ds)
  assert v["title"] == ["Amélie (2001)", "Toy Story (1995)"]
  assert v["gender"] == ["F", "M"] and v["age"] == ["1", "56"]
  assert v["genres"] == ["Animation", "Children's", "Comedy", "Romance"]
  assert ds.feature_map.num_rows == {"train": 3}


def test_movielens_unknown_user_names_file_and_line(ml_dir, tmp_path):
  p = write_file(ml_dir / "u1.base", RATINGS + "9\t1\t5\t11\n")
  with pytest.raises(DataFormatError) as e:
    load_data(_ml_cfg(ml_dir, tmp_path / "c"))
  assert f"{p}:8:" in str(e.value) and "'9'" in str(e.value)
  ds = load_data(_ml_cfg(ml_dir, tmp_path / "c2", on_bad_rows="skip"))
  assert ds.feature_map.skipped_rows == {str(p): 1}


def test_movielens_100k_real_acceptance_split(tmp_path):
  d = shared_data_dir() / "movielens_100k"
  if not (d / "u1.base").is_file():
    pytest.skip(f"MovieLens 100K not found in {d}")
  ds = load_data(_ml_cfg(d, tmp_path / "c"))
  fm = ds.feature_map
  assert fm.num_rows == {"train": 52_159, "valid": 5_878, "test": 14_818}
  assert dict(zip([f.name for f in fm.fields], fm.vocab_sizes)) == {
      "user_id": 945, "item_id": 1_589, "age": 63, "gender": 4, "occupation": 23, "zip": 797, "genres": 21}
  assert fm.total_vocab == 3_442 and fm.num_columns == 11
  assert fm.positive_rate["train"] == pytest.approx(0.760, abs=5e-4)
  # 3 items have 6 genres; they are cut to 5 — every genre row has at most 5 non-PAD ids
  g = x_of(ds, "train")[:, 6:]
  assert ((g != 0).sum(1) >= 1).all() and ((g != 0).sum(1) <= 5).all()
  assert ((g[:, :-1] == 0) <= (g[:, 1:] == 0)).all()  # post-padding: no id after a PAD


def test_movielens_100k_genre_flags_follow_genre_ids_not_file_order(tmp_path):
  """The i-th genre flag of u.item is genre id i, whatever the line order of u.genre."""
  from kdef_jax.data.formats.movielens import load_metadata

  (tmp_path / "u.genre").write_text("Drama|2\nAction|0\nComedy|1\n")
  (tmp_path / "u.user").write_text("1|24|M|technician|85711\n")
  (tmp_path / "u.item").write_text("7|Film (1990)|01-Jan-1990||url|1|0|1\n8|Other (1991)|01-Jan-1991||url|0|1|0\n")
  users, items = load_metadata(str(tmp_path), "100k")
  assert users == {"1": ["24", "M", "technician", "85711"]}
  assert items == {"7": ["Film (1990)", "Action^Drama"], "8": ["Other (1991)", "Comedy"]}

