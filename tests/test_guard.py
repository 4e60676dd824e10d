"""dropcheck.guard on its own: a sequence of checks in one persistent forked worker.

The worker runs the checks of a run one after another; it is replaced only after a check that
timed out, crashed or ran out of memory, and the checks after that one still run. These tests say
so with tiny checks (most return the worker's pid, which shows which process ran them);
tests/test_hostile.py shows the same through whole runs with hostile implementations.
"""
from __future__ import annotations

import ctypes
import faulthandler
import os
import threading
import time

import pytest

from dropcheck import guard, lanes
from dropcheck.runner import run_check
from tests import hostile_impls as hostile
from tests.conftest import join_reapers, needs_fork, needs_main_thread

TIMEOUT = 1.0  # seconds; every check here that should finish takes milliseconds
# Checks that fill hundreds of MiB take 0.1-0.3 s alone, but over 1 s when the 2 cores are shared with
# other test workers (two such failures in a loaded full suite): the limit under test is memory, not time.
MEMORY_TIMEOUT = 20.0


def pid() -> int:
    return os.getpid()


def hang() -> None:
    time.sleep(3600)


def segfault() -> None:
    faulthandler.disable()  # pytest enables it; its dump of the crash would only clutter the test log
    ctypes.string_at(0)


def exit_3() -> None:
    os._exit(3)


_counter = [0]


def count() -> int:
    _counter[0] += 1
    return _counter[0]


_kept: list = []


def keep_mib(n: int):
    def check() -> int:
        _kept.append(bytearray(n << 20))  # zero-filled, so touched: real memory, not only address space
        return os.getpid()
    return check


def run(checks, **kw):
    """Run `checks` forked; returns [(status, value or message)] and the (index, status) pairs in the
    order on_outcome saw them."""
    seen = []
    kw = {"timeout": TIMEOUT, "mechanism": "fork", "memory_limit_mb": None, **kw}
    outcomes = guard.run_sequence(checks, on_outcome=lambda i, o: seen.append((i, o.status)), **kw)
    assert [i for i, _ in seen] == list(range(len(checks))), f"one outcome per check, in order: {seen}"
    return [(o.status, o.value if o.status == "ok" else o.message) for o in outcomes]


@pytest.fixture
def forks(monkeypatch):
    """Counts the forks made in this process (the worker's own forks, if any, are not seen here)."""
    made: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        child = real_fork()
        if child:
            made.append(child)
        return child

    monkeypatch.setattr(os, "fork", counting_fork)
    return made


# ---- one worker for a run without failures ----------------------------------------------------------------
@needs_fork
def test_checks_run_in_order_in_one_worker(forks):
    got = run([pid, pid, pid, lambda: 6 * 7])
    assert [s for s, _ in got] == ["ok"] * 4 and got[3][1] == 42, got
    assert len({v for _, v in got[:3]}) == 1 and got[0][1] != os.getpid(), f"one worker, not this process: {got}"
    assert forks == [got[0][1]], f"exactly one fork for a run without failures: {forks}"


@needs_fork
def test_a_finished_worker_is_reaped_in_the_background(forks):
    got = run([pid, pid])
    assert [s for s, _ in got] == ["ok", "ok"], got
    assert not join_reapers(10), "a reaper thread still runs after 10 s"
    with pytest.raises(ChildProcessError):
        os.waitpid(forks[0], os.WNOHANG)  # reaped: no zombie left behind


@needs_fork
def test_state_carries_from_one_check_to_the_next_within_a_worker():
    """The documented trade-off (module docstring): as in-process, unlike a fork per check."""
    _counter[0] = 0
    assert run([count, count, count]) == [("ok", 1), ("ok", 2), ("ok", 3)]
    assert _counter[0] == 0, "and none of it reaches this process"


@needs_fork
@pytest.mark.parametrize("profile,contract", [("quick", "inverted"), ("quick", "channel")])
def test_a_whole_run_without_failures_forks_once_per_lane(profile, contract, forks):
    """One worker per lane (dropcheck.lanes: exact, statistical; one lane on a single CPU), and for a
    channel contract one before them for the rank probe."""
    target = "torch.nn:Dropout2d" if contract == "channel" else "reference_impls.inverted:InvertedDropout"
    result = run_check(target, contract=contract, profile=profile, ps=[0.5])
    assert result.ok, result.summary()
    expected = (2 if lanes.usable_cpus() >= 2 else 1) + (contract == "channel")
    assert len(forks) == expected, f"{len(result.verdicts)} checks in {expected} workers, not {len(forks)}"
    if contract == "channel":
        assert result.spatial_rank == 2, "the probe ran in the worker and its rank reached the checks"


