"""The epoch loop: the final evaluation and load_run use the best epoch, a non-improving epoch lowers
the optimizer's rate, every epoch has its own permutation, throughput counts the real rows, patience
and steps_per_epoch stop where they say, a NaN between log steps is caught at the epoch's end, and a
gain of exactly min_delta counts."""

import json

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from run_helpers import latest_checkpoint, tiny_config


def _tiny_k2(tmp_path, **over):
  return tiny_config(tmp_path, **{"model.num_students": 2, **over})


@pytest.fixture(scope="module")
def plateau_run(tmp_path_factory):
  """2 epochs, min_delta 1 (AUC can never gain 1): epoch 1 improves (from -inf), epoch 2 does not, so
  best = 1, latest = 2, the lr drops 1e-3 → 1e-4 after epoch 2. Records the row order of every epoch."""
  import kdef_jax.train as train_mod
  from kdef_jax.train import train_and_evaluate

  tmp = tmp_path_factory.mktemp("plateau")
  orders = []
  real = train_mod.iterate_batches

  def spy(split, batch_size, *, order=None):
    if order is not None:
      orders.append(np.array(order))
    return real(split, batch_size, order=order)

  train_mod.iterate_batches = spy
  try:
    c = _tiny_k2(tmp, **{"optim.min_delta": 1.0, "optim.patience": 5})
    res = train_and_evaluate(c, tmp / "run", log=lambda *a: None)
  finally:
    train_mod.iterate_batches = real
  return c, tmp / "run", res, orders


def test_final_evaluation_uses_the_best_epoch_not_the_last(plateau_run):
  """The results table and load_run come from the best epoch's state; load_run(..., "latest") from the last."""
  from kdef_jax.export import load_run
  from kdef_jax.data.dataset import load_dataset
  from kdef_jax.metrics import ensemble_metrics

  c, wd, res, _ = plateau_run
  hist = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [h["improved"] for h in hist] == [True, False] and res["best_epoch"] == 1 and res["epochs_run"] == 2
  v1, v2 = hist[0]["val"]["teacher"]["auc"], hist[1]["val"]["teacher"]["auc"]
  assert v1 != v2  # the two epochs' states differ, so the choice is visible
  assert res["rows"][0]["val_auc"] == pytest.approx(v1, abs=1e-12)  # the table comes from epoch 1's state
  valid = load_dataset(c.data, log=lambda *a: None).splits["valid"]
  model, variables, _, _ = load_run(wd)
  assert ensemble_metrics(valid.y, model.apply(variables, jnp.asarray(valid.x), False, None))["teacher"]["auc"] == pytest.approx(v1, abs=1e-9)
  model, variables, _, _ = load_run(wd, "latest")
  assert ensemble_metrics(valid.y, model.apply(variables, jnp.asarray(valid.x), False, None))["teacher"]["auc"] == pytest.approx(v2, abs=1e-9)


def test_a_non_improving_epoch_lowers_the_optimizers_rate_not_only_the_log(plateau_run):
  """The lr drop after a non-improving epoch reaches the optimizer, not only the log."""
  from kdef_jax.steps import get_learning_rate

  _, wd, res, _ = plateau_run
  state, meta, step, _ = latest_checkpoint(wd)
  assert step == 2 and meta["lr"] == pytest.approx(1e-4) and res["final_lr"] == pytest.approx(1e-4)
  assert get_learning_rate(state) == pytest.approx(1e-4, rel=1e-6)


def test_each_epoch_trains_on_its_own_permutation(plateau_run):
  """Epoch e's order is epoch_permutation(N, seed, e)."""
  from kdef_jax.data.loader import epoch_permutation

  c, _, _, orders = plateau_run
  assert len(orders) == 2
  for e, o in enumerate(orders, 1):
    np.testing.assert_array_equal(o, epoch_permutation(3000, c.seed, e))
  assert not np.array_equal(orders[0], orders[1])


