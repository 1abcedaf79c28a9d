"""Scoring new files with a trained run: a file encoded with the run's vocabulary gets exactly the ids
the run's own cache gave it (every engine, every token kind), unseen values become OOV, and
``kdef_jax.score_run`` reproduces the run's test metrics on its own test file."""
import json
import math
import re
import shutil
import types

import ml_collections
import numpy as np
import pytest

from data_helpers import ENGINES, load_data, raw_cfg, vocab_of, write_file, x_of, y_of
from kdef_jax import score_run
from kdef_jax.config import base_config
from kdef_jax.data.dataset import load_dataset
from kdef_jax.data.feature_map import FeatureMap, FieldSpec

TRAIN = ("label,I1,C1,tags\n" + "1,3,a,x|y\n0,25,b,y\n1,,a,\n0,1000,c,x|z|y\n1,3,b,z\n0,-1,a,y|y\n" * 3)
NEW = "label,I1,C1,tags\n1,3,b,y|x\n0,7,new,q|x\n1,,c,\n0,1000,a,z\n"


def _cfg(d, cache, engine, **files):
  return raw_cfg(d, cache, format="delimited", header=True, delimiter=",", files=files, engine=engine,
                 fields=("I1", "C1", "tags"), numeric_fields=("I1",), min_count=2,
                 field_options={"tags": {"kind": "sequence", "max_len": 2, "splitter": "|"}})


@pytest.fixture(autouse=True)
def _cache_env(no_home_cache):
  yield


@pytest.mark.parametrize("engine", ENGINES)
def test_a_file_encoded_with_a_run_vocabulary_gets_the_ids_of_training(tmp_path, engine):
  d = tmp_path / "raw"
  write_file(d / "train.csv", TRAIN)
  write_file(d / "new.csv", NEW)
  trained = load_data(_cfg(d, tmp_path / "c1", engine, train="train.csv", test="new.csv"))
  vocab = vocab_of(trained)
  assert vocab["C1"] == ["a", "b", "c"] and vocab["tags"] == ["x", "y", "z"]
  pinned = load_dataset(_cfg(d, tmp_path / "c2", engine, test="new.csv"), log=lambda *a: None, vocab=vocab)
  assert pinned.feature_map.vocab_sizes == trained.feature_map.vocab_sizes
  assert pinned.feature_map.num_rows == {"test": 4}
  np.testing.assert_array_equal(x_of(pinned, "test"), x_of(trained, "test"))
  np.testing.assert_array_equal(y_of(pinned, "test"), [1, 0, 1, 0])
  # by hand: I1's buckets in training are ⌊ln² 3⌋ = 1, ⌊ln² 25⌋ = 10, ⌊ln² 1000⌋ = 47 and -1 (the empty
  # value is missing, no token), sorted numerically → ids 1..4, OOV 5; 7 → ⌊ln² 7⌋ = 3, unseen → OOV, and
  # missing → OOV. C1 a, b, c → 1..3, "new" → OOV 4; tags x, y, z → 1..3, "q" → OOV 4 in place, "" → PAD
  assert vocab["I1"] == ["-1", "1", "10", "47"]
  np.testing.assert_array_equal(x_of(pinned, "test"), [[2, 2, 2, 1], [5, 4, 4, 1], [5, 3, 0, 0], [4, 1, 3, 0]])


def test_vocabulary_fields_must_match_the_config(tmp_path):
  d = tmp_path / "raw"
  write_file(d / "new.csv", NEW)
  with pytest.raises(ValueError, match=r"vocabulary's fields \['C1', 'I1'\]"):
    load_dataset(_cfg(d, tmp_path / "c", "python", test="new.csv"), vocab={"I1": [], "C1": []})


def _train(tmp, data, students: int, hidden: tuple, epochs: int, variant: str = "kdef", lr: float = 1e-3) -> dict:
  """train_and_evaluate on ``data`` (a config.data) with a small MLP ensemble into tmp/run."""
  from kdef_jax.config import base_config
  from kdef_jax.train import train_and_evaluate

  cfg = base_config()
  cfg.data = data
  cfg.model.hidden_units, cfg.model.num_students = hidden, students
  cfg.loss.variant, cfg.optim.learning_rate = variant, lr
  cfg.train.batch_size, cfg.train.num_epochs, cfg.train.progress, cfg.train.plot = 256, epochs, False, False
  return train_and_evaluate(cfg, tmp / "run", log=lambda *a: None)


def _write_splits(d, rng, sizes, row):
  """One file per split of ``sizes`` {name: rows}, each row ``row(rng, n)`` → list of lines."""
  for name, n in sizes.items():
    write_file(d / name, "".join(f"{line}\n" for line in row(rng, n)))


@pytest.fixture(scope="module")
def frappe_like_run(tmp_path_factory):
  """A 2-epoch KDEF run (K=3) on a small libFM dataset (split "files"): (workdir, results, raw folder)."""
  tmp = tmp_path_factory.mktemp("score")

  def rows(rng, n):
    a, b, c = rng.integers(0, 40, n), rng.integers(40, 60, n), rng.integers(60, 65, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(a % 7 - 3 + (c - 62))))).astype(int) * 2 - 1
    return [f"{l} {i}:1 {j}:1 {k}:1" for l, i, j, k in zip(y, a, b, c)]

  _write_splits(tmp / "raw", np.random.default_rng(0), {"train.libfm": 1500, "valid.libfm": 300, "test.libfm": 400}, rows)
  data = raw_cfg(tmp / "raw", tmp / "cache", format="libfm", fields=("f1", "f2", "f3"), split="files",
                 files={"train": "train.libfm", "valid": "valid.libfm", "test": "test.libfm"})
  return tmp / "run", _train(tmp, data, 3, (16, 16), 2), tmp / "raw"


