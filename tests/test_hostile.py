"""Hostile inputs: broken targets, raising, hanging, crashing and lying implementations, bad options,
Ctrl-C. Whatever the implementation under test does, dropcheck must finish, say precisely what
happened (exit code and message), and keep every result it had.

The implementations are in tests/hostile_impls.py; TARGET problems are real files in tmp_path.
Time limits here are 1 s, so the whole module runs in well under a minute.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import dropcheck
from dropcheck import guard, lanes
from dropcheck.cli import main
from dropcheck.options import CHECK_OPTIONS
from dropcheck.runner import run_check
from dropcheck.targets import TargetError
from dropcheck.verdict import Status
from tests import hostile_impls as hostile
from tests.conftest import join_reapers, needs_fork, needs_main_thread

REPO = Path(__file__).resolve().parent.parent
HOSTILE_FILE = Path(hostile.__file__)



def check(impl, only, **kw):
    kw = {"ps": [0.5], "profile": "quick", "timeout": 30, **kw}
    return run_check(impl, only=only, **kw)


def status_of(result) -> dict[str, str]:
    """property ID → status; each test here runs one p, so each ID has one verdict."""
    return {v.property_id: v.status.value for v in result.verdicts}


def verdict(result, property_id):
    return next(v for v in result.verdicts if v.property_id == property_id)


def cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def gone(pid: int, wait_s: float = 5.0) -> bool:
    """The process no longer runs (absent, or a zombie waiting for its reaper)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# ---- TARGET problems: exit 2, one line naming TARGET and the problem, traceback only with --verbose -----
TARGET_CASES = {
    # name: (file contents or None for no file, NAME, extra argv, expected text)
    "missing-file": (None, "f", [], "does not exist"),
    "syntax-error": ("def f(x, p, training:\n    return x\n", "f", [], "syntax error in"),
    "raises-on-import": ("raise RuntimeError('needs a GPU\\nand a licence')\n", "f", [], "raised RuntimeError: needs a GPU and a licence"),
    "exits-on-import": ("import sys\nsys.exit(5)\n", "f", [], "called sys.exit(5)"),
    "hangs-on-import": ("import time\ntime.sleep(3600)\n", "f", ["--timeout", "1"], "did not finish within 1 s"),
    # os._exit(0) would otherwise end dropcheck at once with exit 0 and no output: a silent pass in CI.
    "os-exits-on-import": ("import os\nos._exit(0)\n", "f", [], "called os._exit(0)"),
    "missing-name": ("def g(x, p, training):\n    return x\n", "f", [], "has no attribute 'f'"),
    "class-not-module": ("class f:\n    pass\n", "f", [], "is a class but not an nn.Module subclass"),
    "not-callable": ("f = 3\n", "f", [], "expected an nn.Module subclass or a function"),
    "wrong-signature": ("def f(x):\n    return x\n", "f", [], "cannot be called as f(input, p, training)"),
    "constructor-rejects-p": ("import torch\nclass f(torch.nn.Module):\n    def __init__(self, p, q):\n        super().__init__()\n",
                              "f", [], "constructor rejects p"),
    "constructor-os-exits": ("import os, torch\nclass f(torch.nn.Module):\n    def __init__(self, p):\n        os._exit(0)\n",
                             "f", [], "called os._exit(0)"),
    "constructor-hangs": ("import time, torch\nclass f(torch.nn.Module):\n    def __init__(self, p):\n        time.sleep(3600)\n",
                          "f", ["--timeout", "1"], "did not finish within 1 s"),
}


@needs_main_thread
@pytest.mark.parametrize("case", list(TARGET_CASES))
def test_target_problem_exits_2_with_one_line_naming_target(case, tmp_path, capsys):
    source, name, extra, needle = TARGET_CASES[case]
    path = tmp_path / f"target_{case.replace('-', '_')}.py"
    if source is not None:
        path.write_text(source)
    spec = f"{path}:{name}"
    code, out, err = cli(["check", spec, "--only", "EVAL-IDENTITY", *extra], capsys)
    assert code == 2, f"{case}: expected exit 2, got {code}: {err!r}"
    assert err.count("\n") == 1 and spec in err and needle in err, f"{case}: expected one line naming {spec} and {needle!r}: {err!r}"
    assert "Traceback" not in err and out == "", f"{case}: no traceback and no run without --verbose: {out!r} {err!r}"
    code, _, err = cli(["check", spec, "--only", "EVAL-IDENTITY", "--verbose", *extra], capsys)
    assert code == 2 and "Traceback" in err and needle in err, f"{case}: --verbose should add the traceback: {err!r}"


