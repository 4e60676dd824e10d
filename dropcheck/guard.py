"""Limits around each property check: time (`--timeout`), memory (`--memory-limit`), crashes, Ctrl-C.

dropcheck runs code that is, by assumption, possibly broken. Whatever one check's implementation
does (loops forever, sleeps, segfaults, calls `os._exit`, eats memory), that check must end within
its limit with an outcome saying what happened, and the run must go on with every result kept.

How, and why this way (issue "Hostile inputs"):

- On Linux, for the CPU device, a sequence of checks (`run_sequence`) runs one after another in a
  forked worker process (a run has two such sequences side by side, each with its own worker:
  dropcheck.lanes). The checks are zero-argument callables inherited through the fork, never
  pickled; the worker writes framed, pickled messages to a pipe: ("start", i) as check i begins,
  ("done", i, result) as it ends. The parent gives each check its time limit from its "start"; at
  the limit, or when the worker dies (segfault, `os._exit`), it kills the worker's whole process
  group (SIGKILL), reaps it, gives that check its TIMEOUT or crash outcome, and forks a fresh
  worker that goes on with the next check. Only a process can be stopped whatever it is doing:
  Python threads cannot be killed (a hung one would keep running and burning CPU), and a signal
  handler (SIGALRM) runs only between bytecodes, so one long C call (a huge matmul, a C extension
  spinning) is not interrupted, and a segfault or `os._exit` would end the whole run.
  Memory: before each check the worker sets its own RLIMIT_AS to its present size plus
  `--memory-limit`, so each check may grow by that much from its own start without limiting
  dropcheck itself, and a memory-hungry implementation fails its check with "out of memory"
  instead of taking the machine down. After an allocation failure, or once the worker keeps more
  than half that allowance from earlier checks (a leak), the next check gets a fresh worker.
- Why one worker per run and not one fork per check (which this module did at first): a bare
  fork costs ~17 ms, but each child redid the lazy warm-up of its first call (imports inside
  scipy and Hypothesis, their caches, torch's dispatch, copy-on-write page faults) and threw it
  away on exit. Measured on 2 CPU cores, `run_check` of reference_impls.inverted:InvertedDropout,
  best of 3: `quick` took 2.97 s with a fork per check, 0.68 s with one worker, 0.56 s in-process
  without limits; `default` 4.87 s, 2.32 s and 1.94 s (2.31 s in-process on one torch thread,
  which is what the worker runs on, see below); `dropcheck check` wall time including ~2.3 s of
  start-up: 5.70 s → 3.11 s (`quick`), 8.27 s → 4.94 s (`default`). The price: implementation
  state (counters, caches, module globals, threads it started) now carries over from one check
  to the next within a worker, as it does in-process. Verdicts do not depend on it for a sound
  implementation, since every check seeds what it draws (a full run's verdicts are identical to
  those with a fork per check, and `--only ID` still replays one); a hostile one that, say,
  mutates earlier inputs later may affect a later check's verdict as well as its own.
  Also known: after the parent has used OpenMP, libgomp deadlocks in a forked child's first
  parallel region (it has no fork handler; this is why torch's DataLoader workers call
  `torch.set_num_threads(1)`), so the worker runs torch on one thread, which on small checks is
  no slower.
- Otherwise (a CUDA device: CUDA cannot be re-initialised in a forked child; CUDA already
  initialised in this process; not Linux): the checks run in this process, one after another.
  SIGALRM in the main thread raises `TimeLimitExceeded`, a BaseException so that an
  `except Exception` in the implementation or in Hypothesis does not swallow it, re-fired every
  second until it lands. It stops Python loops and sleeps, and torch code between two ops. Off
  the main thread there is no way to interrupt, so no limit applies.
- Under every mechanism a result that arrives after the limit is not trusted: it is a timeout,
  never a pass. Ctrl-C stops the worker and is re-raised; the outcomes reported so far stand.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from dropcheck.alarm import TimeLimitExceeded, alarm, alarm_usable
from dropcheck.allocator import keep_freed_memory

DEFAULT_TIMEOUT_S = 60.0  # per property check; a default-profile check takes a few seconds at most
DEFAULT_MEMORY_LIMIT_MB = 4096  # growth allowed to the worker during one check, beyond its size at the check's start
_POLL_S = 0.05  # how often the parent looks at a child that has not answered yet
_CHILD_FAILED = 70  # exit code of a child that could not even report (EX_SOFTWARE)
_REPORT_HEADROOM_MB = 64  # after a check, the worker may grow this much to send its result back
_MAX_MESSAGE = 1 << 31  # a frame longer than this is garbage (the implementation wrote into the pipe)
REAPER_THREAD_NAME = "dropcheck-reaper"  # see _reap_in_background

# Lanes (dropcheck.lanes) fork workers from several threads. Between one thread's os.pipe() and the
# close of its write end after the fork, a fork by another thread would hand that write end to a
# second worker, which would then hold the pipe open after the first worker's death; so pipe, fork
# and close happen under one lock. The read ends still open in this process are closed in each
# new worker: they belong to other lanes.
_FORK_LOCK = threading.Lock()
_READ_ENDS: set[int] = set()


class _SequenceEnd:
    """What a check returns to end its sequence there (dropcheck.lanes: nothing left to take): the
    checks after it are not run, and it has no outcome of its own. It pickles by name, so the one a
    worker sends back is this very object."""

    def __reduce__(self) -> str:
        return "SEQUENCE_END"

    def __repr__(self) -> str:
        return "dropcheck.guard.SEQUENCE_END"


SEQUENCE_END = _SequenceEnd()


class Stopped(BaseException):
    """`run_sequence` was told to stop (its `stop` event was set); its worker is killed and reaped."""


@dataclasses.dataclass
class Outcome:
    """How one limited call ended.

    `status` is "ok" (`value` holds the result), "timeout", "raised" (an exception escaped the
    call: `message` names it, `detail` holds the traceback), "crashed" (the child process died
    or exited without a result: `message` says how) or "not-run" (never started: the checks
    before it timed out, dropcheck.hangs).
    """

    status: str
    value: Any = None
    message: str = ""
    detail: str = ""
    elapsed: float = 0.0
    mechanism: str = "none"


def choose_mechanism(device: str = "cpu") -> str:
    """'fork', 'alarm' or 'none' for a check on `device` (see the module docstring for why)."""
    if device == "cpu" and sys.platform.startswith("linux") and hasattr(os, "fork") and not _cuda_initialized():
        return "fork"
    if alarm_usable():
        return "alarm"
    return "none"


def limit_options(timeout: float | None, memory_limit_mb: float | None) -> list[str]:
    """The command-line options that restore these limits, for replay lines; none at the defaults
    (a TIMEOUT replayed under the default limit would wait 60 s instead of the run's 2).

    >>> limit_options(2, DEFAULT_MEMORY_LIMIT_MB), limit_options(None, 512)
    (['--timeout 2'], ['--timeout 0', '--memory-limit 512'])
    """
    options = []
    if (timeout or None) != DEFAULT_TIMEOUT_S:
        options.append(f"--timeout {timeout or 0:g}")
    if (memory_limit_mb or None) != DEFAULT_MEMORY_LIMIT_MB:
        options.append(f"--memory-limit {memory_limit_mb or 0:g}")
    return options


def run_limited(
    fn: Callable[[], Any],
    timeout: float | None = DEFAULT_TIMEOUT_S,
    *,
    device: str = "cpu",
    memory_limit_mb: float | None = DEFAULT_MEMORY_LIMIT_MB,
    mechanism: str | None = None,
) -> Outcome:
    """Call `fn()` under a time limit (seconds; None or 0: none) and, when forked, a memory limit.

    KeyboardInterrupt is re-raised after the child is stopped, so Ctrl-C still ends the run.

    >>> run_limited(lambda: 6 * 7, timeout=5).value
    42
    """
    return run_sequence([fn], timeout, device=device, memory_limit_mb=memory_limit_mb, mechanism=mechanism)[0]


def run_sequence(
    checks: Sequence[Callable[[], Any]],
    timeout: float | None = DEFAULT_TIMEOUT_S,
    *,
    device: str = "cpu",
    memory_limit_mb: float | None = DEFAULT_MEMORY_LIMIT_MB,
    mechanism: str | None = None,
    on_outcome: Callable[[int, Outcome], None] | None = None,
    fresh_worker_after: Callable[[Any], bool] | None = None,
    stop: threading.Event | None = None,
) -> list[Outcome]:
    """Call each of `checks` in order, each under the limits of `run_limited`; one outcome per check.

    With the "fork" mechanism they run one after another in a forked worker process (module
    docstring), which is replaced only after a check that timed out, crashed or ran out of memory.
    `on_outcome(i, outcome)` is called in this process as soon as check i has ended, while the
    worker goes on with the next. `fresh_worker_after(value)`, called in the worker on each value a
    check returned, says whether the checks after it need a fresh worker (an out-of-memory verdict,
    say: whatever filled the memory may still hold it). Ctrl-C (or a KeyboardInterrupt raised by a
    check) stops the worker and is re-raised; the outcomes delivered so far are all there is.
    `stop`, set from another thread (dropcheck.lanes), does the same but raises `Stopped`. A check
    that returns `SEQUENCE_END` ends the sequence there, with no outcome for itself.

    >>> [o.value for o in run_sequence([lambda: 1, lambda: 2], timeout=5)]
    [1, 2]
    """
    timeout = timeout or None
    mechanism = mechanism or choose_mechanism(device)
    outcomes: list[Outcome] = []

    def deliver(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(len(outcomes) - 1, outcome)

    if mechanism == "fork":
        position = 0
        while position < len(checks):
            position = _run_worker(checks, position, timeout, memory_limit_mb or None, device == "cpu",
                                   fresh_worker_after, deliver, stop)
    else:
        for fn in checks:
            if stop is not None and stop.is_set():
                raise Stopped
            outcome = _run_in_process(fn, timeout, mechanism)
            if outcome.status == "ok" and outcome.value is SEQUENCE_END:
                break
            deliver(outcome)
    return outcomes


# ---- in this process: SIGALRM (dropcheck.alarm) ------------------------------------------------
def _run_in_process(fn: Callable[[], Any], timeout: float | None, mechanism: str) -> Outcome:
    start = time.monotonic()
    try:
        if mechanism == "alarm":
            with alarm(timeout):
                value = fn()
        else:
            value = fn()
    except TimeLimitExceeded:
        return Outcome("timeout", elapsed=time.monotonic() - start, mechanism=mechanism)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # SystemExit from the implementation, or a bug in dropcheck
        return Outcome("raised", message=_one_line(e), detail=traceback.format_exc(),
                       elapsed=time.monotonic() - start, mechanism=mechanism)
    elapsed = time.monotonic() - start
    if timeout is not None and elapsed > timeout:  # finished late (swallowed the alarm, or no alarm)
        return Outcome("timeout", elapsed=elapsed, mechanism=mechanism)
    return Outcome("ok", value, elapsed=elapsed, mechanism=mechanism)


# ---- on Linux: a forked child per check ----------------------------------------------------------
def _cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _run_worker(checks: Sequence[Callable[[], Any]], first: int, timeout: float | None,
                memory_limit_mb: float | None, hide_cuda: bool, fresh_after: Callable[[Any], bool] | None,
                deliver: Callable[[Outcome], None], stop: threading.Event | None = None) -> int:
    """Fork one worker for checks[first:] and deliver an outcome for each check it runs or ends
    with. Returns where the next worker, if any, starts: after the last check that has an outcome."""
    for stream in (sys.stdout, sys.stderr):  # nothing buffered twice
        with contextlib.suppress(Exception):
            stream.flush()
    current, following = None, first  # the check running now (None between checks), the next one
    failure: Outcome | None = None
    with _FORK_LOCK:
        read_end, write_end = os.pipe()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns that fork in a process with threads may deadlock: torch's OpenMP
                # pool is such a thread, and the worker runs torch single-threaded for that reason.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except BaseException:  # no worker (out of processes or memory): nothing of this call is left open
            os.close(read_end)
            os.close(write_end)
            raise
        if pid == 0:  # the worker never returns from here
            for fd in (read_end, *_READ_ENDS):
                with contextlib.suppress(OSError):
                    os.close(fd)
            _forget_lanes()
            _worker(checks, first, write_end, memory_limit_mb, hide_cuda, fresh_after)
        os.close(write_end)
        _READ_ENDS.add(read_end)
    channel = _Channel(read_end, pid)
    waiting_since = time.monotonic()  # for the next check: from the fork, then from each "start"
    finished = False  # every check it was given has an outcome
    try:
        with contextlib.suppress(OSError):  # also set in the child: whichever runs first wins the race
            os.setpgid(pid, pid)
        while True:
            deadline = None if timeout is None else waiting_since + timeout
            try:
                message = channel.receive(deadline, stop)
            except _Unreadable as e:  # the implementation wrote into the pipe, say
                failure = Outcome("raised", message=f"the check's result came back unreadable: {e}", mechanism="fork")
                break
            if message is None:  # out of time, or the worker is gone; told apart once it is reaped
                break
            kind = message[0]
            if kind == "start":
                current, waiting_since = message[1], message[2]  # the worker's clock: CLOCK_MONOTONIC, shared
            elif kind == "done":
                _, index, elapsed, result = message
                current, following, waiting_since = None, index + 1, time.monotonic()
                if result[0] == "ok" and result[1] is SEQUENCE_END:  # the sequence ends here
                    finished = True
                    return len(checks)
                deliver(_outcome(result, elapsed, timeout))
                if following >= len(checks):  # nothing left for it to do: no need to wait for its "end"
                    finished = True
                    return following
            elif kind == "interrupted":
                raise KeyboardInterrupt
            else:  # "end" (all done) or "retire" (the next check wants a fresh worker)
                return following  # reaped here: a retiring worker may hold its whole memory share
    finally:  # also on Ctrl-C or `stop`: the worker and anything it started go, and are reaped
        with _FORK_LOCK:
            _READ_ENDS.discard(read_end)
            os.close(read_end)
        _kill_group(pid)
        exit_status = None if finished and _reap_in_background(pid) else _reap(pid)
    elapsed = time.monotonic() - waiting_since
    if current is None and following >= len(checks):  # it ended after its last result: nothing lost
        return following
    if failure is None:
        if channel.gone:
            failure = Outcome("crashed", message=_describe_exit(exit_status), mechanism="fork")
        else:
            failure = Outcome("timeout", mechanism="fork")
    failure.elapsed = elapsed
    # A worker that died between two checks is charged to the next one, so that every worker
    # forked makes progress.
    index = following if current is None else current
    deliver(failure)
    return index + 1


def fork_lock() -> threading.Lock:
    """The lock held around each fork here: hold it while a file descriptor that no worker may
    inherit is open (dropcheck.lanes' token pipe, until its write end is closed)."""
    return _FORK_LOCK


def _forget_lanes() -> None:
    """In a new worker: the fork lock as free and no read ends, should a check use dropcheck itself."""
    global _FORK_LOCK
    _FORK_LOCK = threading.Lock()
    _READ_ENDS.clear()


def _outcome(result: tuple, elapsed: float, timeout: float | None) -> Outcome:
    status, *rest = result
    if status == "timeout" or (timeout is not None and elapsed > timeout):  # a late result is no result
        return Outcome("timeout", elapsed=elapsed, mechanism="fork")
    if status == "ok":
        return Outcome("ok", rest[0], elapsed=elapsed, mechanism="fork")
    return Outcome("raised", message=rest[0], detail=rest[1], elapsed=elapsed, mechanism="fork")


def _worker(checks: Sequence[Callable[[], Any]], first: int, write_end: int, memory_limit_mb: float | None,
            hide_cuda: bool, fresh_after: Callable[[Any], bool] | None) -> None:
    """The forked worker: run checks[first:] in order, reporting on the pipe; never returns."""
    code = _CHILD_FAILED
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)  # its own group, so that killing the group also stops what it started
        _die_with_parent()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the CLI's handler (stop and report) is the parent's
        # What the implementation prints goes to stderr: stdout is the verdict lines, which a user may
        # redirect to a file or parse.
        with contextlib.suppress(OSError):
            os.dup2(2, 1)
        # Fresh stdio objects: a thread of the parent (rich's progress refresh, for one) may have held
        # the old ones' locks at the fork, and in the child nothing would ever release them.
        sys.stdout = open(1, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(1)  # libgomp deadlocks in a forked child otherwise (see above)
            if hide_cuda:
                # A CPU check has no use for CUDA, and CUDA must not be touched in a forked child (the
                # parent may have initialised it): seeding and RNG fingerprints then skip it.
                torch.cuda.is_available = lambda: False
                torch.cuda.device_count = lambda: 0
        keep_freed_memory()  # no page traffic between one sample call and the next (dropcheck.allocator)
        # Everything inherited is long-lived (torch, the target): out of the collector's sight, so
        # that a full collection (Hypothesis makes one on first use) scans only what the checks
        # create: 0.1 s less per run. The worker is disposable, so nothing frozen is ever missed.
        gc.freeze()
        born = _address_space_bytes()
        last = ("end",)
        for index in range(first, len(checks)):
            if memory_limit_mb:
                _limit_memory(memory_limit_mb)  # this check may grow the worker by that much from here
            start = time.monotonic()
            _send(write_end, ("start", index, start))
            try:
                result: tuple = ("ok", checks[index]())
            except KeyboardInterrupt:
                _send(write_end, ("interrupted", index))
                last = None
                break
            except TimeLimitExceeded:
                result = ("timeout",)
            except BaseException as e:  # SystemExit from the implementation, or a bug in dropcheck
                result = ("raised", _one_line(e), traceback.format_exc())
            elapsed = time.monotonic() - start
            if memory_limit_mb:
                _limit_memory(_REPORT_HEADROOM_MB)  # room to report even if the check used up its share
            for stream in (sys.stdout, sys.stderr):  # what the check printed, before the parent may end it
                with contextlib.suppress(BaseException):
                    stream.flush()
            _send(write_end, ("done", index, elapsed, result))
            if result[0] == "ok" and result[1] is SEQUENCE_END:
                break
            if index + 1 < len(checks) and _worn_out(result, fresh_after, born, memory_limit_mb):
                last = ("retire",)
                break
        if last is not None:
            _send(write_end, last)
        code = 0
    except BaseException:  # noqa: S110  (the exit code tells the parent; there is no one else to tell)
        pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)  # never run the parent's atexit handlers, pytest's included


def _worn_out(result: tuple, fresh_after: Callable[[Any], bool] | None, born: int | None,
              memory_limit_mb: float | None) -> bool:
    """Whether the checks after this result should get a fresh worker: memory ran out (what filled
    it may still hold it), or the worker kept more than half a check's allowance from earlier checks."""
    if result[0] == "raised" and is_out_of_memory(result[1]):
        return True
    if result[0] == "ok" and fresh_after is not None:
        try:
            if fresh_after(result[1]):
                return True
        except Exception:
            return True
    size = _address_space_bytes()
    return bool(memory_limit_mb and born is not None and size is not None
                and size - born > memory_limit_mb * 2**20 / 2)


def _send(fd: int, message: tuple) -> None:
    try:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # a result that cannot be pickled
        index = message[1] if len(message) > 1 else -1
        data = pickle.dumps(("done", index, message[2] if len(message) > 2 else 0.0,
                             ("raised", f"the result could not be sent back: {_one_line(e)}", "")))
    _write_all(fd, len(data).to_bytes(8, "little") + data)


class _Unreadable(Exception):
    """The worker's messages could not be read back."""


class _Channel:
    """The parent's end of the worker's pipe: framed (8-byte length, little-endian), pickled messages."""

    def __init__(self, fd: int, pid: int = 0) -> None:
        self.fd, self.pid = fd, pid
        self.buf = bytearray()
        self.gone = False  # the worker has exited (or closed the pipe) and everything it sent is read

    def receive(self, deadline: float | None, stop: threading.Event | None = None) -> tuple | None:
        """The next message, or None when the deadline has passed or the worker is gone (`gone`);
        `Stopped` once `stop` is set.

        Polls rather than waiting for EOF alone: something the implementation started may hold the
        pipe open after the worker itself has died. A message already sent is read even when the
        deadline has passed meanwhile: whether it came in time is for its elapsed time to say."""
        exited = eof = False
        while True:
            message = self._frame()
            if message is not None:
                return message
            if eof or exited:
                # The worker is gone: whatever it wrote is readable now, without waiting.
                if eof or not select.select([self.fd], [], [], 0)[0]:
                    self.gone = True
                    return None
                eof = self._read()
                continue
            if stop is not None and stop.is_set():
                raise Stopped
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                if select.select([self.fd], [], [], 0)[0]:
                    eof = self._read()
                    continue
                return None
            wait = _POLL_S if deadline is None else min(_POLL_S, deadline - now)
            if select.select([self.fd], [], [], wait)[0]:
                eof = self._read()
            else:
                exited = _has_exited(self.pid)

    def _read(self) -> bool:
        chunk = os.read(self.fd, 1 << 20)
        self.buf += chunk
        return not chunk

    def _frame(self) -> tuple | None:
        if len(self.buf) < 8:
            return None
        size = int.from_bytes(self.buf[:8], "little")
        if size > _MAX_MESSAGE:
            raise _Unreadable(f"a message of {size} bytes")
        if len(self.buf) < 8 + size:
            return None
        data = bytes(self.buf[8:8 + size])
        del self.buf[:8 + size]
        try:
            message = pickle.loads(data)
        except Exception as e:
            raise _Unreadable(_one_line(e)) from None
        if not isinstance(message, tuple) or not message:
            raise _Unreadable(f"not a message: {type(message).__name__}")
        return message


def _has_exited(pid: int) -> bool:
    """True once the child has ended, without reaping it (its pid, and so its group, stay ours)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)  # in case it never got its own group


def _reap_in_background(pid: int) -> bool:
    """Reap a killed worker in a short-lived thread; False if no thread could start (reap it then).

    For a worker whose last outcome is in: its exit status tells nothing, and the kernel's teardown
    of its memory (~10 ms in a default run) need not delay the verdicts. Not for a worker that
    retires before the next is forked: that one may hold its whole memory share until it is gone."""
    try:
        threading.Thread(target=_reap, args=(pid,), name=REAPER_THREAD_NAME, daemon=True).start()
    except RuntimeError:  # out of threads, or the interpreter is shutting down
        return False
    return True


def _reap(pid: int) -> int | None:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return None
        except InterruptedError:
            continue
        except KeyboardInterrupt:  # a second Ctrl-C: the child is already killed; reap, then stop
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            raise


def _describe_exit(status: int | None) -> str:
    if status is None:
        return "the check's process vanished without a result"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if sig == signal.SIGKILL else ""
        return f"the check's process was killed by {name}{hint}"
    code = os.WEXITSTATUS(status)
    if code == _CHILD_FAILED:
        return "the check's process failed before it could report (out of memory?)"
    return f"the implementation ended the check's process (exit code {code}) before a result was reported"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _die_with_parent() -> None:
    """Linux: SIGKILL this child when dropcheck dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def _limit_memory(megabytes: float) -> None:
    """Let this process's address space grow by `megabytes` beyond its present size."""
    import resource

    size = _address_space_bytes()
    if size is None:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + int(megabytes * 2**20)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _address_space_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def is_out_of_memory(text: str) -> bool:
    """Whether an error message is an allocation failure (Python's or torch's allocators)."""
    return "MemoryError" in text or "can't allocate memory" in text or "out of memory" in text.lower()


def describe_unfinished(outcome: Outcome, timeout: float | None, culprit: str) -> tuple[bool, str, dict[str, Any]]:
    """For a check that did not return (`outcome.status` other than "ok"), how it ended, in words:
    (timed out?, summary, evidence). `culprit` names what hung ("the implementation", "the model").
    The summary holds no measured time, so that two runs' reports stay identical."""
    evidence: dict[str, Any] = {"isolation": outcome.mechanism}
    if outcome.status == "not-run":  # dropcheck.hangs
        evidence["not_run"] = outcome.message
        limit = f" (--timeout {timeout:g} s)" if timeout else ""
        return False, (f"not run: {outcome.message}{limit}: {culprit} hangs or is too slow for the limit; "
                       "replay it alone, or with a larger --timeout"), evidence
    if outcome.status == "timeout":
        evidence["timeout_s"] = timeout
        return True, f"did not finish within the {timeout:g} s limit (--timeout): {culprit} hangs or is too slow", evidence
    if outcome.status == "crashed":
        return False, f"crashed: {outcome.message}", evidence
    evidence["traceback"] = outcome.detail
    return False, f"the check was ended by {outcome.message}", evidence


def out_of_memory_summary(summary: str, memory_limit_mb: float | None, mechanism: str) -> str:
    """An allocation failure's message, with the limit it ran into (`--memory-limit` only binds a
    forked worker; elsewhere the machine's memory was the limit)."""
    bound = f"{memory_limit_mb:g} MiB" if memory_limit_mb and mechanism == "fork" else "the machine's memory"
    return f"out of memory (limit: {bound} beyond the check's start): {summary}"
