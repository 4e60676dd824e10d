"""dropcheck.lanes: two sequences of checks side by side, each in its own worker, delivered in order.

Tiny checks again (see tests/test_guard.py): most sleep or return the worker's pid. The lanes are
forced side by side (`parallel=True`) where the test is about that, so that they run so on a
single-CPU machine too (sleeping needs no CPU).
"""
from __future__ import annotations

import math
import os
import stat
import threading
import time

import pytest

from dropcheck import guard, lanes, registry, runner, statistical
from dropcheck.hangs import HangStreak
from dropcheck.runner import run_check
from dropcheck.targets import CallMeter, resolve_dropout
from tests.conftest import needs_fork, needs_main_thread
from tests.test_guard import exit_3, forks, hang, pid  # noqa: F401  (forks: a fixture)

TIMEOUT = 5.0


def sleeper(seconds: float):
    def check() -> int:
        time.sleep(seconds)
        return os.getpid()
    return check


def interrupt_after(seconds: float):
    def check() -> None:
        time.sleep(seconds)
        raise KeyboardInterrupt
    return check


def run(lane_checks, **kw):
    """Run the lanes (a list of check lists, lane 0 first) forked and side by side; returns
    ([[(status, value or message)] per lane], the checks' indices in the order on_outcome saw them,
    seconds taken). The checks are numbered lane after lane."""
    checks = [c for lane in lane_checks for c in lane]
    lane_of = [i for i, lane in enumerate(lane_checks) for _ in lane]
    seen = []
    kw = {"timeout": TIMEOUT, "mechanism": "fork", "memory_limit_mb": None, "parallel": True, **kw}
    start = time.monotonic()
    outcomes = lanes.run_lanes(checks, lane_of, on_outcome=lambda i, o: seen.append(i), **kw)
    took = time.monotonic() - start
    got = [(o.status, o.value if o.status == "ok" else o.message) for o in outcomes]
    return [[g for g, of in zip(got, lane_of) if of == i] for i in range(len(lane_checks))], seen, took


@needs_fork
def test_lanes_run_at_the_same_time_in_their_own_workers():
    got, _, took = run([[sleeper(0.8)], [sleeper(0.8)]])
    (s0, pid0), (s1, pid1) = got[0][0], got[1][0]
    assert s0 == s1 == "ok" and pid0 != pid1 and os.getpid() not in (pid0, pid1), got
    assert took < 1.4, f"two 0.8 s checks side by side should take about 0.8 s, took {took:.2f} s"


@needs_fork
def test_outcomes_come_in_the_checks_order_whichever_lane_is_faster():
    seen = []
    outcomes = lanes.run_lanes([sleeper(0.6), pid, pid, pid], [0, 1, 1, 0], TIMEOUT, mechanism="fork",
                               memory_limit_mb=None, parallel=True, on_outcome=lambda i, o: seen.append(i))
    assert seen == [0, 1, 2, 3], f"checks 1 and 2 (lane 1) ended first, but wait for check 0: {seen}"
    assert all(o.status == "ok" for o in outcomes) and outcomes[1].value == outcomes[2].value != outcomes[0].value


@needs_fork
def test_a_hang_in_one_lane_costs_the_other_nothing():
    got, _, took = run([[hang, pid], [sleeper(0.3), pid]], timeout=1.0)
    assert [s for s, _ in got[0]] == ["timeout", "ok"] and [s for s, _ in got[1]] == ["ok", "ok"], got
    assert took < 1.9, f"the lanes' waits overlap: about 1 s in all, took {took:.2f} s"


@needs_fork
def test_a_crash_in_one_lane_loses_nothing_in_either():
    got, _, _ = run([[pid, exit_3, pid], [pid, sleeper(0.5)]])
    assert [s for s, _ in got[0]] == ["ok", "crashed", "ok"] and "exit code 3" in got[0][1][1], got
    assert [s for s, _ in got[1]] == ["ok", "ok"], got


def waits_for(path, limit_s: float = 30.0):
    """A check that returns its pid once `path` exists: a lane held until the other has begun."""
    def check() -> int:
        deadline = time.monotonic() + limit_s
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return os.getpid()
    return check


def begins_then_sleeps(path, seconds: float):
    """A check that creates `path` (releasing `waits_for`), then sleeps; returns its pid."""
    def check() -> int:
        path.touch()
        time.sleep(seconds)
        return os.getpid()
    return check


@needs_fork
def test_a_lane_done_early_takes_the_other_lanes_waiting_checks(tmp_path):
    # Lane 0 is held until lane 1's worker has taken the first shared check, which then sleeps 2 s;
    # lane 0, free again, takes the three waiting behind it.
    began = tmp_path / "began"
    got, seen, _ = run([[waits_for(began)], [begins_then_sleeps(began, 2.0), pid, pid, pid]])
    lane0_pid, sleeper_pid = got[0][0][1], got[1][0][1]
    helped = [value for _, value in got[1][1:]]
    assert helped == [lane0_pid] * 3 and sleeper_pid != lane0_pid, (
        f"expected lane 0's worker (pid {lane0_pid}) to run the three checks waiting behind the sleeper "
        f"(pid {sleeper_pid}), got pids {helped}")
    assert seen == [0, 1, 2, 3, 4], f"outcomes still come in the checks' order: {seen}"