def test_verdicts_of_a_run_do_not_depend_on_the_checks_before_them():
    """What carries over within a worker does not change a verdict: `--only ID` replays the full
    run's verdict (every check seeds what it draws)."""
    def strip(v):
        return {k: val for k, val in v.to_dict().items() if k != "duration_s"}

    full = run_check("reference_impls.inverted:InvertedDropout", profile="quick", ps=[0.3])
    for v in full.verdicts[-3:]:
        alone = run_check("reference_impls.inverted:InvertedDropout", profile="quick", ps=[0.3], only=[v.property_id])
        assert [strip(x) for x in alone.verdicts] == [strip(v)], v.property_id


@needs_fork
def test_a_hanging_channel_probe_costs_only_itself(forks):
    """The channel-rank probe is the first check of the sequence: if it hangs, rank 1 is assumed and
    the checks go on in a fresh worker."""
    result = run_check(hostile.spins_in_train, contract="channel", profile="quick", ps=[0.5], only=["P-INVALID"],
                       timeout=TIMEOUT)
    assert [(v.property_id, v.status.value) for v in result.verdicts] == [("P-INVALID", "pass")], result.summary()
    assert result.spatial_rank == 1 and len(forks) == 2, (result.spatial_rank, forks)


# ---- a failure costs only its own check --------------------------------------------------------------------
@needs_fork
def test_after_a_timeout_the_next_check_runs_in_a_fresh_worker(forks):
    start = time.monotonic()
    got = run([pid, hang, pid, pid])
    assert [s for s, _ in got] == ["ok", "timeout", "ok", "ok"], got
    assert got[2][1] != got[0][1] and got[2][1] == got[3][1], f"a new worker after the timeout, and only one: {got}"
    assert len(forks) == 2 and time.monotonic() - start < TIMEOUT + 3, forks


@needs_fork
@pytest.mark.parametrize("crash,needle", [(segfault, "killed by SIGSEGV"), (exit_3, "exit code 3")], ids=["segfault", "os._exit"])
def test_a_crash_loses_no_other_check(crash, needle, forks):
    got = run([pid, crash, pid, crash, crash, pid])
    assert [s for s, _ in got] == ["ok", "crashed", "ok", "crashed", "crashed", "ok"], got
    assert needle in got[1][1] and needle in got[4][1], got
    assert len(forks) == 4, f"a worker at the start and one after each crash: {forks}"


@needs_fork
def test_timed_out_worker_is_killed_and_reaped(forks):
    got = run([hang, pid])
    assert [s for s, _ in got] == ["timeout", "ok"], got
    hung = forks[0]
    with pytest.raises(ChildProcessError):
        os.waitpid(hung, os.WNOHANG)  # already reaped: no zombie left behind
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)


@needs_fork
def test_a_hang_after_a_timeout_times_out_too(forks):
    got = run([hang, hang, pid], timeout=0.5)
    assert [s for s, _ in got] == ["timeout", "timeout", "ok"] and len(forks) == 3, got


@needs_fork
def test_exception_escaping_a_check_is_raised_and_the_worker_goes_on(forks):
    def exits():
        raise SystemExit(4)

    got = run([pid, exits, pid])
    assert got[1] == ("raised", "SystemExit: 4") and got[0][1] == got[2][1] and len(forks) == 1, got


@needs_fork
def test_unpicklable_result_is_an_error_and_the_worker_goes_on():
    got = run([lambda: threading.Lock(), pid])
    assert got[0][0] == "raised" and "could not be sent back" in got[0][1] and got[1][0] == "ok", got


def test_a_late_result_is_a_timeout_never_a_value():
    assert guard._outcome(("ok", "value"), elapsed=2.0, timeout=1.0).status == "timeout"
    assert guard._outcome(("ok", "value"), elapsed=0.5, timeout=1.0).value == "value"


