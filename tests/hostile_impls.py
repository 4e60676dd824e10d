"""Hostile implementations: dropouts that raise, hang, crash, eat memory or lie about their output.

The hanging ones still reject an invalid p first, so the quick P-INVALID property passes beside
their timeouts (and shows the run went on) however loaded the machine is.

Each is a plain function f(x, p, training) that is correct (inverted dropout) except for the one
hostile thing its docstring names, so a test can show that exactly the affected properties get
their verdict and every other property still runs. tests/test_hostile.py feeds them to dropcheck.
Some write their process id to the file named by $DROPCHECK_HOSTILE_PIDFILE, so a test can prove
nothing they started is left running.
"""
from __future__ import annotations

import ctypes
import faulthandler
import math
import os
import signal
import subprocess
import sys
import time

import torch

PIDFILE_ENV = "DROPCHECK_HOSTILE_PIDFILE"


def _validate(p):
    if math.isnan(p) or not 0 <= p <= 1:
        raise ValueError(f"p={p} is outside [0, 1]")


def correct(x, p, training):
    """Inverted dropout, the behaviour every hostile implementation starts from."""
    _validate(p)
    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    keep = torch.rand(x.shape, device=x.device) >= p
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))


def _note_pid(*pids: int) -> None:
    path = os.environ.get(PIDFILE_ENV)
    if path:
        with open(path, "a") as f:
            f.write("".join(f"{pid}\n" for pid in pids))


# ---- raises on some inputs ----------------------------------------------------------------------
def raises_on_half(x, p, training):
    """Raises TypeError for float16 and bfloat16 inputs."""
    if x.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"half precision is not supported (got {x.dtype})")
    return correct(x, p, training)


def raises_at_p_one(x, p, training):
    """Raises in train mode at p = 1 (a p that must be accepted: it drops everything)."""
    if p == 1 and training:
        raise RuntimeError("p = 1 would divide by zero")
    return correct(x, p, training)


def raises_on_empty(x, p, training):
    """Raises for an input with no elements."""
    if x.numel() == 0:
        raise ValueError("cannot drop out of an empty tensor")
    return correct(x, p, training)


# ---- hangs, or is too slow ----------------------------------------------------------------------
def spins_in_train(x, p, training):
    """A busy Python loop that never ends, in train mode; eval is correct."""
    _validate(p)
    if not training:
        return correct(x, p, training)
    _note_pid(os.getpid())
    while True:
        pass


def sleeps_in_train(x, p, training):
    """Sleeps for an hour in train mode; eval is correct."""
    _validate(p)
    if not training:
        return correct(x, p, training)
    _note_pid(os.getpid())
    time.sleep(3600)
    return correct(x, p, training)


def slow_in_train(x, p, training):
    """Correct, but each train call takes 0.2 s: a sample of many calls cannot finish in 1 s."""
    _validate(p)
    if training:
        time.sleep(0.2)
    return correct(x, p, training)


def blocks_signals_and_spins(x, p, training):
    """Blocks SIGALRM and SIGINT, then spins: no Python signal handler can ever run, as in C code
    that never returns to the interpreter. Only killing the process stops it."""
    _validate(p)
    if not training:
        return correct(x, p, training)
    _note_pid(os.getpid())
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM, signal.SIGINT])
    while True:
        pass


def spawns_then_hangs(x, p, training):
    """Starts a sleeping child process of its own, then hangs: both must be gone afterwards."""
    _validate(p)
    if not training:
        return correct(x, p, training)
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    _note_pid(os.getpid(), helper.pid)
    time.sleep(3600)
    return correct(x, p, training)


def interrupts_in_train(x, p, training):
    """Raises KeyboardInterrupt in train mode, as Ctrl-C would while the implementation runs."""
    if training:
        raise KeyboardInterrupt
    return correct(x, p, training)


# ---- crashes, exits, eats memory ----------------------------------------------------------------
def segfaults(x, p, training):
    """Dereferences a null pointer in train mode."""
    if training:
        faulthandler.disable()  # pytest enables it; its dump of the crash would only clutter the test log
        ctypes.string_at(0)
    return correct(x, p, training)


def exits_process(x, p, training):
    """Ends the whole process, skipping every handler, in train mode."""
    if training:
        os._exit(3)
    return correct(x, p, training)


def calls_sys_exit(x, p, training):
    """Raises SystemExit in train mode (a BaseException: `except Exception` does not catch it)."""
    if training:
        sys.exit(4)
    return correct(x, p, training)


_hoard: list = []


def hogs_memory(x, p, training):
    """Keeps allocating (and touching) 64 MiB blocks in train mode until allocation fails."""
    if training:
        while True:
            _hoard.append(torch.ones(1 << 24))
    return correct(x, p, training)


# ---- lies about its output ----------------------------------------------------------------------
def returns_list(x, p, training):
    """Returns a nested Python list instead of a tensor."""
    return correct(x, p, training).tolist()


def returns_wrong_shape(x, p, training):
    """Returns the output with an extra leading dimension."""
    return correct(x, p, training).unsqueeze(0)


def returns_other_device(x, p, training):
    """Returns a tensor on the `meta` device (no data at all) instead of the input's device."""
    return torch.empty_like(correct(x, p, training), device="meta")


def returns_nan(x, p, training):
    """Train output has NaN in place of its first element."""
    y = correct(x, p, training)
    if training and y.numel():
        y = y.clone()
        y.view(-1)[0] = math.nan
    return y


def returns_inf(x, p, training):
    """Train output has +Inf in place of its first element."""
    y = correct(x, p, training)
    if training and y.numel():
        y = y.clone()
        y.view(-1)[0] = math.inf
    return y


_previous_inputs: list = []


def mutates_input_later(x, p, training):
    """Keeps a reference to each input and zeroes it in place on the next call: the caller's
    tensor changes after the call that received it has returned."""
    with torch.no_grad():
        for earlier in _previous_inputs:
            earlier.zero_()
    _previous_inputs[:] = [x]
    return correct(x, p, training)


_buffers: dict = {}


def reuses_output_buffer(x, p, training):
    """Returns one buffer per (shape, dtype), overwritten by every call: an output it returned
    earlier changes when it is called again."""
    y = correct(x, p, training)
    if not training:
        return y
    key = (tuple(x.shape), x.dtype, x.device.type)
    if key not in _buffers:
        _buffers[key] = torch.empty_like(y)
    with torch.no_grad():
        return _buffers[key].copy_(y)
