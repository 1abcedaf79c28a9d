"""Publishing a dataset cache folder atomically.

A cache is built in a fresh sibling ``<name>.tmp-<random>`` folder (``tempfile.mkdtemp``: never one that
another builder, thread or process, already uses) and renamed to its final name only once
complete, so a crash or Ctrl-C never leaves a half-written cache that a later run would trust. Two
processes building the same cache at once both finish; the first rename wins and the second build is
discarded. The temporary name carries its builder's host and pid (``<name>.tmp-<host>-<pid>-<random>``),
so a build killed outright (SIGKILL, power loss: nothing could clean up) is removed by the next build
of that cache on the same host once its process is gone.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import socket
import tempfile
from pathlib import Path


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        pass
    return True


def remove_abandoned(final: Path, log=None) -> list:
    """Remove the temporary folders of builds of ``final`` that this host started and whose process is
    gone (killed before it could clean up); returns their paths."""
    removed = []
    prefix = f"{final.name}.tmp-{_host()}-"
    for d in final.parent.glob(f"{glob.escape(prefix)}*"):
        pid = d.name[len(prefix):].partition("-")[0]
        if d.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
            if log is not None:
                log(f"[data] removed {d}, the folder of a build that was killed")
    return removed


def _umask() -> int:
    """The process's umask: from /proc (Linux), else read by setting it and straight back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def building(final: Path, marker: str = "feature_map.json", log=None):
    """Yields an empty temporary folder beside ``final``; on normal exit renames it to ``final`` (or
    removes it where another process published ``final`` first, as ``final/marker`` shows), on an
    exception removes it and re-raises. Killed builds' folders are removed first (:func:`remove_abandoned`)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(final, log)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f"{final.name}.tmp-{_host()}-{os.getpid()}-"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would keep a shared cache from everyone but its builder
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same cache first
            if not (final / marker).exists():
                if final.is_dir():
                    raise FileExistsError(f"{final}: an incomplete folder (no {marker}) is in the way of the one "
                                          f"just built; delete it (nothing else uses it) and run again") from None
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.filename is None and e.errno is not None:  # a write to an open file (a full disk): name the cache
            raise type(e)(e.errno, e.strerror, str(final)) from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
