"""Timeouts in a row: when the statistical samples of a run keep running out of time, stop retrying them.

Each check has its own time limit (`--timeout`, dropcheck.guard), so an implementation whose train
calls hang made every sample wait out the whole limit: `tests/hostile_impls.py:sleeps_in_train`
gave 32 timeouts, 16 minutes at the default 60 s over two lanes, to say 32 times what its first
timeouts said. So a run counts the timeouts in a row of its statistical samples (`HangStreak`,
shared by the lanes); after `HANG_STREAK` of them, with no sample ending otherwise in between, a
sample of a property that has already timed out at another p is not run: its check returns
`NOT_RUN` at once, which becomes the outcome "not-run" (an INCONCLUSIVE verdict with a replay
line, dropcheck.runner).

What is never cut short, so that no verdict that could have been reached is lost:
- a property's first sample: a slow implementation may still finish the samples of few calls
  (INDEP-POSITIONS makes one) while those of many calls time out;
- the exact properties: few, and each exercises something else (eval mode, a dtype, autograd,
  p = 0 or 1), so an implementation that hangs in eval mode only times out in some of them while
  its samples must still be judged. They neither count nor reset the streak.

How the workers know: the count lives in this process (the lanes' threads record each counted
outcome as it arrives); whether it has tripped, and which properties have timed out, are bytes of
a memory map shared with the workers, which are forked after the map is made; a counted check
reads them before it starts.
"""
from __future__ import annotations

import mmap
import threading
from collections.abc import Callable
from typing import Any

HANG_STREAK = 3  # statistical samples timed out in a row, after which those of properties that timed out are not run
_GROUPS = 255  # properties a streak can tell apart; a sample of any other is always run


class _NotRun:
    """What a counted check returns instead of running once the streak has tripped. It pickles by
    name, so the one a worker sends back is this very object."""

    def __reduce__(self) -> str:
        return "NOT_RUN"

    def __repr__(self) -> str:
        return "dropcheck.hangs.NOT_RUN"


NOT_RUN = _NotRun()


class HangStreak:
    """The timeouts in a row of the outcomes recorded (module docstring): a timeout adds one, any
    other ending resets the count, a check not run leaves it. Each check is of a group (its
    property); a group's later checks are not run once the streak has tripped and one of the
    group's has timed out. Make it before forking the workers that read it."""

    def __init__(self, limit: int = HANG_STREAK):
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()  # each lane's thread records the outcomes of its own worker
        # MAP_SHARED, what this process writes forked workers read: byte 0, tripped; byte 1 + g,
        # group g has timed out.
        self._shared = mmap.mmap(-1, 1 + _GROUPS)
        self._slots: dict[Any, int] = {}

    def _slot(self, group: Any) -> int | None:
        with self._lock:
            if group not in self._slots and len(self._slots) < _GROUPS:
                self._slots[group] = 1 + len(self._slots)
            return self._slots.get(group)

    def record(self, status: str, group: Any = None) -> None:
        """Count one counted check's outcome status ("ok", "timeout", ..., "not-run")."""
        slot = self._slot(group)
        with self._lock:
            if status == "timeout":
                self._count += 1
                if slot is not None:
                    self._shared[slot] = 1
            elif status != "not-run":
                self._count = 0
            self._shared[0] = self._count >= self.limit

    def guarded(self, check: Callable[[], Any], group: Any = None) -> Callable[[], Any]:
        """`check`, unless, when it is about to start, the streak has tripped and a check of its
        group has timed out: then `NOT_RUN`. Call it in the process that forks the workers."""
        slot = self._slot(group)

        def run_unless_hung() -> Any:
            if self._shared[0] and slot is not None and self._shared[slot]:
                return NOT_RUN
            return check()

        return run_unless_hung

    @property
    def why(self) -> str:
        """Why a check was not run, for its verdict."""
        return (f"the last {self.limit} statistical samples to end before it all ran out of time, and so did this "
                "property's at another p")