def test_score_run_reproduces_the_runs_test_metrics(frappe_like_run, tmp_path, capsys):
  workdir, results, raw = frappe_like_run
  assert (workdir / "vocab.json").is_file()
  out = tmp_path / "scores.csv"
  assert score_run.main(["--workdir", str(workdir), "--input", str(raw / "test.libfm"), "--out", str(out)]) == 0
  info = json.loads((tmp_path / "scores.csv.json").read_text())
  rows = {r["model"]: r for r in results["rows"]}
  assert info["rows_scored"] == 400 and info["what"] == "ensemble"
  assert info["metrics"]["ensemble"]["auc"] == pytest.approx(rows["ensemble"]["test_auc"], abs=1e-9)
  for name in ("mlp_0", "mlp_1", "mlp_2"):
    assert info["metrics"][name]["logloss"] == pytest.approx(rows[name]["test_logloss"], abs=1e-9)
  lines = out.read_text().splitlines()
  assert lines[0] == "row,line,label,probability_ensemble" and len(lines) == 401
  labels = [int(l.split()[0]) for l in (raw / "test.libfm").read_text().splitlines()]
  assert [int(l.split(",")[2]) for l in lines[1:]] == [int(v > 0) for v in labels]  # file order kept
  assert [l.split(",")[:2] for l in lines[1:]] == [[str(i), str(i + 1)] for i in range(400)]
  assert info["oov_share"] == {"f1": 0.0, "f2": 0.0, "f3": 0.0}
  assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("variant", ["mean_prob", "concat"])
def test_score_run_scores_a_baseline_runs_own_ensemble(frappe_like_run, tmp_path, variant):
  """A run trained as the mean_prob / concat baseline is scored with mean_k σ(z_k) / σ(its head's
  logit), the ensemble it reported; its students as σ(z_k)."""
  _, _, raw = frappe_like_run
  data = raw_cfg(raw, tmp_path / "cache", format="libfm", fields=("f1", "f2", "f3"), split="files",
                 files={"train": "train.libfm", "valid": "valid.libfm", "test": "test.libfm"})
  results = _train(tmp_path, data, 3, (16,), 1, variant=variant, lr=0.03)
  assert results["fusion"] == variant
  out = tmp_path / "scores.csv"
  info = score_run.score_run(tmp_path / "run", raw / "test.libfm", out=out, log=lambda *a: None)
  ens = results["rows"][0]
  assert info["metrics"]["ensemble"]["logloss"] == pytest.approx(ens["test_logloss"], abs=1e-9)
  assert info["metrics"]["ensemble"]["auc"] == pytest.approx(ens["test_auc"], abs=1e-9)
  for row in results["rows"][1:]:
    assert info["metrics"][row["model"]]["logloss"] == pytest.approx(row["test_logloss"], abs=1e-9)
  y, p = np.loadtxt(out, delimiter=",", skiprows=1, usecols=(2, 3), unpack=True)
  assert -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)) == pytest.approx(ens["test_logloss"], abs=1e-6)


def test_score_run_writes_the_probabilities_of_the_student_asked_for(frappe_like_run, tmp_path):
  """--what k writes σ(z_k): the CSV's logloss is student k's (a mutant writing student 0's passed before)."""
  workdir, results, raw = frappe_like_run
  for k in (1, 2):
    out = tmp_path / f"s{k}.csv"
    info = score_run.score_run(workdir, raw / "test.libfm", what=str(k), out=out, log=lambda *a: None)
    assert info["what"] == f"student{k}"
    y, p = np.loadtxt(out, delimiter=",", skiprows=1, usecols=(2, 3), unpack=True)
    assert -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)) == pytest.approx(results["rows"][1 + k]["test_logloss"], abs=1e-6)


def test_score_run_best_student_and_unseen_values(frappe_like_run, tmp_path):
  workdir, results, _ = frappe_like_run
  new = write_file(tmp_path / "new.libfm", "1 3:1 45:1 61:1\n-1 999:1 45:1 61:1\n1 3:1 998:1 61:1\n")
  info = score_run.score_run(workdir, new, what="best", out=tmp_path / "s.csv", log=lambda *a: None)
  assert info["what"] == f"student{results['best_student_index']}"
  assert info["oov_share"] == pytest.approx({"f1": 1 / 3, "f2": 1 / 3, "f3": 0.0})
  assert len((tmp_path / "s.csv").read_text().splitlines()) == 4


def test_a_one_class_file_without_the_training_data_writes_strict_json(frappe_like_run, tmp_path, monkeypatch):
  """Only --input is read (no KDEF_DATA_DIR, the run's raw folder gone); an AUC that does not exist is null."""
  workdir, _, raw = frappe_like_run
  new = write_file(tmp_path / "one_class.libfm", "1 3:1 45:1 61:1\n1 5:1 41:1 62:1\n")
  config = json.loads((workdir / "config.json").read_text())
  monkeypatch.setenv("KDEF_DATA_DIR", str(tmp_path / "nowhere"))
  hidden = raw.with_name("raw_hidden")
  raw.rename(hidden)
  try:
    assert config["data"]["data_dir"] == str(raw)
    info = score_run.score_run(workdir, new, out=tmp_path / "s.csv", log=lambda *a: None)
  finally:
    hidden.rename(raw)
  text = (tmp_path / "s.csv.json").read_text()
  assert "NaN" not in text
  on_disk = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
  assert on_disk["metrics"]["ensemble"]["auc"] is None and on_disk["rows_scored"] == 2
  assert on_disk["metrics"]["ensemble"]["logloss"] > 0 and math.isnan(info["metrics"]["ensemble"]["auc"])


