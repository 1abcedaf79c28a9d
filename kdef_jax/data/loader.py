"""Batches from the memmap cache: one permutation per epoch, fancy indexing, a padded last batch.

Every batch has the same static shape [batch_size, C] so the train step compiles once. The last
partial batch is padded with PAD ids (0) and a ``mask`` of 0 on the padded rows; the loss and the
BatchNorm statistics ignore masked rows, so no row is dropped and none is counted twice.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np


def num_batches(num_rows: int, batch_size: int) -> int:
    return -(-num_rows // batch_size)


def epoch_permutation(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of one training epoch: a fresh, reproducible permutation per (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def iterate_batches(split, batch_size: int, *, order: np.ndarray | None = None) -> Iterator[dict]:
    """Yield {"ids": int32 [B, C], "y": float32 [B], "mask": float32 [B]} over ``split``.

    ``order`` is a permutation of the rows (training) or None (evaluation: file order, slices).
    """
    n = len(split)
    for b in range(num_batches(n, batch_size)):
        lo, hi = b * batch_size, min((b + 1) * batch_size, n)
        if order is None:
            x, y = split.x[lo:hi], split.y[lo:hi]
        else:
            idx = np.sort(order[lo:hi])  # sorted reads are kinder to the memmap; row order is irrelevant
            x, y = split.x[idx], split.y[idx]
        m = hi - lo
        if m == batch_size:
            yield {"ids": np.asarray(x, np.int32), "y": np.asarray(y, np.float32), "mask": np.ones(m, np.float32)}
        else:
            ids = np.zeros((batch_size, split.x.shape[1]), np.int32)
            ids[:m] = x
            yy = np.zeros(batch_size, np.float32)
            yy[:m] = y
            mask = np.zeros(batch_size, np.float32)
            mask[:m] = 1.0
            yield {"ids": ids, "y": yy, "mask": mask}


def prefetch(iterator: Iterator, size: int = 2, transform=None) -> Iterator:
    """Run ``iterator`` (and ``transform``, e.g. ``jax.device_put``) in a background thread.

    Keeps up to ``size`` items ready so host-side batching overlaps the device step. Exceptions in
    the producer are re-raised in the consumer. ``size <= 0`` disables the thread.
    """
    if size <= 0:
        for item in iterator:
            yield transform(item) if transform else item
        return
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in iterator:
                if stop.is_set():
                    return
                q.put(transform(item) if transform else item)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)
            return
        q.put(done)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)
