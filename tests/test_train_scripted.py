"""The epoch loop driven by a scripted sequence of teacher validation AUCs: plateau decay, the lr floor,
the consecutive-patience stop, the best epoch restored, the test split evaluated, the result keys, the
timing split; and a non-finite training metric stopping the run (cases from mutation testing of
train.py, 2026-12-07)."""

import json
import time

import jax.numpy as jnp
import pytest

from run_helpers import latest_checkpoint, tiny_config


# optim.min_delta 0.0625, lr_decay 0.5, min_lr 2e-4, patience 2 (values exact in binary):
#   epoch  teacher AUC  gain?                        bad  decays  lr trained with -> after
#   1      0.25         yes (from -inf)              0    0       1e-3
#   2      0.30         no  (< 0.25 + 0.0625)        1    1       1e-3 -> 5e-4
#   3      0.3125       yes (exactly + min_delta)    0    1       5e-4
#   4      0.3125       no  (equal)                  1    2       5e-4 -> 2.5e-4
#   5      0.375        yes (exactly + min_delta)    0    2       2.5e-4
#   6      0.40         no                           1    3       2.5e-4 -> 2e-4 (floor)
#   7      0.10         no: 2 in a row -> stop       2    4       2e-4 -> 2e-4
# Four non-improving epochs in all but never two in a row before epoch 7.
SCRIPT = [0.25, 0.30, 0.3125, 0.3125, 0.375, 0.40, 0.10]
FIRST_STEP_SLEEP_S = 0.3


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory):
  import kdef_jax.train as train_mod

  tmp = tmp_path_factory.mktemp("scripted")
  real_teacher = []  # the true teacher AUC of each epoch's state
  calls = {"metrics": 0, "steps": 0}
  real_metrics, real_training = train_mod.ensemble_metrics, train_mod.make_training
  real_batches, batch_sizes = train_mod.iterate_batches, []

  def spy_batches(split, batch_size, *, order=None):
    batch_sizes.append(("train" if order is not None else "eval", batch_size))
    return real_batches(split, batch_size, order=order)

  def scripted_metrics(y, logits, fusion="mean_logit"):
    out = real_metrics(y, logits, fusion)
    i = calls["metrics"]
    calls["metrics"] += 1
    if i < len(SCRIPT):  # the per-epoch validation; the final valid/test evaluations pass through
      real_teacher.append(out["teacher"]["auc"])
      out["teacher"]["auc"] = SCRIPT[i]
    return out

  def slow_first_step(*a, **kw):  # the first step of the run (the compile) takes 0.3 s longer
    state, step = real_training(*a, **kw)

    def wrapped(state, batch, rng):
      calls["steps"] += 1
      if calls["steps"] == 1:
        time.sleep(FIRST_STEP_SLEEP_S)
      return step(state, batch, rng)

    return state, wrapped

  c = tiny_config(tmp, **{"model.num_students": 2, "model.hidden_units": (8,), "train.num_epochs": 10,
                          "train.steps_per_epoch": 1, "train.eval_batch_size": 128, "data.synthetic.num_train": 600,
                          "data.synthetic.num_valid": 200, "data.synthetic.num_test": 200,
                          "optim.min_delta": 0.0625, "optim.lr_decay": 0.5, "optim.min_lr": 2e-4, "optim.patience": 2})
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(train_mod, "ensemble_metrics", scripted_metrics)
    mp.setattr(train_mod, "make_training", slow_first_step)
    mp.setattr(train_mod, "iterate_batches", spy_batches)
    res = train_mod.train_and_evaluate(c, tmp / "run", log=lambda *a: None)
  hist = [json.loads(l) for l in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
  calls["batch_sizes"] = batch_sizes
  return c, tmp / "run", res, hist, real_teacher, calls


def test_scripted_aucs_drive_the_schedule_and_the_stop(scripted_run):
  _, _, res, hist, _, calls = scripted_run
  assert [h["epoch"] for h in hist] == list(range(1, 8))
  assert [h["val"]["teacher"]["auc"] for h in hist] == SCRIPT  # the teacher's AUC is what drives it
  assert [h["improved"] for h in hist] == [True, False, True, False, True, False, False]
  assert [h["lr"] for h in hist] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2e-4], rel=1e-12)
  assert (res["epochs_run"], res["best_epoch"], res["lr_decays"]) == (7, 5, 4)
  assert res["final_lr"] == pytest.approx(2e-4, rel=1e-12)  # floored at min_lr, not 1.25e-4 or 1e-4
  assert calls["metrics"] == 7 + 2  # one validation per epoch, then the final valid and test