def test_the_line_column_joins_scores_back_to_a_file_with_skipped_rows(frappe_like_run, tmp_path):
  """With on_bad_rows='skip', rows are left out: ``row`` runs on, ``line`` names each row's own line."""
  workdir, _, raw = frappe_like_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  config = json.loads((run / "config.json").read_text())
  config["data"]["on_bad_rows"] = "skip"
  (run / "config.json").write_text(json.dumps(config))
  good = (raw / "test.libfm").read_text().splitlines()[:6]
  bad = {2: "1 3:1 junk 61:1", 5: "", 6: "-1 3:1"}  # not index:value, empty, a field short
  text = []
  for line in range(1, 10):
    text.append(bad[line] if line in bad else good.pop(0))
  mixed = write_file(tmp_path / "mixed.libfm", "\n".join(text) + "\n")
  info = score_run.score_run(run, mixed, out=tmp_path / "m.csv", log=lambda *a: None)
  clean = score_run.score_run(run, raw / "test.libfm", out=tmp_path / "c.csv", log=lambda *a: None)
  assert info["rows_scored"] == 6 and info["skipped_rows"] == {str(mixed.resolve()): 3}
  got = [l.split(",") for l in (tmp_path / "m.csv").read_text().splitlines()[1:]]
  assert [r[:2] for r in got] == [["0", "1"], ["1", "3"], ["2", "4"], ["3", "7"], ["4", "8"], ["5", "9"]]
  want = [l.split(",") for l in (tmp_path / "c.csv").read_text().splitlines()[1:7]]
  assert [r[2:] for r in got] == [r[2:] for r in want]  # each line scored as in the clean file
  assert clean["rows_scored"] == 400


@pytest.mark.parametrize("flag,value,message", [
    ("--input", "missing.libfm", "no such file"),
    ("--what", "7", "students 0..2"),
    ("--checkpoint", "newest", "--checkpoint 'newest': use 'best' or 'latest'"),
    ("--batch-size", "-1", "--batch-size -1: must be >= 1"),
    ("--out", "", "is a directory; give a file name"),
])
def test_score_run_errors_name_the_problem(frappe_like_run, tmp_path, capsys, flag, value, message):
  workdir, _, raw = frappe_like_run
  flags = {"--workdir": str(workdir), "--input": str(raw / "test.libfm"), "--out": str(tmp_path / "o.csv")}
  flags[flag] = str(tmp_path / value) if flag in ("--input", "--out") else value
  assert score_run.main([s for kv in flags.items() for s in kv]) == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "o.csv").exists() and not list(tmp_path.parent.glob(f"{tmp_path.name}*.tmp"))


def test_score_run_never_writes_over_its_input(frappe_like_run, tmp_path):
  workdir, _, raw = frappe_like_run
  src = write_file(tmp_path / "rows.libfm", (raw / "test.libfm").read_text())
  before = src.read_bytes()
  with pytest.raises(ValueError, match="would overwrite .*rows.libfm, an input or a file of the run"):
    score_run.score_run(workdir, src, out=tmp_path / "." / "rows.libfm", log=lambda *a: None)
  side = write_file(tmp_path / "rows.csv.json", (raw / "test.libfm").read_text())  # <out>.json is written too
  with pytest.raises(ValueError, match="would overwrite .*rows.csv.json"):
    score_run.score_run(workdir, side, out=tmp_path / "rows.csv", log=lambda *a: None)
  assert src.read_bytes() == before and side.read_text() == (raw / "test.libfm").read_text()


@pytest.mark.parametrize("name", ["results.json", "config.json", "checkpoints/best/x.csv"])
def test_score_run_never_writes_over_the_runs_files(frappe_like_run, name):
  workdir, _, raw = frappe_like_run
  before = (workdir / "results.json").read_bytes()
  with pytest.raises(ValueError, match="(would overwrite|is inside the run's checkpoints)"):
    score_run.score_run(workdir, raw / "test.libfm", out=workdir / name, log=lambda *a: None)
  assert (workdir / "results.json").read_bytes() == before and not (workdir / "checkpoints" / "best" / "x.csv").exists()


def test_an_existing_tmp_file_of_the_user_is_left_alone(frappe_like_run, tmp_path):
  workdir, _, raw = frappe_like_run
  mine = write_file(tmp_path / "s.csv.tmp", "precious\n")
  score_run.score_run(workdir, raw / "test.libfm", out=tmp_path / "s.csv", log=lambda *a: None)
  assert mine.read_text() == "precious\n" and (tmp_path / "s.csv").exists()
  assert sorted(f.name for f in tmp_path.iterdir()) == ["s.csv", "s.csv.json", "s.csv.tmp"]


@pytest.mark.parametrize("name,text,message", [
    ("vocab.json", '{"trunc', "not valid JSON"), ("config.json", '{"trunc', "not valid JSON"),
    ("results.json", '{"trunc', "not valid JSON"), ("config.json", "{}", "not a kdef_jax run config"),
    ("config.json", "[]", "not a kdef_jax run config"),
])
def test_a_damaged_run_file_is_named(frappe_like_run, tmp_path, capsys, name, text, message):
  workdir, _, raw = frappe_like_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  (run / name).write_text(text)
  assert score_run.main(["--workdir", str(run), "--input", str(raw / "test.libfm"), "--out", str(tmp_path / "o.csv")]) == 2
  err = capsys.readouterr().err
  assert f"{run / name}: {message}" in err and "Traceback" not in err
  assert not (tmp_path / "o.csv").exists()