@needs_main_thread
def test_an_os_exit_while_building_is_a_target_error_from_the_api_too(tmp_path):
    path = tmp_path / "exits_when_built.py"
    path.write_text("import os, torch\nclass D(torch.nn.Module):\n    def __init__(self, p):\n        os._exit(0)\n")
    with pytest.raises(TargetError, match=r"called os\._exit\(0\)"):
        dropcheck.check(f"{path}:D", only=["EVAL-IDENTITY"])


@needs_fork
def test_what_the_implementation_prints_goes_to_stderr_not_among_the_verdicts(tmp_path):
    impl = tmp_path / "chatty.py"
    impl.write_text("import torch\ndef f(x, p, training):\n    print('called with', tuple(x.shape))\n"
                    "    return torch.nn.functional.dropout(x, p, training)\n")
    run = subprocess.run([sys.executable, "-m", "dropcheck", "check", f"{impl}:f", "--only", "EVAL-IDENTITY,DROP-RATE",
                          "--profile", "quick"], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "called with" not in run.stdout and "PASS    DROP-RATE" in run.stdout, run.stdout
    assert "called with" in run.stderr, run.stderr[-2000:]


@needs_fork
def test_os_exit_is_intercepted_only_in_the_thread_running_the_target():
    from dropcheck import targets

    real = os._exit
    with pytest.raises(TargetError, match=r"called os\._exit\(3\)"), targets.target_code("t", None, "building it"):
        os._exit(status=3)  # the keyword form too
    assert os._exit is real
    # Another thread's os._exit meanwhile ends its process for real (pytest-timeout's thread method relies on it).
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        threading.Thread(target=lambda: (time.sleep(0.2), os._exit(7))).start()
        with targets.target_code("t", None, "building it"):
            time.sleep(5)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
    # Threads leaving in another order than they came in still put the real os._exit back.
    inside, leave = threading.Event(), threading.Event()

    def first():
        with targets.target_code("t", None, "building it"):
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=first)
    t.start()
    inside.wait(5)
    with targets.target_code("t", None, "building it"):
        pass
    leave.set()
    t.join(5)
    assert os._exit is real


def test_missing_module_exits_2(capsys):
    code, _, err = cli(["check", "no_such_module_dropcheck_xyz:Thing"], capsys)
    assert code == 2 and "no module named 'no_such_module_dropcheck_xyz'" in err and err.count("\n") == 1, err


# ---- implementations that raise on some inputs: ERROR with the exception, the rest still runs, exit 1 ------
@pytest.mark.parametrize("impl,erroring,needle", [
    (hostile.raises_on_half, "SUPPORT-SCALE", "TypeError: half precision is not supported"),
    (hostile.raises_at_p_one, "P-ONE", "RuntimeError: p = 1 would divide by zero"),
    (hostile.raises_on_empty, "EVAL-IDENTITY", "ValueError: cannot drop out of an empty tensor"),
])
def test_raising_implementation_errors_that_property_only(impl, erroring, needle):
    only = ["EVAL-IDENTITY", "SUPPORT-SCALE", "P-ONE", "P-INVALID", "DROP-RATE"]
    result = check(impl, only)
    got = status_of(result)
    assert list(got) == only, f"every property must still run: {got}"
    v = verdict(result, erroring)
    assert v.status is Status.ERROR and needle in v.summary, f"{erroring} should be an error naming {needle!r}: {v.summary}"
    assert got["DROP-RATE"] == "pass" and got["P-INVALID"] == "pass", f"the other properties still pass: {got}"
    assert not result.ok


def test_raising_implementation_exits_1_from_the_cli(capsys):
    code, out, _ = cli(["check", f"{HOSTILE_FILE}:raises_at_p_one", "--only", "P-ONE,EVAL-IDENTITY", "--profile", "quick"], capsys)
    assert code == 1 and "ERROR" in out and "p = 1 would divide by zero" in out and "PASS    EVAL-IDENTITY" in out, out


