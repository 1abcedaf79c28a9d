"""Publishing a dataset cache folder atomically.

A cache is built in a fresh sibling ``<name>.tmp-<random>`` folder (``tempfile.mkdtemp``: never one that
another builder, thread or process, already uses) and renamed to its final name only once
complete, so a crash or Ctrl-C never leaves a half-written cache that a later run would trust. Two
processes building the same cache at once both finish; the first rename wins and the second build is
discarded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def building(final: Path, marker: str = "feature_map.json"):
    """Yields an empty temporary folder beside ``final``; on normal exit renames it to ``final`` (or
    removes it where another process published ``final`` first, as ``final/marker`` shows), on an
    exception removes it and re-raises."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=final.name + ".tmp-"))
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same cache first
            if not (final / marker).exists():
                if final.is_dir():
                    raise FileExistsError(f"{final}: an incomplete folder (no {marker}) is in the way of the one "
                                          f"just built; delete it (nothing else uses it) and run again") from None
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
