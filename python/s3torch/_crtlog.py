"""The AWS CRT's log messages (and the core's own retries, fallbacks and cancels) in ``logging``.

They go to the logger ``s3torch.crt``. Off by default: give that logger a level of its own before
creating a client (``logging.getLogger("s3torch.crt").setLevel(logging.DEBUG)``; ``TRACE`` (5) for
everything the CRT says), or call :func:`configure_crt_logging` after changing it. The CRT checks
the level before it formats anything, so when off it costs nothing; when on, the native side queues
messages (bounded; the surplus is dropped and counted) and one daemon thread hands them to logging.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Optional

LOGGER_NAME = "s3torch.crt"
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

# aws_log_level -> logging level
_PY_LEVELS = {
    1: logging.CRITICAL,
    2: logging.ERROR,
    3: logging.WARNING,
    4: logging.INFO,
    5: logging.DEBUG,
    6: TRACE,
}

_lock = threading.Lock()
_thread: Optional[threading.Thread] = None
_thread_pid: Optional[int] = None
_stop = threading.Event()


def _crt_level(level: int) -> int:
    """The aws_log_level for a logging level (NOTSET: off)."""
    if level == logging.NOTSET:
        return 0
    for crt, py in sorted(_PY_LEVELS.items(), reverse=True):
        if level <= py:
            return crt
    return 0


def configure_crt_logging() -> int:
    """Applies the level of the ``s3torch.crt`` logger to the CRT; returns the aws_log_level set.

    Called for every new native client; call it yourself after changing the level while clients exist.
    """
    from . import _core

    logger = logging.getLogger(LOGGER_NAME)
    crt = 0 if logger.disabled else _crt_level(logger.level)
    with _lock:
        if crt == 0 and _core.crt_log_level() == 0:
            return 0  # never turned on: leave the CRT without a logger
        _core.set_crt_log_level(crt)
        if crt:
            _ensure_thread()
    return crt


def _ensure_thread() -> None:
    global _thread, _thread_pid
    pid = os.getpid()
    if _thread is not None and _thread_pid == pid and _thread.is_alive():
        return
    if _thread_pid is None:
        atexit.register(_shutdown)
    _stop.clear()
    _thread = threading.Thread(target=_drain, name="s3torch-crt-log", daemon=True)
    _thread_pid = pid
    _thread.start()


def _drain() -> None:
    from . import _core

    logger = logging.getLogger(LOGGER_NAME)
    pid = os.getpid()
    while os.getpid() == pid and not _stop.is_set():
        for level, subject, text in _core.wait_crt_log_records(200):
            logger.log(_PY_LEVELS.get(level, logging.DEBUG), "[%s] %s", subject, text)


def _shutdown() -> None:
    # At exit, before the interpreter stops daemon threads: one stopped inside the native wait
    # (GIL released) would be torn down by an unwind the C++ frames cannot pass.
    _stop.set()
    thread = _thread
    if thread is not None and _thread_pid == os.getpid():
        thread.join(2.0)


def flush_crt_logging(timeout: float = 1.0) -> None:
    """Waits until the records queued so far reached ``logging`` (for tests and before exiting)."""
    import time

    from . import _core

    deadline = time.monotonic() + timeout
    logger = logging.getLogger(LOGGER_NAME)
    # Drain what is queued in this thread too: the consumer may be asleep in its wait.
    while time.monotonic() < deadline:
        records = _core.wait_crt_log_records(50)
        if not records:
            return
        for level, subject, text in records:
            logger.log(_PY_LEVELS.get(level, logging.DEBUG), "[%s] %s", subject, text)
