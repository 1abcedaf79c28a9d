"""A Ctrl-C that is never lost.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. When that is a gc
callback, a ``__del__`` or a weakref callback (JAX runs one, ``_xla_gc_callback``, at every garbage
collection), the interpreter prints "Exception ignored in ..." and goes on: the Ctrl-C is lost and the
run trains to its end (seen once in CI, in a test that interrupts a real run). Inside
:func:`remembered`, SIGINT also sets a flag, and the loops that run long (each train step, each
predicted batch) call :func:`raise_if_pending`, which raises the lost KeyboardInterrupt again.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_pending = threading.Event()


def _on_sigint(signum, frame):
    _pending.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembered():
    """SIGINT raises KeyboardInterrupt and is remembered until :func:`raise_if_pending` raises it again.
    Where SIGINT is not Python's default handler (ignored by a runner, or the caller's own), or off the
    main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    _pending.clear()
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _pending.clear()


def raise_if_pending() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C came (inside :func:`remembered`) and was swallowed; once."""
    if _pending.is_set():
        _pending.clear()
        raise KeyboardInterrupt