# ---- hangs and slowness: TIMEOUT, the run goes on, nothing left behind ----------------------------------------
def test_hanging_implementations_time_out_and_the_run_goes_on(capsys):
    # P-INVALID, between the two hanging properties, takes milliseconds: it passes however loaded the machine is.
    argv = ["check", f"{HOSTILE_FILE}:spins_in_train", "--only", "SUPPORT-SCALE,P-INVALID,DROP-RATE",
            "--p", "0.5", "--profile", "quick", "--timeout", "1"]
    start = time.monotonic()
    code, out, _ = cli(argv, capsys)
    assert code == 1, out
    lines = {line.split()[1]: line for line in out.splitlines() if line[:7].strip() in {s.value.upper() for s in Status}}
    assert lines["SUPPORT-SCALE"].startswith("TIMEOUT") and "did not finish within the 1 s limit" in lines["SUPPORT-SCALE"], out
    assert lines["DROP-RATE"].startswith("TIMEOUT") and "sample could not be completed" in lines["DROP-RATE"], out
    assert lines["P-INVALID"].startswith("PASS"), out
    assert "2 timed out" in out and time.monotonic() - start < 15, out
    # The replay lines keep the run's limit: replayed under the default 60 s, each would wait 60 s.
    replays = [line.split("replay: ", 1)[1] for line in out.splitlines() if "replay: " in line]
    assert len(replays) == 2 and all(" --timeout 1 " in r for r in replays), replays


def test_samples_that_keep_timing_out_are_not_retried_at_every_p(capsys, tmp_path):
    """Every train call hangs: after 3 samples in a row time out (dropcheck.hangs), a property whose
    sample timed out is not run at its other p's (INCONCLUSIVE, with a replay line); each property's
    first sample and every exact property still run. Before this, the run took 32 time limits."""
    report = tmp_path / "r.json"
    start = time.monotonic()
    code, out, _ = cli(["check", f"{HOSTILE_FILE}:sleeps_in_train", "--profile", "quick", "--timeout", "1",
                        "--json", str(report)], capsys)
    took = time.monotonic() - start
    verdicts = json.loads(report.read_text())["verdicts"]
    not_run = [v for v in verdicts if v["status"] == "inconclusive"]
    timed_out = {(v["property"], v["p"]) for v in verdicts if v["status"] == "timeout"}
    assert code == 1 and len(not_run) >= 10, out
    for v in not_run:
        assert v["p"] is not None and any(pid == v["property"] and p != v["p"] for pid, p in timed_out), v
        assert v["summary"].startswith("not run: the last 3 statistical samples to end before it all ran out of time"), v
        assert v["evidence"]["not_run"] and "--only" in v["replay"], v
    assert took < 25, f"took {took:.1f} s: {out}"


@pytest.mark.parametrize("impl", [hostile.sleeps_in_train, hostile.slow_in_train], ids=["sleeps-an-hour", "slow"])
def test_sleeping_or_slow_sample_is_timeout_never_pass(impl):
    result = check(impl, ["P-INVALID", "DROP-RATE", "INDEP-CALLS"], timeout=1)
    got = status_of(result)
    assert got == {"P-INVALID": "pass", "DROP-RATE": "timeout", "INDEP-CALLS": "timeout"}, result.summary()
    for pid in ("DROP-RATE", "INDEP-CALLS"):
        v = verdict(result, pid)
        assert v.duration_s < 1.0 + 0.5, f"{pid}: stopped {v.duration_s - 1:.2f} s after its 1 s limit"
        assert not v.tests, f"a timed-out sample reports no statistics: {v.tests}"


def test_slow_implementation_within_the_limit_passes():
    result = check(hostile.slow_in_train, ["EVAL-IDENTITY", "P-INVALID"], timeout=20)
    assert result.ok, result.summary()


@needs_fork
def test_signal_proof_hang_is_killed():
    """SIGALRM alone could never stop this one: it blocks the signal. A forked child is killed."""
    result = check(hostile.blocks_signals_and_spins, ["SUPPORT-SCALE", "P-INVALID"], timeout=1)
    assert status_of(result) == {"SUPPORT-SCALE": "timeout", "P-INVALID": "pass"}, result.summary()


