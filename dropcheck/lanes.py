"""Lanes: a run's checks split into sequences that run side by side, each in its own forked worker.

Most of a run is either the implementation's work (the statistical samples: hundreds of calls on
large inputs) or dropcheck's own (the exact properties' checks on tiny inputs Hypothesis drew, and
the analysis of small samples). The checks share nothing but the target, so dropcheck runs the
two as lanes: while one worker draws the samples, the other checks and analyses, on a second
core (dropcheck.runner decides which check goes where). At `default` the exact properties alone
took 0.4 s of a 1 s run on one core when each had a Hypothesis search of its own (0.2 s, with twice
the inputs, since they share one draw, dropcheck.exact).

Why this way:
- Each lane is a `guard.run_sequence` driven by its own thread, so everything the guard promises
  (a time limit per check, a memory limit per worker, a fresh worker after a hang, crash or
  allocation failure, nothing lost) holds in each lane unchanged. The threads only wait on pipes;
  the work is in the workers.
- The last lane's checks are shared: a worker done with its own takes the next one waiting there
  (`_Pool`), so no worker idles while a shared check waits. Without that, the second lane
  was the long one at `quick`, and at `default` whenever the machine slowed it. Measured on 2
  cores (batches of 8 runs of the bench's lanes child, alternating with sharing switched off, on a
  noisy machine): `quick` run median 0.28 and 0.25 s, against 0.36 and 0.32 s without; `default`
  overhead medians 23.6, 22.6, 24.7, 23.8 and 22.0%, against 23.1, 24.4, 25.1, 30.5 and 26.2%,
  and 5 of 40 runs above 30%, against 12 of 40. The implementation's many calls stay in lane 0
  (below).
- Two lanes, not one per core: splitting the implementation's many calls across processes would
  make it compete with itself for memory bandwidth, multiply its memory, and blur what its calls
  cost; the work beside them is dropcheck's own, which needs none of that.
- Outcomes reach `on_outcome` in the calling thread in the order of the checks, exactly as if
  they had run one after the other: the output and the reports do not depend on which lane was
  faster. An outcome waits until those of every check before it are in.
- Ctrl-C, or a KeyboardInterrupt raised by a check in any lane, stops every lane's worker; the
  outcomes that had come in are delivered (in order, with gaps), then it is re-raised.
- Side by side only where the checks are forked anyway (`guard.choose_mechanism`: CPU on Linux)
  and at least two CPUs are ours; otherwise the lanes run one after the other, as one sequence would.
"""
from __future__ import annotations

import functools
import mmap
import os
import queue
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from dropcheck import guard
from dropcheck.hangs import NOT_RUN, HangStreak

_JOIN_S = 10.0  # a stopped lane kills its worker within guard._POLL_S; this only bounds a bug


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, which a container or `taskset` narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def side_by_side(mechanism: str, busy_lanes: int) -> bool:
    """Whether lanes run at once: forked workers, more than one lane with checks, two CPUs."""
    return mechanism == "fork" and busy_lanes > 1 and usable_cpus() >= 2


