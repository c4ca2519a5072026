"""Waiting for the end of a long-running command (`serve --no-http`, `worker`, a gateway process)."""

from __future__ import annotations

import logging
import signal
import threading
import time


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
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