def settled_thread_count() -> int:
    """Threads alive once the reapers of finished workers (short-lived, see guard._run_worker) are done."""
    join_reapers()
    return threading.active_count()


@needs_fork
def test_timed_out_check_leaves_no_process_or_thread_behind(tmp_path, monkeypatch):
    pidfile = tmp_path / "pids"
    monkeypatch.setenv(hostile.PIDFILE_ENV, str(pidfile))
    threads = settled_thread_count()
    result = check(hostile.spawns_then_hangs, ["SUPPORT-SCALE"], timeout=1.5)
    assert status_of(result) == {"SUPPORT-SCALE": "timeout"}, result.summary()
    pids = [int(line) for line in pidfile.read_text().split()]
    assert len(pids) == 2 and pids[0] != os.getpid(), f"expected the check's child and its helper: {pids}"
    still = [pid for pid in pids if not gone(pid)]
    assert not still, f"left running after the timeout: {still}"
    assert settled_thread_count() == threads, "a thread was left behind"


@needs_main_thread
@pytest.mark.parametrize("fn,expected", [
    (lambda: hostile.spins_in_train(torch.ones(3), 0.5, True), "timeout"),
    (lambda: hostile.sleeps_in_train(torch.ones(3), 0.5, True), "timeout"),
    (lambda: time.sleep(0.2) or "done", "ok"),
], ids=["spin", "sleep", "slow-but-in-time"])
def test_in_process_alarm_fallback(fn, expected):
    """Where no child can be forked (CUDA, not Linux) the alarm stops Python loops and sleeps."""
    handler = signal.getsignal(signal.SIGALRM)
    start = time.monotonic()
    outcome = guard.run_limited(fn, 1.0, mechanism="alarm")
    assert outcome.status == expected, outcome
    assert time.monotonic() - start < 1.5, f"overshoot {time.monotonic() - start - 1:.2f} s"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "the alarm must be disarmed afterwards"
    assert signal.getsignal(signal.SIGALRM) is handler, "the previous SIGALRM handler must be restored"


@needs_main_thread
def test_alarm_timeout_goes_through_hypothesis_and_the_sampler(monkeypatch):
    monkeypatch.setattr(guard, "choose_mechanism", lambda device="cpu": "alarm")
    result = check(hostile.spins_in_train, ["SUPPORT-SCALE", "P-INVALID", "DROP-RATE"], timeout=1)
    assert status_of(result) == {"SUPPORT-SCALE": "timeout", "P-INVALID": "pass", "DROP-RATE": "timeout"}, result.summary()
    assert result.limits["isolation"] == {"cpu": "alarm"}


# ---- crashes, exits, memory -----------------------------------------------------------------------------------
@pytest.mark.parametrize("impl,needle", [
    pytest.param(hostile.segfaults, "killed by SIGSEGV", marks=needs_fork),
    pytest.param(hostile.exits_process, "exit code 3", marks=needs_fork),
    (hostile.calls_sys_exit, "SystemExit: 4"),
], ids=["segfault", "os._exit", "sys.exit"])
def test_crash_or_exit_is_an_error_and_the_run_goes_on(impl, needle):
    result = check(impl, ["SUPPORT-SCALE", "EVAL-IDENTITY", "DROP-RATE"])
    got = status_of(result)
    assert got == {"SUPPORT-SCALE": "error", "EVAL-IDENTITY": "pass", "DROP-RATE": "error"}, result.summary()
    assert needle in verdict(result, "SUPPORT-SCALE").summary, verdict(result, "SUPPORT-SCALE").summary


@needs_fork
def test_memory_hungry_implementation_is_reported_not_fatal():
    result = check(hostile.hogs_memory, ["SUPPORT-SCALE", "EVAL-IDENTITY"], memory_limit_mb=384)
    got = status_of(result)
    v = verdict(result, "SUPPORT-SCALE")
    assert got == {"SUPPORT-SCALE": "error", "EVAL-IDENTITY": "pass"} and "out of memory" in v.summary, result.summary()
    assert not hostile._hoard, "the hoarded memory lived in the child, not in this process"


