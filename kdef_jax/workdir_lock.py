"""One training run per workdir at a time: an exclusive ``flock`` on ``<workdir>/.kdef_jax.lock``.

A second run started on a workdir in use (the same command twice, a resume of a run still training,
two sweeps over the same run folders) is refused, naming the holder's pid where the OS says it
(/proc/locks), before it reads or writes any run file. The lock is the kernel's: it ends with the
holding process, so a killed run leaves no stale lock; the file itself stays empty (a run refused on
a folder it found no lock file in removes the one it made: :meth:`Lock.discard`). Readers (score_run,
export_run) do not take it. Where the file system has no ``flock`` (some network mounts) the run goes
on unlocked, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

LOCK_NAME = ".kdef_jax.lock"


class WorkdirInUseError(FileExistsError):
    """Another process is training in this workdir."""


class Lock:
    def __init__(self, path: Path, created: bool):
        self.path, self.created = path, created

    def discard(self) -> None:
        """Remove the lock file if this run made it (a refused run leaves the folder as it found it)."""
        if self.created:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.created = False


def _holder_pid(fd: int) -> int | None:
    """The pid holding a flock on ``fd``'s file, from /proc/locks (Linux); None where not known."""
    st = os.fstat(fd)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        f = line.split()
        if len(f) >= 6 and f[1] == "FLOCK" and f[5] == dev and f[4].isdigit():
            return int(f[4])
    return None


@contextlib.contextmanager
def held(workdir: Path, log=print):
    """Hold the workdir's lock for the ``with`` block (yields a :class:`Lock`); WorkdirInUseError if
    another process holds it."""
    path = Path(workdir) / LOCK_NAME
    try:
        fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        fd, created = os.open(path, os.O_RDWR), False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                pid = _holder_pid(fd)
                raise WorkdirInUseError(
                    f"{workdir} is in use by another training run ({f'pid {pid}' if pid else 'its lock is held'}; "
                    f"{path}); wait for it to end or choose another --workdir (nothing was changed)") from None
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            log(f"[train] warning: {path.parent} cannot be locked ({e.strerror}): nothing stops a second run "
                "from using this workdir at the same time")
        yield Lock(path, created)
    finally:
        os.close(fd)  # releases the lock
