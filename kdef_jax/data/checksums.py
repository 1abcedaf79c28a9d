"""CRC-32 checksums of a dataset cache's arrays: written when the cache is built, checked when it is opened.

A cache is reused by every later run, and a byte changed on disk inside an id array would otherwise be
trained on silently (an out-of-range id reads its field's OOV row by design). ``checksums.json`` holds,
for each ``.npy`` file, its size and the CRC-32 of every ``CHUNK_BYTES`` slice, so a mismatch names the
file and the rows of the slice. The slices are checked in threads (zlib releases the GIL): 5 GiB/s on
the 2-core CI-class machine (benchmarks/loader.py), ≈ 1.4 s for a full Criteo cache (6.8 GiB).
Caches built before this file existed have no ``checksums.json`` and are not checked.
"""

from __future__ import annotations

import concurrent.futures
import json
import mmap
import os
import time
import zlib
from pathlib import Path

import numpy as np

FILE = "checksums.json"
CHUNK_BYTES = 32 << 20


def _slices(size: int, chunk: int) -> list:
    return [(lo, min(lo + chunk, size)) for lo in range(0, size, chunk)]


def _crcs(paths: list, chunk: int) -> dict:
    """{path: [crc32 of each ``chunk``-byte slice]}, the slices of all files spread over the cores."""
    maps, views, tasks = {}, {}, []
    try:
        for p in paths:
            with open(p, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                maps[p] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            views[p] = memoryview(maps[p])
            tasks += [(p, lo, hi) for lo, hi in _slices(size, chunk)]
        def crc(task):
            p, lo, hi = task
            c = zlib.crc32(views[p][lo:hi])
            if isinstance(maps[p], mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
                # hand the slice's pages back: the process's RSS stays a slice per thread, not the whole
                # cache. A read-only file mapping: the page cache keeps them, and a page shared with the
                # next slice (madvise wants a page-aligned start) is read in again if needed
                start = lo - lo % mmap.PAGESIZE
                maps[p].madvise(mmap.MADV_DONTNEED, start, hi - start)
            return c

        workers = min(len(tasks), os.cpu_count() or 1) or 1
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            crcs = list(pool.map(crc, tasks))
        out = {p: [] for p in paths}
        for (p, _, _), c in zip(tasks, crcs):
            out[p].append(c)
        return out
    finally:  # the views first: a mapping with a view still exported cannot be closed
        for v in views.values():
            v.release()
        for m in maps.values():
            if isinstance(m, mmap.mmap):
                m.close()


def write(folder: Path) -> None:
    """Record the checksums of every ``.npy`` in ``folder`` (a cache being built) in ``folder/checksums.json``."""
    paths = sorted(Path(folder).glob("*.npy"))
    crcs = _crcs(paths, CHUNK_BYTES)
    files = {p.name: {"size": p.stat().st_size, "crc32": crcs[p]} for p in paths}
    (Path(folder) / FILE).write_text(json.dumps({"chunk_bytes": CHUNK_BYTES, "files": files}))


def _rows(path: Path, lo: int, hi: int) -> str:
    """The rows of a ``.npy`` file that bytes [lo, hi) hold, as 'rows a–b' (or 'its header')."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
            start = f.tell()
    except (ValueError, OSError, SyntaxError):  # the header itself is damaged
        return "its header"
    row = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    if hi <= start or row == 0:
        return "its header"
    first, last = max(lo - start, 0) // row, (hi - 1 - start) // row
    return f"rows {first:,}–{last:,}"


def verify(folder: Path, log=None) -> bool:
    """Check the arrays of the cache ``folder`` against its ``checksums.json``; raises ValueError naming
    the damaged file (and its rows) and saying to delete the folder. False where the cache has no
    ``checksums.json`` (built by an older version: not checked), True once checked."""
    folder = Path(folder)
    path = folder / FILE
    if not path.exists():
        return False
    rebuild = f"delete the folder {folder} to rebuild it"
    try:
        rec = json.loads(path.read_text())
        chunk, files = int(rec["chunk_bytes"]), rec["files"]
        want = {name: (int(f["size"]), [int(c) for c in f["crc32"]]) for name, f in files.items()}
        if chunk <= 0:
            raise ValueError(f"chunk_bytes {chunk}")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: damaged cache file ({type(e).__name__}: {e}); {rebuild}") from None
    for name, (size, _) in want.items():
        p = folder / name
        if not p.exists():
            raise ValueError(f"{p}: missing from the cache ({FILE} lists it); {rebuild}")
        if p.stat().st_size != size:
            raise ValueError(f"{p}: damaged cache file ({p.stat().st_size:,} bytes, {size:,} when it was built); {rebuild}")
    t0 = time.perf_counter()
    got = _crcs([folder / name for name in want], chunk)
    for name, (size, crcs) in want.items():
        for (lo, hi), a, b in zip(_slices(size, chunk), got[folder / name], crcs):
            if a != b:
                raise ValueError(f"{folder / name}: damaged cache file (bytes {lo:,}–{hi:,}, {_rows(folder / name, lo, hi)}, "
                                 f"differ from the checksum recorded when it was built); {rebuild}")
    total = sum(size for size, _ in want.values())
    if log is not None and total >= 1 << 30:
        log(f"[data] checked the cache's checksums ({total / 2**30:.1f} GiB in {time.perf_counter() - t0:.1f} s)")
    return True
