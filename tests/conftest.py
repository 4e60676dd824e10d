"""Shared test set-up: Hypothesis runs derandomized on CI, and CUDA tests skip with a reason."""
import os
import threading

import pytest
import torch
from hypothesis import settings

from dropcheck import guard

# On CI every Hypothesis example sequence is derived from the test itself: a red CI is never luck.
settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# Under pytest-xdist each worker is its own process: with torch's default of one thread per core,
# `-n auto` on 2 cores runs 4 threads on 2 cores, and small-tensor tests slow down 5-8x (measured
# 46 s vs 6 s for the GPT tests). One thread per worker keeps the suite within CI's budget.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA not available: torch.cuda.is_available() is False on this machine"
)
# Decided when each test starts, not when this file is imported: a CUDA test that ran earlier in
# the same process initialised CUDA, and from then on dropcheck runs CPU checks in-process, where a
# test's segfault or memory hog would hit pytest itself.
needs_fork = pytest.mark.needs_fork
NO_FORK_REASON = ("checks run in-process here (not Linux, or CUDA already initialised in this process): a crash "
                  "or a signal-proof hang cannot be contained without a forked child")
needs_main_thread = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="SIGALRM works only in the main thread"
)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_fork") and guard.choose_mechanism("cpu") != "fork":
        pytest.skip(NO_FORK_REASON)


def join_reapers(timeout: float = 10.0) -> list[threading.Thread]:
    """Wait for the threads that reap finished workers (guard._reap_in_background); the ones still
    alive after `timeout` seconds each."""
    reapers = [t for t in threading.enumerate() if t.name == guard.REAPER_THREAD_NAME]
    for thread in reapers:
        thread.join(timeout)
    return [t for t in reapers if t.is_alive()]
