"""A time limit for code in this process: SIGALRM in the main thread (`alarm`).

`dropcheck.guard` uses it where no forked worker can run the checks (CUDA, not Linux), and
`dropcheck.targets` around importing a TARGET. Its reach is limited, and guard's module docstring
says why the forked worker is preferred: a signal handler runs only between bytecodes, so one
long C call is not interrupted, and off the main thread there is no way to interrupt at all.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

_REFIRE_S = 1.0  # the alarm fires again this often until it is not swallowed


class TimeLimitExceeded(BaseException):
    """The alarm ran out. A BaseException, so `except Exception` in checked code lets it through."""


def alarm_usable() -> bool:
    """Whether `alarm` can interrupt here: POSIX timers, and the main thread (signals land there)."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def alarm(timeout: float | None) -> Iterator[None]:
    """Raise `TimeLimitExceeded` in the main thread once `timeout` seconds have passed.

    Does nothing without a timeout or off the main thread. Restores any previous SIGALRM handler
    and timer (pytest-timeout's signal method, for one) on exit.
    """
    if not timeout or not alarm_usable():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeLimitExceeded(timeout)

    start = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, timeout, _REFIRE_S)
    try:
        yield
    finally:
        while True:  # the alarm may land while it is being disarmed; disarm again
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                break
            except TimeLimitExceeded:
                continue
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer[0] > 0:  # give the outer timer back what is left of it
            left = previous_timer[0] - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), previous_timer[1])