@needs_fork
def test_a_shared_check_that_hangs_or_crashes_gets_its_own_outcome_whoever_ran_it(tmp_path):
    # As above: lane 1's worker sleeps 1.5 s in the first shared check while lane 0 takes the hang,
    # whose 2 s limit runs beside the sleep; then the crash and the last one go to whichever is free.
    began = tmp_path / "began"
    got, _, took = run([[waits_for(began)], [begins_then_sleeps(began, 1.5), hang, exit_3, pid]], timeout=2.0)
    assert [s for s, _ in got[1]] == ["ok", "timeout", "crashed", "ok"], got
    assert took < 3.3, f"the 2 s time-out runs beside the 1.5 s sleep: expected about 2.1 s, not 3.5+, took {took:.2f} s"


@needs_fork
def test_a_shared_check_lost_with_its_worker_runs_again_at_the_end(monkeypatch):
    # The first worker to take a shared check dies before noting which one it took, as it would if
    # a thread the implementation left running ended the process at that moment.
    real_take = lanes._Pool._take

    def take_then_die(self, lane, slot, checks):
        if lane == 1 and slot == 0:
            os.read(self._read_end, 4)
            os._exit(9)
        return real_take(self, lane, slot, checks)

    monkeypatch.setattr(lanes._Pool, "_take", take_then_die)
    got, seen, _ = run([[sleeper(0.3)], [pid, pid, pid]])
    assert [s for lane in got for s, _ in lane] == ["ok"] * 4, got
    assert seen == [0, 1, 2, 3], f"every check has its outcome, in order: {seen}"


@needs_fork
def test_an_interrupt_in_one_lane_stops_both_and_keeps_what_came_in(forks):  # noqa: F811
    seen = []
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        lanes.run_lanes([pid, hang, interrupt_after(0.5), pid], [0, 0, 1, 1], 60, mechanism="fork",
                        memory_limit_mb=None, parallel=True, on_outcome=lambda i, o: seen.append((i, o.status)))
    took = time.monotonic() - start
    assert seen == [(0, "ok")], f"lane 0's first check had ended; nothing else had: {seen}"
    assert took < 5, f"the hang in lane 0 was stopped at once, not waited for: {took:.1f} s"
    assert len(forks) == 2
    for child in forks:  # killed and reaped: no zombie is left
        with pytest.raises(ChildProcessError):
            os.waitpid(child, os.WNOHANG)


