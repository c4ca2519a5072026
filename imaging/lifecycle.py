"""Waiting for the end of a long-running command (`serve --no-http`, `worker`, a gateway process)."""

from __future__ import annotations

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