def test_a_vocab_json_changed_after_the_run_is_refused(frappe_like_run, tmp_path, capsys):
  """Two tokens swapped (valid JSON): the ids meant other values and scoring went on silently (corruption
  fuzzing). The feature map records the vocabulary's sha256 since then."""
  workdir, _, raw = frappe_like_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  vocab = json.loads((run / "vocab.json").read_text())
  vocab["f1"][0], vocab["f1"][1] = vocab["f1"][1], vocab["f1"][0]
  (run / "vocab.json").write_text(json.dumps(vocab))
  assert score_run.main(["--workdir", str(run), "--input", str(raw / "test.libfm"), "--out", str(tmp_path / "o.csv")]) == 2
  err = capsys.readouterr().err
  assert f"{run / 'vocab.json'}: not the vocabulary its feature_map.json was built with" in err and "Traceback" not in err
  assert not (tmp_path / "o.csv").exists()


def test_check_vocab_file_returns_the_runs_own_vocab_and_refuses_a_changed_one(frappe_like_run, tmp_path):
  """What training copies from the data cache into the workdir is checked the same way."""
  from kdef_jax.data.packed import check_vocab_file

  workdir, _, _ = frappe_like_run
  fmap = FeatureMap.load(workdir / "feature_map.json")
  assert len(fmap.info["vocab_sha256"]) == 64
  assert check_vocab_file(workdir / "vocab.json", fmap) == (workdir / "vocab.json").read_bytes()
  (tmp_path / "vocab.json").write_bytes((workdir / "vocab.json").read_bytes().replace(b'"', b"'", 1))
  with pytest.raises(ValueError, match="not the vocabulary its feature_map.json was built with"):
    check_vocab_file(tmp_path / "vocab.json", fmap)


def test_missing_best_checkpoint_points_at_latest(frappe_like_run, tmp_path, capsys):
  workdir, _, raw = frappe_like_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  shutil.rmtree(run / "checkpoints" / "best")
  assert score_run.main(["--workdir", str(run), "--input", str(raw / "test.libfm"), "--out", str(tmp_path / "o.csv")]) == 2
  err = capsys.readouterr().err
  assert f"no best checkpoint under {run / 'checkpoints' / 'best'}; checkpoints/latest holds epoch" in err
  assert not (run / "checkpoints" / "best").exists()  # reading the run created nothing in it


def test_score_run_refuses_a_synthetic_run(tmp_path, capsys):
  from kdef_jax.config import base_config

  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(base_config().to_json())
  assert score_run.main(["--workdir", str(run), "--input", str(tmp_path / "x.csv")]) == 2
  err = capsys.readouterr().err
  assert f"{run / 'config.json'}: data.format='synthetic', but score_run reads libfm, delimited, movielens files" in err


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
  """A 1-epoch run (K=2) on a small CSV with a header (label, I1 numeric, C1, tags): (workdir, raw folder)."""
  tmp = tmp_path_factory.mktemp("score_csv")

  def rows(rng, n):
    i1, c1 = rng.integers(0, 200, n), rng.integers(0, 30, n)
    y = (rng.random(n) < 0.2 + 0.5 * (c1 % 3 == 0)).astype(int)
    return ["label,I1,C1,tags"] + [f"{l},{a},c{b},t{b % 4}|t{a % 5}" for l, a, b in zip(y, i1, c1)]

  _write_splits(tmp / "raw", np.random.default_rng(1), {"train.csv": 1200, "valid.csv": 300, "test.csv": 300}, rows)
  data = _cfg(tmp / "raw", tmp / "cache", "python", train="train.csv", valid="valid.csv", test="test.csv")
  data.split = "files"
  _train(tmp, data, 2, (8,), 1)
  return tmp / "run", tmp / "raw"


def test_unlabeled_file_gets_the_probabilities_of_the_labeled_one(csv_run, tmp_path):
  workdir, raw = csv_run
  quiet = lambda *a: None  # noqa: E731
  labeled = score_run.score_run(workdir, raw / "test.csv", out=tmp_path / "a.csv", log=quiet)
  lines = (raw / "test.csv").read_text().splitlines()
  bare = write_file(tmp_path / "bare.csv", "\n".join(l.split(",", 1)[1] for l in lines) + "\n")
  info = score_run.score_run(workdir, bare, out=tmp_path / "b.csv", unlabeled=True, log=quiet)
  a = (tmp_path / "a.csv").read_text().splitlines()
  b = (tmp_path / "b.csv").read_text().splitlines()
  assert b[0] == "row,line,probability_ensemble" and len(b) == len(a) == 301
  assert [l.split(",")[:2] for l in b[1:]] == [l.split(",")[:2] for l in a[1:]] == [
      [str(i), str(i + 2)] for i in range(300)]  # line 1 is the header
  assert [l.split(",")[-1] for l in b[1:]] == [l.split(",")[-1] for l in a[1:]]
  assert "metrics" not in info and info["rows_scored"] == 300
  assert info["oov_share"] == labeled["oov_share"]
  with pytest.raises(ValueError, match=r"test.csv:1: the header has the label column 'label'; drop --unlabeled"):
    score_run.score_run(workdir, raw / "test.csv", out=tmp_path / "c.csv", unlabeled=True, log=quiet)


