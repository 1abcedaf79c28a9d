"""The id files of a cache: ``{split}_x.npy`` (int32 [rows, ncol]), ``{split}_y.npy`` (float32
[rows]) and, when asked for, ``{split}_line.npy`` (int64 [rows]: each row's 1-based line in its raw
file), written with positioned plain writes (no memmap: written pages are page cache, not process
memory) under a fixed-size .npy header that is filled in once the row counts are known, and
rewritten in place through a lookup table (the encode pass)."""

from __future__ import annotations

import concurrent.futures
import os
import struct
import threading
from pathlib import Path

import numpy as np

from kdef_jax.data.hash_ids import remap_columns

SPLITS = ("train", "valid", "test")
HEADER_BYTES = 128  # fixed .npy header length, rewritten in place once the row count is known


def npy_header(dtype, shape) -> bytes:
    """A version-1.0 .npy header of exactly HEADER_BYTES bytes for an array of ``dtype`` and ``shape``."""
    d = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (np.dtype(dtype).str, tuple(shape))
    hlen = HEADER_BYTES - 10
    if len(d) >= hlen:
        raise ValueError(f"shape {shape} does not fit a {HEADER_BYTES}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", hlen) + (d.ljust(hlen - 1) + "\n").encode("latin1")


_SEEK_LOCK = threading.Lock()  # where os.pwrite is missing (Windows): seek + write under one lock


def pwrite_all(fd: int, arr: np.ndarray, offset: int) -> None:
    """Write all of ``arr``'s bytes to ``fd`` at ``offset`` (safe from several threads at once)."""
    view = memoryview(np.ascontiguousarray(arr)).cast("B")
    while view:
        if hasattr(os, "pwrite"):
            k = os.pwrite(fd, view, offset)
        else:  # pragma: no cover - Windows
            with _SEEK_LOCK:
                os.lseek(fd, offset, os.SEEK_SET)
                k = os.write(fd, view)
        view, offset = view[k:], offset + k


class IdFiles:
    """``{split}_x.npy`` (int32 [rows, ncol]) and ``{split}_y.npy`` (float32 [rows]) with plain writes
    (no memmap, so written pages are page cache, not process memory). Row ranges are reserved in file
    order (:meth:`reserve`); blocks are then written at their offsets by any thread; the headers are
    written on close, once the row counts are known. A reader stopped by an error may leave a
    worker thread still writing: :meth:`close` waits for writes in progress and refuses later ones,
    so no write can reach a closed (and maybe reused) file descriptor."""

    def __init__(self, folder: Path, ncol: int, lines: bool = False):
        self.ncol, self.rows = ncol, dict.fromkeys(SPLITS, 0)
        self.paths = {(s, k): folder / f"{s}_{k}.npy" for s in SPLITS for k in ("x", "y", "line")[: 3 if lines else 2]}
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        self.fds = {key: os.open(path, flags, 0o644) for key, path in self.paths.items()}
        self._busy, self._closed = 0, False
        self._cond = threading.Condition()

    def reserve(self, sizes: dict) -> dict:
        """First row of each split for a block of ``sizes[split]`` rows (call in file order)."""
        starts = dict(self.rows)
        for s, m in sizes.items():
            self.rows[s] += m
        return starts

    def write(self, split: str, start: int, x: np.ndarray, y: np.ndarray, line: np.ndarray | None = None) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the outputs are closed (the build stopped)")
            self._busy += 1
        try:
            pwrite_all(self.fds[split, "x"], x.astype(np.int32, copy=False), HEADER_BYTES + 4 * self.ncol * start)
            pwrite_all(self.fds[split, "y"], y.astype(np.float32, copy=False), HEADER_BYTES + 4 * start)
            if (split, "line") in self.fds:
                pwrite_all(self.fds[split, "line"], line.astype(np.int64, copy=False), HEADER_BYTES + 8 * start)
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.wait_for(lambda: self._busy == 0)
        for (s, k), fd in self.fds.items():
            shape = (self.rows[s], self.ncol) if k == "x" else (self.rows[s],)
            dtype = {"x": np.int32, "y": np.float32, "line": np.int64}[k]
            pwrite_all(fd, np.frombuffer(npy_header(dtype, shape), np.uint8), 0)
            os.close(fd)
        self.fds = {}


def remap_in_place(path: Path, ncol: int, col_offsets: np.ndarray, lut: np.ndarray, rows_per_step: int,
                    threads: int = 2) -> None:
    """x ← lut[x + col_offsets] over an int32 .npy file, block by block (no memmap), the rows split
    between ``threads`` threads (the compiled kernel and file I/O release the GIL)."""
    rows = (path.stat().st_size - HEADER_BYTES) // (4 * ncol)
    bounds = np.linspace(0, rows, threads + 1).astype(np.int64)
    remap_columns(np.zeros((1, ncol), np.int32), np.zeros(ncol, np.int32), np.zeros(1, np.int32))  # compile here, not in the threads

    def part(lo: int, hi: int) -> None:
        buf = np.empty(rows_per_step * ncol, np.int32)
        with open(path, "r+b") as fh:
            for r in range(lo, hi, rows_per_step):
                x = buf[: (min(hi, r + rows_per_step) - r) * ncol]
                fh.seek(HEADER_BYTES + 4 * ncol * r)
                fh.readinto(memoryview(x).cast("B"))
                remap_columns(x.reshape(-1, ncol), col_offsets, lut)
                fh.seek(HEADER_BYTES + 4 * ncol * r)
                fh.write(x.data)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(part, int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]:
            f.result()
