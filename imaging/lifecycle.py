"""Waiting for the end of a long-running command (`serve --no-http`, `worker`, a gateway process)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import threading
import time

from pydicom import config

# glibc mallopt() parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def wait_until_terminated(stop: threading.Event | None = None, poll: float = 0.2) -> None:
    """Block the main thread until SIGTERM arrives or another thread sets `stop`.

    The handler only flips a flag. Setting a threading.Event from a signal handler deadlocks when the signal
    lands while the main thread holds that Event's lock inside `wait()`: seen with a gateway process that
    got two SIGTERMs in a row (its parent's and PR_SET_PDEATHSIG's) and never exited.
    """
    received: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    while not received and not (stop is not None and stop.is_set()):
        time.sleep(poll)


def configure_server_process() -> None:
    """Settings for a long-running archive process (server, gateway process, worker).

    pydicom validates every value it converts or sets and warns about the invalid ones, quoting the value:
    patient data in the logs, and ~1 ms of CPU per received instance counting pynetdicom's own command sets.
    The archive keeps what it receives unchanged and checks conformance where it matters (de-identified and
    generated objects are tested with dciodvfy), so the server processes turn that validation off."""
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    keep_freed_memory()


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Let glibc's malloc keep and reuse freed memory instead of handing it back to the kernel at once.

    Every received instance passes through a few buffers of its size (0.5 MB for a CT slice): PDUs, the data
    set, the Part 10 stream. glibc serves blocks that large with mmap() and trims freed heap tops eagerly, so
    each new buffer faults its pages in again: ~350 page faults and ~1.4 ms of kernel time per instance, more
    than the rest of the gateway's receive path. Above these thresholds (whole multi-frame objects) memory
    still goes straight back. glibc only (elsewhere this does nothing); returns whether it applied."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold) and mallopt(M_TRIM_THRESHOLD, trim_threshold))