def test_a_gzipped_file_scores_as_the_plain_one_labeled_or_not(csv_run, tmp_path):
  import gzip

  workdir, raw = csv_run
  quiet = lambda *a: None  # noqa: E731
  text = (raw / "test.csv").read_bytes()
  bare = b"\n".join(l.split(b",", 1)[1] for l in text.splitlines()) + b"\n"
  score_run.score_run(workdir, raw / "test.csv", out=tmp_path / "plain.csv", log=quiet)
  score_run.score_run(workdir, write_file(tmp_path / "t.csv.gz", gzip.compress(text)), out=tmp_path / "gz.csv", log=quiet)
  score_run.score_run(workdir, write_file(tmp_path / "b.csv.gz", gzip.compress(bare)), out=tmp_path / "bare.csv",
                      unlabeled=True, log=quiet)
  plain = (tmp_path / "plain.csv").read_text()
  assert (tmp_path / "gz.csv").read_text() == plain and len(plain.splitlines()) == 301
  assert [l.rsplit(",", 1)[1] for l in (tmp_path / "bare.csv").read_text().splitlines()] == [
      l.rsplit(",", 1)[1] for l in plain.splitlines()]


def test_unlabeled_errors_name_the_users_file(csv_run, tmp_path):
  workdir, _ = csv_run
  bad = write_file(tmp_path / "bad.csv", "I1,C1,tags\n3,c1,t1\n4,c2\n")
  with pytest.raises(ValueError) as e:
    score_run.score_run(workdir, bad, out=tmp_path / "o.csv", unlabeled=True, log=lambda *a: None)
  assert f"{bad}:3: expected 3 columns, found 2" in str(e.value) and "kdef_score_" not in str(e.value)  # the user's count


def test_messages_about_the_zero_label_copy_name_the_users_file_and_its_columns(tmp_path):
  user = score_run.UserFile("/tmp/kdef_score_x/in.txt", tmp_path / "in.txt", copy=True)
  msg = user.text("/tmp/kdef_score_x/in.txt:11: expected 40 columns, found 31")
  assert msg == f"{tmp_path / 'in.txt'}:11: expected 39 columns, found 30"
  assert user.text("/tmp/kdef_score_x/in.txt") == str(tmp_path / "in.txt")  # e.g. the skipped_rows key
  cache = "preprocessing into /tmp/kdef_score_x/in.txt-1a2b"  # another path that starts with the copy's
  assert user.text(cache) == cache
  read = score_run.UserFile(str(tmp_path / "in.txt"), tmp_path / "in.txt", copy=False)
  assert read.text("x:2: expected 40 columns, found 31") == "x:2: expected 40 columns, found 31"


def test_zero_labels_copy_of_a_headerless_file(tmp_path):
  import ml_collections

  data = ml_collections.ConfigDict({"label_column": "label", "delimiter": "\t", "encoding": "utf-8",
                                    "header": False, "column_names": ("label", "I1", "C1"), "label_rule": "map:1=1,-1=0"})
  src = write_file(tmp_path / "in" / "test.txt", "3\ta\n\n\tb\r\n")
  copy = score_run.with_zero_labels(src, data, tmp_path)
  assert copy.read_bytes() == b"3\ta\t0\n\n\tb\t0\n"
  assert data.column_names == ("I1", "C1", "label") and data.label_rule == "binary"
  data.column_names, data.format = ("label", "I1", "C1"), "delimited"
  with pytest.raises(ValueError, match=r"test.txt:1: 2 columns, one fewer than the run's data with its label "
                                       r"column 'label'; pass --unlabeled"):
    score_run.check_label_column(src, data)  # read without --unlabeled
  labeled = write_file(tmp_path / "in" / "labeled.txt", "1\t3\ta\n")
  score_run.check_label_column(labeled, data)  # 3 columns: fine
  with pytest.raises(ValueError, match=r"labeled.txt:1: 3 columns, as many as the run's data with its label column "
                                       r"'label'; drop --unlabeled \(it expects the 2 columns without it\)"):
    score_run.with_zero_labels(labeled, data, tmp_path)


def test_unlabeled_is_for_delimited_runs(frappe_like_run, tmp_path):
  workdir, _, raw = frappe_like_run
  with pytest.raises(ValueError, match="--unlabeled reads delimited files; the run's data.format is 'libfm'"):
    score_run.score_run(workdir, raw / "test.libfm", unlabeled=True, log=lambda *a: None)



def test_oov_shares_per_field_and_over_the_non_pad_slots_of_a_sequence():
  fmap = FeatureMap("t", (FieldSpec("a", "categorical", 4),            # OOV id 3
                          FieldSpec("s", "sequence", 5, max_len=3),    # OOV id 4, columns 1..3
                          FieldSpec("c", "categorical", 3)))           # OOV id 2, column 4
  x = np.array([[3, 1, 4, 0, 2],
                [3, 4, 0, 0, 1],
                [1, 0, 0, 0, 1]], np.int32)
  # a: 3, 3, 1 -> 2/3; s: non-PAD ids 1, 4, 4 -> 2/3 (not 2/9 over all nine slots); c: 2, 1, 1 -> 1/3
  assert score_run.oov_shares(x, fmap) == pytest.approx({"a": 2 / 3, "s": 2 / 3, "c": 1 / 3})


# Cases mutation testing of score_run.py found unpinned (2026-12-07).


# A "run" without training: config.json and vocab.json written from a small CSV's own dataset, and
# load_run / the predict step replaced by fixed logits [2, N] (student 0: s/10 - 1, student 1: 1 - s/10,
# s the row's id sum), so the whole of score_run but the model runs in well under a second.


