"""Limits around one property check: time (`--timeout`), memory (`--memory-limit`), crashes, Ctrl-C.

dropcheck runs code that is, by assumption, possibly broken. Whatever one check's implementation
does (loops forever, sleeps, segfaults, calls `os._exit`, eats memory), that check must end within
its limit with an outcome saying what happened, and the run must go on with every result kept.

How, and why this way (issue "Hostile inputs"):

- On Linux, for the CPU device, each check runs in a forked child process. The parent waits on a
  pipe for the pickled result; at the time limit it kills the child's whole process group
  (SIGKILL) and reaps it, so nothing is left behind. Only a process can be stopped whatever it is
  doing: Python threads cannot be killed (a hung one would keep running and burning CPU), and a
  signal handler (SIGALRM) runs only between bytecodes, so one long C call (a huge matmul, a C
  extension spinning) is not interrupted, and a segfault or `os._exit` would end the whole run.
  A child also gets its own memory limit (RLIMIT_AS) without limiting dropcheck itself, so a
  memory-hungry implementation fails its check with "out of memory" instead of taking the
  machine down.
  Costs, measured or known: a fork takes a few milliseconds. After the parent has used OpenMP,
  libgomp deadlocks in the child's first parallel region (it has no fork handler; this is why
  torch's DataLoader workers call `torch.set_num_threads(1)`), so the child runs torch on one
  thread, which on small checks is no slower. Implementation state (counters, caches) does not
  carry over from one property to the next: each starts from the state after import, which also
  makes a verdict independent of which other properties ran.
- Otherwise (a CUDA device: CUDA cannot be re-initialised in a forked child; CUDA already
  initialised in this process; not Linux): SIGALRM in the main thread raises `TimeLimitExceeded`,
  a BaseException so that an `except Exception` in the implementation or in Hypothesis does not
  swallow it, re-fired every second until it lands. It stops Python loops and sleeps, and torch
  code between two ops. Off the main thread there is no way to interrupt, so no limit applies.
- Under every mechanism a result that arrives after the limit is not trusted: it is a timeout,
  never a pass.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

DEFAULT_TIMEOUT_S = 60.0  # per property check; a default-profile check takes a few seconds at most
DEFAULT_MEMORY_LIMIT_MB = 4096  # growth allowed to one check's process beyond its size at the fork
_REFIRE_S = 1.0  # the alarm fires again this often until it is not swallowed
_POLL_S = 0.05  # how often the parent looks at a child that has not answered yet
_CHILD_FAILED = 70  # exit code of a child that could not even report (EX_SOFTWARE)


class TimeLimitExceeded(BaseException):
    """The alarm ran out. A BaseException, so `except Exception` in checked code lets it through."""


@dataclasses.dataclass
class Outcome:
    """How one limited call ended.

    `status` is "ok" (`value` holds the result), "timeout", "raised" (an exception escaped the
    call: `message` names it, `detail` holds the traceback) or "crashed" (the child process died
    or exited without a result: `message` says how).
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
    if _alarm_usable():
        return "alarm"
    return "none"


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
    timeout = timeout or None
    mechanism = mechanism or choose_mechanism(device)
    if mechanism == "fork":
        return _run_forked(fn, timeout, memory_limit_mb or None, hide_cuda=device == "cpu")
    return _run_in_process(fn, timeout, mechanism)


# ---- in the main thread: SIGALRM -----------------------------------------------------------------
def _alarm_usable() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def alarm(timeout: float | None) -> Iterator[None]:
    """Raise `TimeLimitExceeded` in the main thread once `timeout` seconds have passed.

    Does nothing without a timeout or off the main thread. Restores any previous SIGALRM handler
    and timer (pytest-timeout's signal method, for one) on exit.
    """
    if not timeout or not _alarm_usable():
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