def test_scripted_run_saves_and_restores_the_best_epoch(scripted_run):
  from kdef_jax.steps import get_learning_rate

  _, wd, res, _, real_teacher, _ = scripted_run
  state, meta, _, steps = latest_checkpoint(wd)
  assert steps == {"latest": 7, "best": 5}
  assert (meta["bad_epochs"], meta["best_epoch"], meta["best_auc"]) == (2, 5, 0.375)
  assert get_learning_rate(state) == pytest.approx(2e-4, rel=1e-6)  # the optimizer got the floored rate
  assert len(real_teacher) == 7 and len(set(real_teacher)) > 1
  assert res["rows"][0]["val_auc"] == pytest.approx(real_teacher[4], abs=1e-12)  # epoch 5's state, not 7's


def test_the_test_rows_are_the_best_states_numbers_on_the_test_split(scripted_run):
  from kdef_jax.data.dataset import load_dataset
  from kdef_jax.export import load_run
  from kdef_jax.metrics import ensemble_metrics

  c, wd, res, _, _, _ = scripted_run
  test = load_dataset(c.data, log=lambda *a: None).splits["test"]
  model, variables, _, _ = load_run(wd)
  m = ensemble_metrics(test.y, model.apply(variables, jnp.asarray(test.x), False, None))
  assert res["rows"][0]["test_auc"] == pytest.approx(m["teacher"]["auc"], abs=1e-9)
  assert res["rows"][0]["test_logloss"] == pytest.approx(m["teacher"]["logloss"], abs=1e-7)
  for r, s in zip(res["rows"][1:], m["students"]):
    assert r["test_auc"] == pytest.approx(s["auc"], abs=1e-9)
  assert res["rows"][0]["test_auc"] != pytest.approx(res["rows"][0]["val_auc"], abs=1e-9)
  assert json.loads((wd / "results.json").read_text()) == res


def test_train_time_counts_every_step_and_the_speed_excludes_the_first(scripted_run):
  """train_time_s is the sum of the epochs' training times (the compile step included); the speed
  counts the rows and seconds after the run's first step: 6 later epochs × one 512-row step."""
  _, wd, res, hist, _, _ = scripted_run
  _, meta, _, _ = latest_checkpoint(wd)
  assert res["train_time_s"] == pytest.approx(sum(h["epoch_train_s"] for h in hist), rel=1e-9)
  assert res["train_time_s"] == pytest.approx(meta["train_time_s"], rel=1e-12)
  assert meta["timed_rows"] == 6 * 512
  assert res["train_samples_per_s"] == pytest.approx(meta["timed_rows"] / meta["timed_s"], rel=1e-9)
  assert meta["train_time_s"] - meta["timed_s"] >= FIRST_STEP_SLEEP_S  # the slow first step is not timed


def test_evaluation_uses_eval_batch_size_and_training_batch_size(scripted_run):
  *_, calls = scripted_run
  assert calls["batch_sizes"].count(("train", 512)) == 7  # one permutation per epoch
  assert calls["batch_sizes"].count(("eval", 128)) == 7 + 2  # train.eval_batch_size 128
  assert len(calls["batch_sizes"]) == 7 + 9


def test_a_non_finite_training_metric_with_finite_params_stops_the_run(tmp_path, monkeypatch):
  """The end-of-epoch check of the epoch's mean step metrics, on its own: a float32 gradient norm that
  overflows to inf (the clip then scales the update to 0, so params and validation logits stay finite)
  between log steps must stop the run before the epoch is saved."""
  import kdef_jax.train as train_mod
  from kdef_jax.checkpoint import Checkpoints

  real = train_mod.make_training

  def inf_norm(*a, **kw):
    state, step = real(*a, **kw)

    def wrapped(state, batch, rng):
      state, m = step(state, batch, rng)
      return state, {**m, "grad_norm": m["grad_norm"] * float("inf")}

    return state, wrapped

  monkeypatch.setattr(train_mod, "make_training", inf_norm)
  c = tiny_config(tmp_path, **{"model.num_students": 2, "model.hidden_units": (8,), "train.num_epochs": 1,
                               "train.steps_per_epoch": 1, "train.log_every": 100, "data.synthetic.num_train": 600,
                               "data.synthetic.num_valid": 200, "data.synthetic.num_test": 200})
  with pytest.raises(FloatingPointError, match="training grad_norm became NaN/inf in epoch 1 by step 1 .*No epoch finished"):
    train_mod.train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
  ck = Checkpoints(tmp_path / "run", create=False)
  assert ck.steps() == {"latest": None, "best": None}
  ck.close()