def test_sampling_memory_is_bounded_at_every_profile():
    """Statistical samples are drawn in chunks: no single call gets more than 2^21 units (8 MiB of
    float32), whatever the profile or the planned sample size (README, "When things go wrong")."""
    from dropcheck import power
    from dropcheck.ledger import PROFILES
    from dropcheck.sampling import MAX_CHUNK_UNITS, chunked

    for prof in PROFILES.values():
        n_plan = power.rate_sample_size(0.5, prof.rate_delta, 1e-9, 0.999)
        assert max(chunked(n_plan)) <= MAX_CHUNK_UNITS <= 1 << 21, prof.name
        assert 4 * prof.call_units <= 1 << 21 and prof.calls * prof.call_units <= 64 << 20, prof.name


@needs_fork
def test_thorough_samples_fit_well_within_the_default_memory_limit():
    """The memory-heaviest property (INDEP-CALLS, measured growth 662 MiB at thorough) runs within a
    quarter of the default limit; the README states the measured bounds."""
    result = check(torch.nn.Dropout, ["INDEP-CALLS"], profile="thorough", memory_limit_mb=1024)
    assert result.ok, result.summary()


# ---- implementations that lie: a clear FAIL, never an error or a pass ------------------------------------
LIES = [
    (hostile.returns_list, {"EVAL-IDENTITY": "returned list", "SEED-REPLAY": "returned list",
                            "MODE-ROUNDTRIP": "returned list", "DROP-RATE": "returned list", "EXPECTATION": "returned list"}),
    (hostile.returns_wrong_shape, {"SUPPORT-SCALE": "returned shape", "KEEPS-META": "shape", "DROP-RATE": "returned shape (1,"}),
    (hostile.returns_other_device, {"KEEPS-META": "'meta'", "EVAL-IDENTITY": "on meta", "DROP-RATE": "on meta"}),
    (hostile.returns_nan, {"SUPPORT-SCALE": "nan", "DROP-RATE": "NaN/Inf", "EXPECTATION": "NaN/Inf"}),
    (hostile.returns_inf, {"SUPPORT-SCALE": "inf", "P-ONE": "inf", "DROP-RATE": "NaN/Inf", "EXPECTATION": "NaN/Inf"}),
    (hostile.mutates_input_later, {"INPUT-UNTOUCHED": "modified its input in place"}),
    (hostile.reuses_output_buffer, {"SEED-REPLAY": "changed after it was returned"}),
]


@pytest.mark.parametrize("impl,fails", LIES, ids=[impl.__name__ for impl, _ in LIES])
def test_lying_implementation_gets_a_clear_fail(impl, fails):
    result = check(impl, list(fails))
    for property_id, needle in fails.items():
        v = verdict(result, property_id)
        assert v.status is Status.FAIL and needle in v.summary, (
            f"{impl.__name__}: {property_id} should FAIL saying {needle!r}, got {v.status.value}: {v.summary}")


@pytest.mark.parametrize("impl", [hostile.returns_nan, hostile.returns_inf], ids=["nan", "inf"])
def test_deferred_output_checks_still_fail_every_multi_call_sample(impl, monkeypatch):
    # Off the CPU a sample's outputs are checked once, at its end (sampling.OutputCheck): made to
    # do that here, NaN/Inf outputs must still give a FAIL that says so, never a pass or an error.
    from dropcheck import sampling

    monkeypatch.setattr(sampling, "defers_output_checks", lambda device: True)
    props = ["DROP-RATE", "EXPECTATION", "RATE-HOMOGENEITY", "INDEP-CALLS", "INDEP-ROWS"]
    result = check(impl, props)
    for property_id in props:
        v = verdict(result, property_id)
        assert v.status is Status.FAIL and "NaN/Inf" in v.summary and "read once" in v.summary, (
            f"{impl.__name__}, outputs checked at the end: {property_id} should FAIL naming NaN/Inf, "
            f"got {v.status.value}: {v.summary}")