def run_lanes(
    checks: Sequence[Callable[[], Any]],
    lane_of: Sequence[int],
    timeout: float | None = guard.DEFAULT_TIMEOUT_S,
    *,
    device: str = "cpu",
    memory_limit_mb: float | None = guard.DEFAULT_MEMORY_LIMIT_MB,
    mechanism: str | None = None,
    on_outcome: Callable[[int, guard.Outcome], None] | None = None,
    fresh_worker_after: Callable[[Any], bool] | None = None,
    parallel: bool | None = None,
    hangs: HangStreak | None = None,
    groups: Sequence[Any] | None = None,
) -> list[guard.Outcome]:
    """Run `checks`, check i in lane `lane_of[i]`, the lanes side by side (module docstring), each
    lane's checks in their order; one outcome per check. `on_outcome(i, outcome)` is called in this
    thread in the order of `checks`, whatever the lanes. Lanes' workers are forked in the order of
    their numbers: make lane 0 the one that takes longest. `parallel` forces one way or the other
    (None: `side_by_side`). `hangs` counts the timeouts in a row of the checks with a group in
    `groups` (None: all, in one group; a group of None: not counted), as they arrive from any lane;
    once it trips, those not yet started of a group that timed out are not run (outcome "not-run",
    dropcheck.hangs).

    >>> [o.value for o in run_lanes([lambda: 1, lambda: 2, lambda: 3], [0, 1, 0], timeout=5)]
    [1, 2, 3]
    """
    if len(lane_of) != len(checks):
        raise ValueError(f"{len(checks)} checks but {len(lane_of)} lane numbers")
    groups = [0] * len(checks) if groups is None else list(groups)
    if hangs is not None:
        checks = [check if group is None else hangs.guarded(check, group) for check, group in zip(checks, groups)]

    def settle(index: int, outcome: guard.Outcome) -> guard.Outcome:
        """A check's outcome as it arrives (in its lane's thread): counted, and NOT_RUN made "not-run"."""
        if hangs is None or groups[index] is None:
            return outcome
        if outcome.status == "ok" and outcome.value is NOT_RUN:
            outcome = guard.Outcome("not-run", message=hangs.why, mechanism=outcome.mechanism)
        hangs.record(outcome.status, groups[index])
        return outcome

    mechanism = mechanism or guard.choose_mechanism(device)
    members = {lane: [i for i, of in enumerate(lane_of) if of == lane] for lane in sorted(set(lane_of))}
    if parallel is None:
        parallel = side_by_side(mechanism, len(members))
    # In-process checks (alarm, none) cannot run side by side: SIGALRM stops only the main thread's
    # Python code, and the checks seed torch's one global generator.
    parallel = parallel and mechanism == "fork"
    common = {"device": device, "memory_limit_mb": memory_limit_mb, "mechanism": mechanism,
              "fresh_worker_after": fresh_worker_after}
    outcomes: list[guard.Outcome] = []

    def deliver(index: int, outcome: guard.Outcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(index, outcome)

    if not parallel:  # one sequence, in the checks' order
        guard.run_sequence(checks, timeout, on_outcome=lambda i, o: deliver(i, settle(i, o)), **common)
        return outcomes

    inbox: queue.Queue = queue.Queue()
    stop = threading.Event()
    # Each lane's worker runs its own checks, then helps with the last lane's, which are shared:
    # whichever worker is free takes the next one (_Pool). So the lanes end together, also when the
    # one meant to be short is slowed down or is the long one (module docstring: measured).
    shared = members[max(members)] if len(members[max(members)]) <= _Pool.MOST else []
    own = {lane: [i for i in mine if i not in shared] for lane, mine in members.items()}
    pool: _Pool | None = None  # made in the try below, before any lane starts

    def drive(lane: int) -> None:  # in the lane's thread: everything goes through the inbox
        mine = own[lane]

        def arrived(j: int, outcome: guard.Outcome) -> None:
            index = mine[j] if j < len(mine) else pool.taken(lane, j - len(mine)) if pool else None
            if index is not None:  # None: a slot whose worker died before it took a check
                inbox.put((lane, index, settle(index, outcome)))

        try:
            guard.run_sequence([checks[i] for i in mine] + (pool.slots(lane, checks) if pool else []), timeout,
                               stop=stop, on_outcome=arrived, **common)
        except guard.Stopped:
            pass
        except BaseException as e:  # a KeyboardInterrupt raised by a check, or a bug in dropcheck
            inbox.put((lane, None, e))
        finally:
            inbox.put((lane, None, None))  # this lane is over

    threads = [threading.Thread(target=drive, args=(lane,), name=f"dropcheck-lane-{lane}", daemon=True)
               for lane in members]
    in_order = _InOrder(deliver)
    running = len(threads)
    try:
        pool = _Pool(shared, list(members)) if shared else None
        for t in threads:
            t.start()
        while running:
            try:
                _, index, item = inbox.get(timeout=0.2)  # a timeout, so that Ctrl-C is seen at once
            except queue.Empty:
                continue
            if index is not None:
                in_order.add(index, item)
            elif item is None:
                running -= 1
            else:
                raise item
        # A shared check taken by a worker that died before noting it (a thread the implementation
        # left running can end the worker at any moment) has no outcome: it runs now, alone.
        lost = [i for i in in_order.missing(len(checks)) if i in shared]
        guard.run_sequence([checks[i] for i in lost], timeout,
                           on_outcome=lambda j, o: in_order.add(lost[j], settle(lost[j], o)), **common)
    except BaseException:
        stop.set()
        for t in threads:
            if t.ident is not None:  # started (Ctrl-C may come while they are being started)
                t.join(_JOIN_S)
        while True:  # what came in before the lanes stopped is kept
            try:
                _, index, item = inbox.get_nowait()
            except queue.Empty:
                break
            if index is not None:
                in_order.add(index, item)
        in_order.flush_all()
        raise
    finally:
        if pool is not None:
            pool.close()
    if in_order.next != len(checks):  # a lane ended without an outcome for one of its checks
        raise RuntimeError(f"dropcheck bug: {len(checks) - in_order.next} checks have no outcome after check "
                           f"{in_order.next}; those delivered stand")
    return outcomes


class _InOrder:
    """Holds each outcome until every check before it has delivered its own."""

    def __init__(self, deliver: Callable[[int, guard.Outcome], None]) -> None:
        self.deliver = deliver
        self.waiting: dict[int, guard.Outcome] = {}
        self.next = 0

    def add(self, index: int, outcome: guard.Outcome) -> None:
        self.waiting[index] = outcome
        while self.next in self.waiting:
            self.deliver(self.next, self.waiting.pop(self.next))
            self.next += 1

    def missing(self, total: int) -> list[int]:
        """The checks of `total` with no outcome yet."""
        return [i for i in range(self.next, total) if i not in self.waiting]

    def flush_all(self) -> None:
        """After an interrupt: whatever has come in, in order, gaps and all."""
        for index in sorted(self.waiting):
            self.deliver(index, self.waiting.pop(index))


class _Pool:
    """Checks that any lane's worker may take, each exactly once (see `run_lanes`).

    Their positions are 4-byte tokens in a pipe, written before any worker is forked, its write end
    closed under the fork lock (so that no worker inherits it): a worker takes the next check by
    reading 4 bytes (the kernel serialises the reads of one pipe, so no two workers get the same
    token; an empty pipe, non-blocking, means all are taken). It then notes, in its slot of a
    memory map shared with the parent, which check it took: the parent needs that to name the
    check when a time-out or a crash ended the worker instead of an answer. Each lane has one slot
    per shared check, for the case where it takes them all."""

    MOST = 1024  # tokens: 4 KiB, what any pipe holds, so that writing them never blocks

    def __init__(self, indices: Sequence[int], lanes: Sequence[int]):
        self.indices = list(indices)
        self._first_cell = {lane: n * len(self.indices) for n, lane in enumerate(lanes)}
        cells = len(self.indices) * len(lanes)
        self._taken = mmap.mmap(-1, 4 * cells)  # MAP_SHARED: what a worker writes, the parent reads
        self._taken.write(struct.pack(f"={cells}i", *([-1] * cells)))
        with guard.fork_lock():
            self._read_end, write_end = os.pipe()
            try:
                os.write(write_end, struct.pack(f"={len(self.indices)}i", *range(len(self.indices))))
                os.set_blocking(self._read_end, False)
            except BaseException:
                os.close(self._read_end)
                self._taken.close()
                raise
            finally:
                os.close(write_end)

    def slots(self, lane: int, checks: Sequence[Callable[[], Any]]) -> list[Callable[[], Any]]:
        """A lane's turns at the shared checks: each runs the next one untaken, or ends the lane."""
        return [functools.partial(self._take, lane, slot, checks) for slot in range(len(self.indices))]

    def _take(self, lane: int, slot: int, checks: Sequence[Callable[[], Any]]) -> Any:  # in a worker
        try:
            token = os.read(self._read_end, 4)
        except BlockingIOError:
            token = b""
        if not token:
            return guard.SEQUENCE_END  # all taken: this lane is done
        (k,) = struct.unpack("=i", token)
        struct.pack_into("=i", self._taken, 4 * (self._first_cell[lane] + slot), k)
        return checks[self.indices[k]]()

    def taken(self, lane: int, slot: int) -> int | None:
        """The check a lane's slot took (its index in the run), or None if it took none."""
        (k,) = struct.unpack_from("=i", self._taken, 4 * (self._first_cell[lane] + slot))
        return self.indices[k] if 0 <= k < len(self.indices) else None

    def close(self) -> None:
        os.close(self._read_end)
        self._taken.close()