def _pipes_open() -> int:
    """How many of this process's descriptors are pipes."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += stat.S_ISFIFO(os.fstat(int(fd)).st_mode)
        except OSError:
            pass
    return count


@needs_fork
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_a_worker_holds_no_pipe_of_the_other_lane():
    """Else a worker would keep the other lane's pipe open after that lane's worker died."""
    alone, _, _ = run([[_pipes_open]])
    # Lane 1's crash makes it fork a second worker while lane 0's worker (sleeping) holds its pipe.
    beside, _, _ = run([[sleeper(1.5)], [sleeper(0.2), exit_3, _pipes_open]])
    assert beside[1][1][0] == "crashed" and beside[1][2] == alone[0][0], \
        f"pipes open in a worker alone: {alone[0][0][1]}; forked beside another lane's: {beside[1][2][1]}"


@needs_fork
def test_one_after_the_other_when_told_or_on_one_cpu(monkeypatch):
    got, seen, took = run([[sleeper(0.4)], [sleeper(0.4)]], parallel=False)
    assert seen == [0, 1] and took >= 0.8 and got[0][0][1] == got[1][0][1], f"one worker, in turn: {got} {took}"
    monkeypatch.setattr(lanes, "usable_cpus", lambda: 1)
    assert not lanes.side_by_side("fork", 2)
    assert lanes.side_by_side("alarm", 2) is False and lanes.side_by_side("fork", 1) is False


@pytest.mark.parametrize("parallel", [None, True])
def test_in_process_mechanisms_run_the_lanes_in_turn(parallel):
    """Even when told otherwise: SIGALRM limits only the main thread, and checks seed one global RNG."""
    def where() -> tuple[int, str]:
        return os.getpid(), threading.current_thread().name

    got, seen, _ = run([[where], [where]], mechanism="alarm" if guard.choose_mechanism("cpu") != "none" else "none",
                       parallel=parallel)
    here = ("ok", (os.getpid(), threading.main_thread().name))
    assert got == [[here], [here]] and seen == [0, 1], f"in this process's main thread, in turn: {got}"


@needs_fork
def test_a_run_gives_the_same_verdicts_side_by_side_as_one_after_the_other(monkeypatch):
    def strip(result):
        return [{k: v for k, v in d.items() if k != "duration_s"} for d in result.to_dict()["verdicts"]]

    target = "reference_impls.inverted:InvertedDropout"
    monkeypatch.setattr(lanes, "usable_cpus", lambda: 2)
    beside = run_check(target, profile="quick", ps=[0.3])
    monkeypatch.setattr(lanes, "usable_cpus", lambda: 1)
    serial = run_check(target, profile="quick", ps=[0.3])
    assert beside.limits["lanes"] == {"cpu": "side by side"} and serial.limits["lanes"] == {"cpu": "one after the other"}
    assert beside.ok and strip(beside) == strip(serial)


@pytest.mark.parametrize("property_id", [p.id for p in registry.for_contract("inverted", "statistical")])
def test_the_second_lane_properties_cost_the_implementation_little_and_the_others_much(property_id):
    """The runner's lane split rests on this (statistical.SECOND_LANE, runner.lane_of): one or two
    calls, or calls on at most 2048 units, against many calls on large inputs."""
    target = resolve_dropout("reference_impls.inverted:InvertedDropout")
    target.meter = CallMeter()
    result = run_check(target, profile="quick", ps=[0.5], only=[property_id])
    assert result.ok, result.summary()
    calls, largest = target.meter.calls, max(math.prod(shape) for shape, _, _ in target.meter.log)
    if property_id in statistical.SECOND_LANE:
        assert calls <= 2 or largest <= statistical.EDGE_MAX_UNITS, (calls, largest)
        assert runner.lane_of(property_id, 0.5) == 1
    else:
        assert calls > 2 and largest > statistical.EDGE_MAX_UNITS and runner.lane_of(property_id, 0.5) == 0, (calls, largest)


def test_bad_lane_numbers_are_refused():
    with pytest.raises(ValueError, match="2 checks but 1 lane numbers"):
        lanes.run_lanes([pid, pid], [0])


# ---- samples that time out in a row (dropcheck.hangs) -------------------------------------------------------
def statuses(lane_checks, groups=None, parallel=True, timeout=0.5):
    checks = [c for lane in lane_checks for c in lane]
    lane_of = [i for i, lane in enumerate(lane_checks) for _ in lane]
    start = time.monotonic()
    outcomes = lanes.run_lanes(checks, lane_of, timeout, mechanism="fork", memory_limit_mb=None, parallel=parallel,
                               hangs=HangStreak(), groups=groups)
    return [o.status for o in outcomes], time.monotonic() - start


@needs_fork
def test_after_three_counted_timeouts_in_a_row_the_counted_checks_left_are_not_run():
    got, took = statuses([[pid, hang, hang, hang, pid, hang, pid]], parallel=False)
    assert got == ["ok", "timeout", "timeout", "timeout", "not-run", "not-run", "not-run"], got
    assert took < 3 * 0.5 + 2, f"took {took:.1f} s"


@needs_fork
def test_a_counted_check_that_ends_resets_the_count():
    got, _ = statuses([[hang, hang, pid, hang, hang, pid]], parallel=False)
    assert got == ["timeout", "timeout", "ok", "timeout", "timeout", "ok"], got


@needs_fork
def test_checks_not_counted_neither_count_nor_stop():
    """The exact properties (group None) neither count nor reset the streak, and always run: an
    implementation that hangs in eval mode only never stops its samples."""
    got, _ = statuses([[hang, hang, hang, hang, pid, hang, hang]], groups=[None, None, None, "A", "A", None, None],
                      parallel=False)
    assert got == ["timeout"] * 4 + ["ok", "timeout", "timeout"], got


@needs_fork
def test_after_the_streak_only_properties_that_timed_out_are_not_run():
    """Once tripped, a property that timed out is not run again (A), but a property's first sample
    still runs (D, which a slow implementation may finish), and the exact checks too (None)."""
    got, _ = statuses([[hang, hang, hang, pid, hang, hang, pid]], groups=["A", "B", "C", None, "A", "D", "E"],
                      parallel=False)
    assert got == ["timeout"] * 3 + ["ok", "not-run", "timeout", "ok"], got


@needs_fork
def test_lanes_share_one_count_of_timeouts():
    """Both lanes hang (the second lane's checks are shared, dropcheck.lanes._Pool): their timeouts
    count together, so the run stops after two rounds of them, not three rounds per lane."""
    got, took = statuses([[hang] * 5, [hang] * 5])
    assert got.count("timeout") in (3, 4) and got.count("not-run") == 10 - got.count("timeout"), got
    assert took < 2 * 0.5 + 2, f"took {took:.1f} s"


@needs_main_thread
def test_in_process_checks_stop_after_three_counted_timeouts_too():
    outcomes = lanes.run_lanes([hang, hang, hang, pid], [0, 0, 0, 0], 0.3, mechanism="alarm", hangs=HangStreak())
    assert [o.status for o in outcomes] == ["timeout"] * 3 + ["not-run"], outcomes