TRAIN_CSV = "label,I1,C1,tags\n" + "1,3,a,x|y\n0,25,b,y\n1,,a,\n0,1000,c,x|z|y\n1,3,b,z\n0,-1,a,y|y\n" * 3


def _csv_data(raw, cache, **kw):
    from data_helpers import raw_cfg

    kw.setdefault("files", {"train": "train.csv"})
    return raw_cfg(raw, cache, format="delimited", header=True, delimiter=",", engine="python", fields=("I1", "C1", "tags"),
                   numeric_fields=("I1",), min_count=2, label_rule="threshold:1:0",
                   field_options={"tags": {"kind": "sequence", "max_len": 2, "splitter": "|"}}, **kw)


def _fake_logits(split):
    s = np.asarray(split.x, np.float64).sum(1)
    return np.stack([s / 10 - 1, 1 - s / 10]).astype(np.float32)


@pytest.fixture
def fake_run(tmp_path, monkeypatch, no_home_cache):
    """(workdir, fmap, batch sizes the predict step was called with) of a K=2 'run' on TRAIN_CSV."""
    from data_helpers import load_data, vocab_of, write_file
    from kdef_jax import score_run
    from kdef_jax.models.ensemble import StudentGroup

    raw = tmp_path / "raw"
    write_file(raw / "train.csv", TRAIN_CSV)
    data = _csv_data(raw, tmp_path / "train_cache")
    ds = load_data(data)
    fmap, wd = ds.feature_map, tmp_path / "run"
    wd.mkdir()
    c = base_config()
    c.data = data
    c.model.num_students, c.train.batch_size, c.train.eval_batch_size = 2, 64, 2
    (wd / "config.json").write_text(c.to_json())
    (wd / "vocab.json").write_text(json.dumps(vocab_of(ds)))
    model = types.SimpleNamespace(num_students=2, groups=(StudentGroup("mlp", 2, ()),))
    sizes = []
    monkeypatch.setattr(score_run, "load_run", lambda workdir, checkpoint, warn=None: (
        model, {"params": {}, "batch_stats": {}}, fmap, {"best_student_index": 1}))
    monkeypatch.setattr(score_run, "make_predict_step", lambda model: None)
    monkeypatch.setattr(score_run, "predict_logits", lambda step, state, split, bs, **kw: sizes.append(bs) or _fake_logits(split))
    return wd, fmap, sizes


def test_score_json_records_every_count_and_summary(fake_run, tmp_path):
    """The JSON keeps checkpoint, rows dropped by the label rule, mean probability and positive rate
    (mutants dropping each key survived); the predict step runs at the run's eval batch size."""
    from data_helpers import write_file
    from kdef_jax import score_run

    wd, _, sizes = fake_run
    new = write_file(tmp_path / "in" / "new.csv", "label,I1,C1,tags\n1,3,b,y|x\n0.5,3,a,x\n0,7,new,q|x\n1,,c,\n")
    logged = []
    info = score_run.score_run(wd, new, what="1", out=tmp_path / "s.csv", log=logged.append)
    assert sizes == [2]  # eval_batch_size first, then batch_size
    on_disk = json.loads((tmp_path / "s.csv.json").read_text())
    assert on_disk == json.loads(json.dumps(info))
    assert info["checkpoint"] == "best" and info["what"] == "student1" and info["rows_scored"] == 3
    assert info["dropped_by_label_rule"] == {str(new.resolve()): 1}  # 0.5 is between threshold:1:0's classes
    assert info["positive_rate"] == pytest.approx(2 / 3)
    probs = [float(l.split(",")[3]) for l in (tmp_path / "s.csv").read_text().splitlines()[1:]]
    assert info["mean_probability"] == pytest.approx(np.mean(probs), abs=1e-7)
    assert [l.split(",")[:3] for l in (tmp_path / "s.csv").read_text().splitlines()[1:]] == [
        ["0", "2", "1"], ["1", "4", "0"], ["2", "5", "1"]]
    # the table logged: columns model, auc, logloss, each number under its own header
    table = logged[-1].splitlines()
    assert table[0].split() == ["model", "auc", "logloss"]
    for line in table[1:]:
        name, auc, ll = line.split()
        m = info["metrics"][name]
        assert (float(auc), float(ll)) == (pytest.approx(m["auc"], abs=1e-6), pytest.approx(m["logloss"], abs=1e-6))
    score_run.score_run(wd, new, what="1", out=tmp_path / "s.csv", batch_size=10**9, log=logged.append)
    assert sizes[-1] == 3  # never a batch beyond the file's rows (10**9 padded rows would not fit in memory)


def test_unlabeled_errors_keep_their_type_and_skipped_rows_name_the_users_file(fake_run, tmp_path):
    """--unlabeled: a bad row is still a DataFormatError (a mutant made it a plain ValueError), and
    skipped_rows is keyed by the user's file, never the zero-label copy in a temporary folder."""
    from data_helpers import write_file
    from kdef_jax import score_run
    from kdef_jax.data.schema import DataFormatError

    wd, _, _ = fake_run
    bad = write_file(tmp_path / "bad.csv", "I1,C1,tags\n3,b,y\n4,c\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{bad}:3: expected 3 columns, found 2")):
        score_run.score_run(wd, bad, out=tmp_path / "o.csv", unlabeled=True, log=lambda *a: None)
    config = json.loads((wd / "config.json").read_text())
    config["data"]["on_bad_rows"] = "skip"
    (wd / "config.json").write_text(json.dumps(config))
    info = score_run.score_run(wd, bad, out=tmp_path / "o.csv", unlabeled=True, log=lambda *a: None)
    assert info["skipped_rows"] == {str(bad.resolve()): 1} and info["rows_scored"] == 1