def test_throughput_counts_the_rows_of_every_timed_step(plateau_run):
  """3000 rows, batch 512 → 5 full batches +
  440; the first step of the run (compile) is not timed: 4·512 + 440 = 2488 in epoch 1, 3000 in epoch 2."""
  _, wd, _, _ = plateau_run
  _, meta, _, _ = latest_checkpoint(wd)
  assert meta["timed_rows"] == 2488 + 3000


def test_patience_one_stops_after_the_first_non_improving_epoch_and_steps_per_epoch_caps(tmp_path):
  """patience=1 stops after the first epoch without a gain; steps_per_epoch caps every epoch's steps."""
  from kdef_jax.train import train_and_evaluate

  c = _tiny_k2(tmp_path, **{"optim.min_delta": 1.0, "optim.patience": 1, "train.num_epochs": 5, "train.steps_per_epoch": 2})
  res = train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)
  hist = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert res["epochs_run"] == 2 and [h["improved"] for h in hist] == [True, False]
  assert [h["steps"] for h in hist] == [2, 2]


def test_nan_is_caught_at_the_end_of_an_epoch_between_log_steps(tmp_path):
  """The end-of-epoch finiteness check: log_every 100 is more than the 6 steps of an epoch."""
  from kdef_jax.train import train_and_evaluate

  c = _tiny_k2(tmp_path, **{"model.embedding_init_std": 1e38, "train.log_every": 100})  # overflows in the first layer
  with pytest.raises(FloatingPointError, match="NaN/inf in epoch 1 by step 6 "):
    train_and_evaluate(c, tmp_path / "run", log=lambda *a: None)


def test_plateau_gain_of_exactly_min_delta_counts():
  """Reference: only m < best + min_delta is "no gain".
  Exact binary values: best 0.5, min_delta 0.25, auc 0.75."""
  from kdef_jax.train import plateau_update

  o = ml_collections.ConfigDict({"lr_decay": 0.5, "min_lr": 1e-6, "min_delta": 0.25, "patience": 2})
  meta = {"lr": 1e-3, "best_auc": 0.5, "best_epoch": 3, "bad_epochs": 1, "lr_decays": 1}
  assert plateau_update(meta, 4, 0.75, o) is True
  assert meta == {"lr": 1e-3, "best_auc": 0.75, "best_epoch": 4, "bad_epochs": 0, "lr_decays": 1}
  assert plateau_update(meta, 5, 0.9375, o) is False  # 0.9375 < 0.75 + 0.25
  assert meta == {"lr": 5e-4, "best_auc": 0.75, "best_epoch": 4, "bad_epochs": 1, "lr_decays": 2}


def test_a_rate_below_min_lr_is_kept_never_raised():
  from kdef_jax.train import plateau_update

  o = ml_collections.ConfigDict({"lr_decay": 0.5, "min_lr": 1e-3, "min_delta": 0.0, "patience": 2})
  meta = {"lr": 1e-4, "best_auc": 0.75, "best_epoch": 1, "bad_epochs": 0, "lr_decays": 0}
  assert plateau_update(meta, 2, 0.5, o) is False
  assert meta["lr"] == 1e-4  # max(5e-5, 1e-3) would have raised it tenfold
  meta["lr"] = 4e-3
  plateau_update(meta, 3, 0.5, o)
  assert meta["lr"] == 2e-3  # above min_lr: ×0.5 as ever
  plateau_update(meta, 4, 0.5, o)
  assert meta["lr"] == 1e-3  # floored at min_lr


def test_the_log_records_the_rate_each_epoch_trained_with(plateau_run):
  """metrics.jsonl's lr is the rate the epoch trained at: 1e-3 in both epochs (epoch 2's no-gain drop to
  1e-4 applies from epoch 3 on), as the reference's log prints it."""
  _, wd, _, _ = plateau_run
  hist = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [h["lr"] for h in hist] == [1e-3, 1e-3]