# ---- options: exit 2 with a message, before any work starts ---------------------------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["--p", "nan"], "outside [0, 1]"),
    (["--p", "-0.1"], "outside [0, 1]"),
    (["--p", "0.5,2"], "2 is outside [0, 1]"),
    (["--p", "half"], "is not a number"),
    (["--contract", "gaussian"], "--contract: 'gaussian' is not one of"),
    (["--device", "tpu"], "--device: 'tpu' is not one of"),
    (["--seed", "-1"], "negative"),
    (["--seed", "1.5"], "not an integer"),
    (["--seed", "abc"], "not an integer"),
    (["--timeout", "-1"], "--timeout: -1 must be a finite number ≥ 0"),
    (["--timeout", "inf"], "--timeout: inf must be a finite number ≥ 0"),
    (["--timeout", "soon"], "--timeout: 'soon' is not a number"),
    (["--memory-limit", "-5"], "--memory-limit: -5 must be a finite number ≥ 0"),
    (["--json", "/no/such/dir/r.json"], "directory /no/such/dir does not exist"),
])
def test_bad_option_exits_2_before_any_work(argv, needle, capsys, monkeypatch):
    monkeypatch.setattr("dropcheck.targets.resolve_dropout", _must_not_be_called)
    code, out, err = cli(["check", "torch.nn:Dropout", *argv], capsys)
    assert code == 2 and needle in err and err.count("\n") == 1, f"{argv}: expected exit 2 and one line with {needle!r}: {err!r}"
    assert out == "", f"{argv}: nothing may run before the options are checked: {out!r}"


def _must_not_be_called(*args, **kwargs):
    raise AssertionError("TARGET was resolved before the options were validated")