def test_a_vocabulary_that_gives_other_table_sizes_is_refused(fake_run, tmp_path, monkeypatch):
    import dataclasses

    from kdef_jax import score_run

    wd, fmap, _ = fake_run
    other = dataclasses.replace(fmap, fields=tuple(dataclasses.replace(f, vocab_size=f.vocab_size + 1) for f in fmap.fields))
    monkeypatch.setattr(score_run, "load_run", lambda workdir, checkpoint, warn=None: (
        types.SimpleNamespace(num_students=2, groups=()), {}, other, {}))
    with pytest.raises(ValueError, match=r"train.csv: encoded with \(\d+, \d+, \d+\), the run has"):
        score_run.score_run(wd, wd.parent / "raw" / "train.csv", out=tmp_path / "o.csv", log=lambda *a: None)


def test_score_main_lists_only_the_fields_with_oov_ids(fake_run, tmp_path, capsys):
    from data_helpers import write_file
    from kdef_jax import score_run

    wd, _, _ = fake_run
    new = write_file(tmp_path / "new.csv", "label,I1,C1,tags\n1,3,b,y\n0,3,zzz,x\n")
    assert score_run.main(["--workdir", str(wd), "--input", str(new), "--out", str(tmp_path / "o.csv")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == (f"wrote {tmp_path / 'o.csv'}: 2 rows, probability of the ensemble; "
                                    "OOV ids (values unseen in training or missing): C1 50.00%")


def test_scoring_reads_the_input_alone_as_the_test_split(tmp_path):
    """A run trained with split='random' on one file: the scored file is read whole as 'test', with no
    train/valid file of the run (mutants kept the run's split or its train file)."""
    from data_helpers import write_file
    from kdef_jax import score_run

    c = base_config()
    c.data = _csv_data(tmp_path / "raw", tmp_path / "c", files={"train": "all.csv", "valid": "v.csv"})
    c.data.split = "random"
    new = write_file(tmp_path / "in" / "new.csv", "label,I1,C1,tags\n1,3,b,y\n")
    data = score_run.scoring_data_config(c, new)
    assert data.split == "files" and (data.files.train, data.files.valid, data.files.test) == ("", "", str(new.resolve()))
    assert data.data_dir == str(new.resolve().parent) and c.data.split == "random"  # the run's config is not changed


def test_run_vocab_falls_back_to_the_dataset_cache_of_the_runs_config(tmp_path, no_home_cache):
    from kdef_jax import score_run

    c = base_config()
    c.data.cache_dir = str(tmp_path / "cache")
    fmap = types.SimpleNamespace(dataset_id="fx", info={"cache_key": "k1"})
    (tmp_path / "cache" / "fx-k1").mkdir(parents=True)
    (tmp_path / "cache" / "fx-k1" / "vocab.json").write_text('{"C1": ["a"]}')
    (tmp_path / "run").mkdir()
    assert score_run.run_vocab(tmp_path / "run", c, fmap) == {"C1": ["a"]}
    c.data.cache_dir = ""  # then $KDEF_CACHE_DIR (no_home_cache): nothing there
    with pytest.raises(FileNotFoundError, match="no vocab.json"):
        score_run.run_vocab(tmp_path / "run", c, fmap)


def test_oov_share_of_a_sequence_field_that_is_all_padding_is_zero():
    from kdef_jax import score_run
    from kdef_jax.data.feature_map import FeatureMap, FieldSpec

    fmap = FeatureMap("t", (FieldSpec("a", "categorical", 4), FieldSpec("s", "sequence", 5, max_len=2)))
    x = np.array([[3, 0, 0], [1, 0, 0]], np.int32)
    with np.errstate(all="raise"):
        assert score_run.oov_shares(x, fmap) == {"a": 0.5, "s": 0.0}


def test_label_column_check_names_only_a_file_exactly_one_column_short(tmp_path):
    """Two columns short is not 'the label column is missing' (a mutant said so for any shorter file)."""
    from data_helpers import write_file
    from kdef_jax import score_run

    data = ml_collections.ConfigDict({"format": "delimited", "header": False, "column_names": ("label", "I1", "C1"),
                                      "delimiter": "\t", "encoding": "utf-8", "label_column": "label"})
    score_run.check_label_column(write_file(tmp_path / "one.txt", "a\n"), data)
    with pytest.raises(ValueError, match="pass --unlabeled"):
        score_run.check_label_column(write_file(tmp_path / "two.txt", "3\ta\n"), data)


def test_score_main_reports_a_damaged_checkpoint_in_one_line(fake_run, tmp_path, monkeypatch, capsys):
    from kdef_jax import score_run
    from kdef_jax.checkpoint import CheckpointError

    wd, _, _ = fake_run

    def damaged(workdir, checkpoint, warn=None):
        raise CheckpointError("the checkpoint run/checkpoints/best/2 is corrupt")

    monkeypatch.setattr(score_run, "load_run", damaged)
    assert score_run.main(["--workdir", str(wd), "--input", str(wd.parent / "raw" / "train.csv"),
                           "--out", str(tmp_path / "o.csv")]) == 2
    assert capsys.readouterr().err == ("kdef_jax.score_run: error: CheckpointError: the checkpoint "
                                       "run/checkpoints/best/2 is corrupt\n")


def test_scoring_leaves_nothing_in_the_runs_dataset_cache(fake_run, tmp_path):
    """The scored file's ids live in a temporary folder, not beside the run's own dataset cache."""
    from data_helpers import write_file
    from kdef_jax import score_run

    wd, _, _ = fake_run
    cache = tmp_path / "train_cache"
    before = sorted(p.name for p in cache.iterdir())
    new = write_file(tmp_path / "new.csv", "label,I1,C1,tags\n1,3,b,y\n0,3,a,x\n")
    score_run.score_run(wd, new, out=tmp_path / "o.csv", log=lambda *a: None)
    assert sorted(p.name for p in cache.iterdir()) == before


def test_a_file_with_a_header_is_not_checked_for_a_missing_label_column(tmp_path):
    """With a header the columns are found by name (load_dataset names a missing one); the
    one-column-short guess is for headerless files only."""
    from data_helpers import write_file
    from kdef_jax import score_run

    data = ml_collections.ConfigDict({"format": "delimited", "header": True, "column_names": ("label", "I1", "C1"),
                                      "delimiter": ",", "encoding": "utf-8", "label_column": "label"})
    assert score_run.check_label_column(write_file(tmp_path / "h.csv", "I1,C1\n3,a\n"), data) is None


@pytest.mark.parametrize("text,why", [("label,I1,C1,tags\n", ""),
                                      ("label,I1,C1,tags\n0.5,3,b,y\n", "; dropped by the label rule: ")])
def test_a_file_with_no_row_to_score_says_so_of_the_users_file(fake_run, tmp_path, text, why):
    """A header alone, or every row dropped by the label rule: the error names the user's file and says
    why, not the training config's data.files.test (which the scoring user never set)."""
    from data_helpers import write_file

    wd, _, _ = fake_run
    new = write_file(tmp_path / "in" / "empty.csv", text)
    with pytest.raises(ValueError) as e:
        score_run.score_run(wd, new, out=tmp_path / "o.csv", log=lambda *a: None)
    assert str(e.value).startswith(f"{new}: no rows to score{why}") and "data.files" not in str(e.value)


@pytest.mark.parametrize("cli", ["score_run", "export_run"])
def test_a_full_disk_or_a_named_file_error_is_one_line_in_score_and_export(cli, monkeypatch, capsys, tmp_path):
  import importlib
  mod = importlib.import_module(f"kdef_jax.{cli}")
  argv = ["--workdir", str(tmp_path)] + (["--input", str(tmp_path / "x.csv")] if cli == "score_run" else [])
  for error, last in [(OSError(28, "No space left on device", "o.csv"), "the disk is full: free space on it"),
                      (PermissionError(13, "Permission denied", "o.csv"), "Permission denied: 'o.csv'")]:
    monkeypatch.setattr(mod, cli, lambda *a, **k: (_ for _ in ()).throw(error))
    assert mod.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kdef_jax.{cli}: error: ") and last in err.splitlines()[-1]
  monkeypatch.setattr(mod, cli, lambda *a, **k: (_ for _ in ()).throw(OSError(5, "I/O error")))
  with pytest.raises(OSError, match="I/O error"):  # not ours to explain: the traceback stays
    mod.main(argv)


@pytest.mark.parametrize("unlabeled", [False, True])
def test_the_csv_written_in_chunks_is_the_csv_written_at_once(csv_run, tmp_path, monkeypatch, unlabeled):
  """score_run formats CSV_CHUNK rows at a time (lists of every row cost ~100 B a row): chunks of 7 rows,
  the last one short, give the same file byte for byte, row numbers continuing across chunks."""
  workdir, raw = csv_run
  quiet = lambda *a: None  # noqa: E731
  src = raw / "test.csv"
  if unlabeled:
    src = write_file(tmp_path / "bare.csv", "\n".join(l.split(",", 1)[1] for l in src.read_text().splitlines()) + "\n")
  score_run.score_run(workdir, src, out=tmp_path / "whole.csv", unlabeled=unlabeled, log=quiet)
  monkeypatch.setattr(score_run, "CSV_CHUNK", 7)  # 300 rows: 42 chunks of 7 and one of 6
  score_run.score_run(workdir, src, out=tmp_path / "chunks.csv", unlabeled=unlabeled, log=quiet)
  whole = (tmp_path / "whole.csv").read_bytes()
  assert (tmp_path / "chunks.csv").read_bytes() == whole and whole.count(b"\n") == 301
  assert whole.splitlines()[-1].startswith(b"299,301,")


@pytest.mark.parametrize("command", ["score_run", "export_run"])
def test_ctrl_c_in_score_or_export_is_one_line_and_status_130(command, monkeypatch, capsys):
  """A Ctrl-C (here: raised by the command's work) ends in one line and exit_interrupted's status 130,
  not a traceback (nor a crash in the interpreter's shutdown under a running compilation)."""
  import os

  from kdef_jax import export_run

  module = {"score_run": score_run, "export_run": export_run}[command]

  def interrupted(*a, **k):
    raise KeyboardInterrupt

  def exit_raises(code):
    raise SystemExit(code)

  monkeypatch.setattr(module, command, interrupted)
  monkeypatch.setattr(os, "_exit", exit_raises)
  with pytest.raises(SystemExit) as e:
    module.main(["--workdir", "w"] + (["--input", "f"] if command == "score_run" else []))
  assert e.value.code == 130
  assert capsys.readouterr().err == (f"\nkdef_jax.{command}: interrupted (its output files are written whole or not "
                                     f"at all): run the same command again\n")