def _run_forked(fn: Callable[[], Any], timeout: float | None, memory_limit_mb: float | None,
                hide_cuda: bool = True) -> Outcome:
    for stream in (sys.stdout, sys.stderr):  # nothing buffered twice
        with contextlib.suppress(Exception):
            stream.flush()
    read_end, write_end = os.pipe()
    start = time.monotonic()
    with warnings.catch_warnings():
        # Python 3.12+ warns that fork in a process with threads may deadlock: torch's OpenMP pool is
        # such a thread, and the child runs torch single-threaded for exactly that reason.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child never returns from here
        os.close(read_end)
        _child(fn, write_end, memory_limit_mb, hide_cuda)
    deadline = None if timeout is None else start + timeout
    try:
        os.close(write_end)
        with contextlib.suppress(OSError):  # also set in the child: whichever runs first wins the race
            os.setpgid(pid, pid)
        message, exited = _collect(pid, read_end, deadline)
    finally:  # also on Ctrl-C: the child and anything it started go, and are reaped
        os.close(read_end)
        _kill_group(pid)
        exit_status = _reap(pid)
    elapsed = time.monotonic() - start
    if message is None and not exited:
        return Outcome("timeout", elapsed=elapsed, mechanism="fork")
    if message is None:
        return Outcome("crashed", message=_describe_exit(exit_status), elapsed=elapsed, mechanism="fork")
    status, *rest = message
    if status == "interrupted":
        raise KeyboardInterrupt
    if status == "ok":
        return Outcome("ok", rest[0], elapsed=elapsed, mechanism="fork")
    if status == "timeout":
        return Outcome("timeout", elapsed=elapsed, mechanism="fork")
    return Outcome("raised", message=rest[0], detail=rest[1], elapsed=elapsed, mechanism="fork")


def _child(fn: Callable[[], Any], write_end: int, memory_limit_mb: float | None, hide_cuda: bool) -> None:
    code = _CHILD_FAILED
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)  # its own group, so that killing the group also stops what it started
        _die_with_parent()
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
        if memory_limit_mb:
            _limit_memory(memory_limit_mb)
        try:
            result: tuple = ("ok", fn())
        except KeyboardInterrupt:
            result = ("interrupted",)
        except TimeLimitExceeded:
            result = ("timeout",)
        except BaseException as e:  # SystemExit from the implementation, or a bug in dropcheck
            result = ("raised", _one_line(e), traceback.format_exc())
        try:
            data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            data = pickle.dumps(("raised", f"the result could not be sent back: {_one_line(e)}", ""))
        _write_all(write_end, len(data).to_bytes(8, "little") + data)
        code = 0
    except BaseException:
        pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)  # never run the parent's atexit handlers, pytest's included


def _collect(pid: int, fd: int, deadline: float | None) -> tuple[tuple | None, bool]:
    """Read the child's framed, pickled answer. Returns (message or None, whether it exited).

    Polls rather than waiting for EOF alone: something the implementation started may hold the
    pipe open after the child itself has answered or died."""
    buf = bytearray()
    exited = eof = False
    while True:
        if len(buf) >= 8:
            size = int.from_bytes(buf[:8], "little")
            if len(buf) >= 8 + size:
                try:
                    return pickle.loads(bytes(buf[8:8 + size])), True
                except Exception as e:  # the implementation wrote into the pipe, say
                    return ("raised", f"the check's result came back unreadable: {_one_line(e)}", ""), True
        if eof or exited:
            # The child is gone: whatever it wrote is readable now, without waiting.
            ready = select.select([fd], [], [], 0)[0] if not eof else []
            if not ready:
                return None, True
            chunk = os.read(fd, 1 << 20)
            eof = not chunk
            buf += chunk
            continue
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return None, False
        wait = _POLL_S if deadline is None else min(_POLL_S, deadline - now)
        if select.select([fd], [], [], wait)[0]:
            chunk = os.read(fd, 1 << 20)
            eof = not chunk
            buf += chunk
        else:
            exited = _has_exited(pid)


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
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
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