def test_read_only_output_directory_is_refused(tmp_path, capsys, monkeypatch):
    """Simulated: `os.access` says the directory is not writable (as it would for a non-root user)."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == tmp_path and mode == os.W_OK else real_access(path, mode))
    code, out, err = cli(["check", "torch.nn:Dropout", "--json", str(tmp_path / "r.json")], capsys)
    assert code == 2 and "is not writable" in err and out == "", err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="running as root: chmod does not stop root from writing, so a read-only directory cannot be made")
def test_read_only_output_directory_is_refused_for_real(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = cli(["check", "torch.nn:Dropout", "--json", str(locked / "r.json")], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and "is not writable" in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here: nothing to skip")
def test_cuda_without_cuda_skips_with_a_reason(capsys):
    code, out, _ = cli(["check", "torch.nn:Dropout", "--device", "cuda", "--only", "EVAL-IDENTITY,DROP-RATE", "--profile", "quick"], capsys)
    assert code == 0 and "SKIP" in out and "CUDA not available" in out and "PASS" not in out, out


# ---- the report: atomic, never clobbered by a run that did not start, kept on Ctrl-C --------------------------
def test_existing_report_survives_a_run_that_fails_to_start(tmp_path, capsys):
    report = tmp_path / "r.json"
    report.write_text('{"precious": true}\n')
    for argv in (["check", "no_such_module_dropcheck_xyz:X"], ["check", "torch.nn:Dropout", "--p", "7"],
                 ["check", "torch.nn:Linear"]):
        code, _, _ = cli([*argv, "--json", str(report)], capsys)
        assert code == 2, argv
    assert report.read_text() == '{"precious": true}\n' and sorted(os.listdir(tmp_path)) == ["r.json"]


def test_report_that_cannot_be_written_is_an_error_and_the_verdicts_stay(tmp_path, capsys, monkeypatch):
    def read_only_fs(src, dst):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("dropcheck.cli.os.replace", read_only_fs)
    report = tmp_path / "r.json"
    code, out, err = cli(["check", "torch.nn:Dropout", "--only", "EVAL-IDENTITY", "--profile", "quick", "--json", str(report)], capsys)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and "could not write the report" in errors[0] and "Read-only file system" in errors[0], err
    assert "PASS    EVAL-IDENTITY" in out, "the verdicts are printed before the report is written"
    assert os.listdir(tmp_path) == [], "no half-written or temporary file is left"


@pytest.mark.parametrize("mechanism", [pytest.param("fork", marks=needs_fork), pytest.param("alarm", marks=needs_main_thread)])
def test_interrupt_inside_the_implementation_keeps_earlier_verdicts(mechanism, monkeypatch):
    """Exact properties only, so one lane: "earlier" is plan order (tests/test_lanes.py covers an
    interrupt in one lane while the other runs)."""
    monkeypatch.setattr(guard, "choose_mechanism", lambda device="cpu": mechanism)
    result = check(hostile.interrupts_in_train, ["EVAL-IDENTITY", "SUPPORT-SCALE", "P-ONE"])
    assert result.interrupted and not result.ok and status_of(result) == {"EVAL-IDENTITY": "pass"}, result.summary()
    assert result.to_dict()["interrupted"] is True


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_or_sigterm_ends_the_run_with_the_verdicts_so_far(tmp_path, sig, code, word):
    """With both lanes (dropcheck.lanes) busy: SUPPORT-SCALE hangs in one worker, DROP-RATE in the other.
    SIGTERM is what a cancelled CI job or `timeout` sends: it must keep the verdicts as Ctrl-C does."""
    pidfile, report = tmp_path / "pids", tmp_path / "r.json"
    hanging = 2 if lanes.usable_cpus() >= 2 else 1  # workers that will be inside the implementation
    env = {**os.environ, hostile.PIDFILE_ENV: str(pidfile), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dropcheck", "check", f"{HOSTILE_FILE}:sleeps_in_train", "--only",
         "EVAL-IDENTITY,SUPPORT-SCALE,DROP-RATE", "--profile", "quick", "--timeout", "120", "--json", str(report)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline and (
                not pidfile.exists() or len(pidfile.read_text().split()) < hanging):
            time.sleep(0.05)
        assert pidfile.exists(), f"the implementation never started: {proc.communicate(timeout=5)}"
        started = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - started < 10, f"{sig.name} must end the run promptly"
    assert proc.returncode == code, f"expected exit {code}, got {proc.returncode}:\n{out}\n{err}"
    assert "PASS    EVAL-IDENTITY" in out and word in out, out
    data = json.loads(report.read_text())
    assert data["interrupted"] is True and data["ok"] is False, data
    assert [(v["property"], v["status"]) for v in data["verdicts"]] == [("EVAL-IDENTITY", "pass")], data["verdicts"]
    assert sorted(os.listdir(tmp_path)) == ["pids", "r.json"], "no temporary report file is left"
    assert all(gone(int(pid)) for pid in pidfile.read_text().split()), "the check's child must not outlive the run"


# ---- determinism of dropcheck itself ---------------------------------------------------------------------------
def _without_times(report: dict) -> dict:
    report = {k: v for k, v in report.items() if k not in ("started", "finished", "duration_s")}
    report["verdicts"] = [{k: v for k, v in verdict.items() if k != "duration_s"} for verdict in report["verdicts"]]
    return report


def test_same_seed_gives_the_same_report(tmp_path, capsys):
    argv = ["check", "reference_impls.inverted:InvertedDropout", "--only", "SUPPORT-SCALE,SEED-REPLAY,DROP-RATE,INDEP-CALLS",
            "--p", "0.3", "--profile", "quick"]
    reports = []
    for name, seed in (("a", "11"), ("b", "11"), ("c", "12")):
        assert cli([*argv, "--seed", seed, "--json", str(tmp_path / f"{name}.json")], capsys)[0] == 0
        reports.append(_without_times(json.loads((tmp_path / f"{name}.json").read_text())))
    assert reports[0] == reports[1], "the same --seed must give the same verdicts and statistics"
    assert reports[0]["verdicts"] != reports[2]["verdicts"], "a different seed should draw a different sample"


# ---- the README states what happens ----------------------------------------------------------------------------
def test_readme_says_when_things_go_wrong():
    readme = (REPO / "README.md").read_text()
    assert "## When things go wrong" in readme
    section = readme.split("## When things go wrong", 1)[1]
    for needle in ("`0`", "`1`", "`2`", "`130`", "`143`", "TIMEOUT", "out of memory"):
        assert needle in section, f"README 'When things go wrong' should mention {needle}"
    defaults = {opt.name: opt.default for opt in CHECK_OPTIONS}
    for name in ("timeout", "memory-limit"):
        assert f"`--{name}`" in readme and f"`{defaults[name]}`" in readme, f"README should state --{name}'s default {defaults[name]}"