# ---- memory ---------------------------------------------------------------------------------------------------
@needs_fork
def test_out_of_memory_errors_that_check_and_the_next_gets_a_fresh_worker():
    def hog():
        while True:
            _kept.append(bytearray(32 << 20))

    got = run([pid, hog, pid], memory_limit_mb=256, timeout=MEMORY_TIMEOUT)
    assert got[1] == ("raised", "MemoryError"), got
    assert got[2][0] == "ok" and got[2][1] != got[0][1], f"the memory hog's worker is not reused: {got}"
    assert not _kept, "the memory was taken in the worker, not here"


@needs_fork
def test_fresh_worker_after_says_when_a_result_needs_a_new_worker():
    got = run([pid, lambda: "spent", pid, pid], fresh_worker_after=lambda value: value == "spent")
    assert got[1] == ("ok", "spent") and got[2][1] != got[0][1] and got[2][1] == got[3][1], got


@needs_fork
def test_each_check_may_grow_by_the_limit_from_its_own_start():
    """The limit is set again before each check: memory kept by an earlier check in the same worker
    does not eat into a later check's allowance."""
    got = run([keep_mib(100), keep_mib(200), pid], memory_limit_mb=256, timeout=MEMORY_TIMEOUT)
    assert [s for s, _ in got] == ["ok", "ok", "ok"], got
    assert got[0][1] == got[1][1], "100 MiB kept is less than half the limit: same worker"
    assert got[2][1] != got[1][1], "300 MiB kept is more than half the limit: the next check gets a fresh worker"


# ---- Ctrl-C ---------------------------------------------------------------------------------------------------
@needs_fork
def test_interrupt_stops_the_worker_and_keeps_the_outcomes_so_far(forks):
    def interrupt():
        raise KeyboardInterrupt

    seen = []
    with pytest.raises(KeyboardInterrupt):
        guard.run_sequence([pid, interrupt, pid], TIMEOUT, mechanism="fork",
                           on_outcome=lambda i, o: seen.append((i, o.status)))
    assert seen == [(0, "ok")], seen
    with pytest.raises(ChildProcessError):
        os.waitpid(forks[0], os.WNOHANG)


@needs_fork
def test_each_outcome_is_reported_as_soon_as_its_check_ends():
    """Progress output is driven by these calls: the first comes while the second check still runs."""
    start = time.monotonic()
    when = []
    guard.run_sequence([pid, lambda: time.sleep(0.8)], 5, mechanism="fork",
                       on_outcome=lambda i, o: when.append(time.monotonic() - start))
    assert when[0] < 0.5 and when[1] >= 0.8, when


# ---- in-process mechanisms: the same contract, one loop ----------------------------------------------------------
@needs_main_thread
def test_alarm_sequence_times_out_one_check_and_runs_the_next():
    def spin() -> None:
        while True:  # a Python loop that never ends
            pass

    outcomes = guard.run_sequence([pid, spin, pid], TIMEOUT, mechanism="alarm")
    assert [o.status for o in outcomes] == ["ok", "timeout", "ok"], outcomes
    assert outcomes[0].value == outcomes[2].value == os.getpid(), "in this process"


def test_messages_are_framed_pickles():
    """The wire format the worker writes: an 8-byte little-endian length, then a pickle."""
    read_end, write_end = os.pipe()
    try:
        guard._send(write_end, ("start", 3, 1.5))
        channel = guard._Channel(read_end, os.getpid())
        assert channel.receive(time.monotonic() + 1) == ("start", 3, 1.5)
        os.write(write_end, (5).to_bytes(8, "little") + b"junk!")
        with pytest.raises(guard._Unreadable):
            channel.receive(time.monotonic() + 1)
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("mechanism", [pytest.param("fork", marks=needs_fork), "alarm"])
def test_a_check_that_returns_sequence_end_ends_the_sequence_there(mechanism, tmp_path):
    ran_after = tmp_path / "ran"  # a file: the fork variant's checks run in another process
    outcomes = guard.run_sequence([pid, lambda: guard.SEQUENCE_END, ran_after.touch], TIMEOUT,
                                  mechanism=mechanism, memory_limit_mb=None)
    assert [o.status for o in outcomes] == ["ok"], f"expected one outcome (the check before the end), got {outcomes}"
    assert not ran_after.exists(), "the check after SEQUENCE_END ran"
