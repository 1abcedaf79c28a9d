"""The batch loader: epoch permutations, padded last batch with a mask, and the prefetch thread."""
import threading
import time

import numpy as np
import pytest

from kdef_jax.data import loader
from kdef_jax.data.dataset import Split
from kdef_jax.data.loader import epoch_permutation, iterate_batches, num_batches, prefetch


def _toy_split(n=10, c=3):
  x = (np.arange(n)[:, None] * 10 + np.arange(c)[None, :] + 1).astype(np.int32)  # row r: 10r+1..10r+c
  y = (np.arange(n) % 2).astype(np.float32)
  return Split("train", x, y)


def test_num_batches():
  assert [num_batches(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_iterate_batches_permutation_covers_each_row_once_and_pads():
  split = _toy_split(10)
  order = epoch_permutation(10, seed=3, epoch=0)
  batches = list(iterate_batches(split, 4, order=order))
  assert len(batches) == 3
  seen = []
  for b, batch in enumerate(batches):
    assert batch["ids"].shape == (4, 3) and batch["ids"].dtype == np.int32
    assert batch["y"].shape == (4,) and batch["y"].dtype == np.float32
    assert batch["mask"].shape == (4,) and batch["mask"].dtype == np.float32
    real = batch["mask"] == 1
    rows = (batch["ids"][real, 0] - 1) // 10
    # each real row is intact (ids and its label)
    np.testing.assert_array_equal(batch["ids"][real], split.x[rows])
    np.testing.assert_array_equal(batch["y"][real], split.y[rows])
    # the batch holds exactly the rows order[4b:4b+4]
    assert sorted(rows.tolist()) == sorted(order[4 * b : 4 * b + 4].tolist())
    seen.extend(rows.tolist())
  assert sorted(seen) == list(range(10))
  last = batches[-1]
  np.testing.assert_array_equal(last["mask"], [1, 1, 0, 0])
  np.testing.assert_array_equal(last["ids"][2:], 0)
  np.testing.assert_array_equal(last["y"][2:], 0)
  assert batches[0]["mask"].sum() == 4 and batches[1]["mask"].sum() == 4


def test_iterate_batches_file_order_without_permutation():
  split = _toy_split(7)
  batches = list(iterate_batches(split, 3))
  assert [b["mask"].tolist() for b in batches] == [[1, 1, 1], [1, 1, 1], [1, 0, 0]]
  ids = np.concatenate([b["ids"] for b in batches])
  np.testing.assert_array_equal(ids[:7], split.x)
  np.testing.assert_array_equal(ids[7:], 0)
  ys = np.concatenate([b["y"] for b in batches])
  np.testing.assert_array_equal(ys[:7], split.y)


def test_iterate_batches_exact_multiple_has_no_padding_and_works_on_memmap(tmp_path):
  x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.int32, (8, 2))
  x[:] = np.arange(16).reshape(8, 2) + 1
  x.flush()
  del x
  split = Split("test", np.load(tmp_path / "x.npy", mmap_mode="r"), np.ones(8, np.float32))
  batches = list(iterate_batches(split, 4, order=epoch_permutation(8, 0, 1)))
  assert len(batches) == 2
  assert all(b["mask"].tolist() == [1, 1, 1, 1] for b in batches)
  got = np.concatenate([b["ids"] for b in batches])
  np.testing.assert_array_equal(np.sort(got[:, 0]), np.arange(1, 16, 2))


def test_epoch_permutation_reproducible_and_differs_across_epochs():
  p0 = epoch_permutation(100, seed=2024, epoch=0)
  assert sorted(p0.tolist()) == list(range(100))
  np.testing.assert_array_equal(p0, epoch_permutation(100, seed=2024, epoch=0))
  p1 = epoch_permutation(100, seed=2024, epoch=1)
  assert not np.array_equal(p0, p1)
  assert sorted(p1.tolist()) == list(range(100))
  assert not np.array_equal(p0, epoch_permutation(100, seed=2025, epoch=0))
  assert not np.array_equal(p0, np.arange(100))


def test_prefetch_preserves_items_and_order():
  assert list(prefetch(iter(range(50)), size=2)) == list(range(50))
  assert list(prefetch(iter(range(5)), size=0)) == [0, 1, 2, 3, 4]
  assert list(prefetch(iter(range(5)), size=-1)) == [0, 1, 2, 3, 4]
  assert list(prefetch(iter([]), size=3)) == []
  assert list(prefetch(iter(range(4)), size=2, transform=lambda v: v * 10)) == [0, 10, 20, 30]
  assert list(prefetch(iter(range(4)), size=0, transform=lambda v: v + 1)) == [1, 2, 3, 4]


def _consume_with_watchdog(it, timeout=10.0):
  """Drain ``it`` in a helper thread; returns (items, exception). Fails instead of hanging."""

  got, err = [], []

  def run():
    try:
      for v in it:
        got.append(v)
    except BaseException as e:  # noqa: BLE001
      err.append(e)

  t = threading.Thread(target=run, daemon=True)
  t.start()
  t.join(timeout)
  assert not t.is_alive(), f"prefetch consumer hung after {got}"
  return got, (err[0] if err else None)


@pytest.mark.parametrize("size", [0, 1, 3])
def test_prefetch_reraises_producer_exception(size):
  def gen():
    yield 1
    yield 2
    raise RuntimeError("producer failed")

  got, err = _consume_with_watchdog(prefetch(gen(), size=size))
  assert got == [1, 2]
  assert isinstance(err, RuntimeError) and "producer failed" in str(err)


def test_prefetch_transform_exception_reraised():
  def bad(v):
    if v == 2:
      raise KeyError("transform")
    return v

  got, err = _consume_with_watchdog(prefetch(iter(range(5)), size=2, transform=bad))
  assert got == [0, 1]
  assert isinstance(err, KeyError)


def test_prefetch_early_break_does_not_hang_or_leave_its_producer_thread():
  before = set(threading.enumerate())

  def infinite():
    i = 0
    while True:
      yield i
      i += 1

  it = prefetch(infinite(), size=2)
  assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
  it.close()  # runs the finally: stops and drains the producer thread
  left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
  assert not left, left


def test_epoch_permutations_of_neighbouring_seeds_do_not_coincide():
  # (seed s, epoch e + 1) must not replay (seed s + 1, epoch e): run seeds 0, 1, 2 ... would see the
  # same row orders one epoch apart (what a seed + epoch mix gives)
  for s, e in [(2024, 0), (0, 0), (7, 3)]:
    assert not np.array_equal(epoch_permutation(100, s, e + 1), epoch_permutation(100, s + 1, e))


# Found by mutation testing: rows read in file order, prefetch size 0 stays in the consumer.

class _Split:
  def __init__(self, n):
    self.x = np.arange(n, dtype=np.int32)[:, None]
    self.y = np.arange(n, dtype=np.float32)

  def __len__(self):
    return self.x.shape[0]


def test_training_batches_read_their_rows_in_file_order():  # O02
  order = loader.epoch_permutation(10, 0, 0)
  for b, batch in enumerate(loader.iterate_batches(_Split(10), 4, order=order)):
    rows = batch["ids"][batch["mask"] > 0, 0]
    assert rows.tolist() == sorted(order[4 * b : 4 * b + 4].tolist())


def test_prefetch_size_0_runs_in_the_consumer_thread():  # O05
  seen = []
  assert list(loader.prefetch(iter(range(3)), size=0, transform=lambda v: seen.append(threading.get_ident()) or v)) == [0, 1, 2]
  assert seen == [threading.get_ident()] * 3


# Cases mutation testing of loader.py found unpinned (2026-12-07): the bounded, threaded, cleaned-up producer.


def test_prefetch_keeps_at_most_size_items_ahead():
  pulled = []

  def source():
    for i in range(100):
      pulled.append(i)
      yield i

  it = prefetch(source(), size=2)
  assert next(it) == 0
  time.sleep(0.3)
  assert len(pulled) <= 1 + 2 + 1  # the consumed one, a full queue of 2, one waiting to be put
  it.close()


def test_prefetch_transforms_in_the_background_thread():
  seen = []
  out = list(prefetch(iter(range(3)), size=2, transform=lambda v: seen.append(threading.get_ident()) or v))
  assert out == [0, 1, 2] and len(seen) == 3
  assert threading.get_ident() not in seen
