"""`dropcheck bench`: its instrumented children measure what the table says they do."""
from __future__ import annotations

from dropcheck.bench import DEFAULT_TARGET, render, run_child


def test_the_bench_phases_split_the_whole_run() -> None:
    # Each child in its own process, as `dropcheck bench` runs them: a child sets the worker's
    # allocator and thread settings for its whole life, which must not leak into the test process.
    whole = run_child("quick", DEFAULT_TARGET)
    stat = run_child("quick", DEFAULT_TARGET, "statistical")
    exact = run_child("quick", DEFAULT_TARGET, "exact")
    assert whole["ok"] and stat["ok"] and exact["ok"], whole["failures"]
    for r in (whole, stat, exact):
        assert 0 < r["impl_s"] < r["run_s"], r
    # Same seeds, same calls: the two phases together make exactly the whole run's calls.
    assert stat["calls"] + exact["calls"] == whole["calls"], (stat["calls"], exact["calls"], whole["calls"])
    assert stat["elements"] + exact["elements"] == whole["elements"]
    # The exact phase's inputs are small but for one of 65536 units per large-input property.
    assert stat["elements"] > 5 * exact["elements"], "the exact phase calls on small inputs, the statistical on samples"
    assert whole["mdes"]["DROP-RATE/binomial"] > 0

    lanes = run_child("quick", DEFAULT_TARGET, "lanes")
    assert lanes["ok"] and (lanes["calls"], lanes["elements"]) == (whole["calls"], whole["elements"]), \
        "the forked run's workers counted every call, through shared memory"
    by_worker = lanes["impl_s_by_worker"]
    assert lanes["longest_impl_s"] == max(by_worker) < lanes["run_s"] and abs(sum(by_worker) - lanes["impl_s"]) < 1e-9

    whole.update(walls_s=[2.0, 2.5], wall_s=2.0, peak_rss_mib=300.0, peak_tree_mib=420.0, one_core_overhead_share=0.5,
                 elements_per_s=1e7, lanes_run_s=lanes["run_s"], lanes_impl_s=lanes["longest_impl_s"],
                 lanes_other_impl_s=0.01, overhead_share=0.2, overhead_shares=[0.18, 0.2, 0.31],
                 stat_run_s=stat["run_s"], stat_impl_s=stat["impl_s"], stat_overhead_share=0.3,
                 exact_run_s=exact["run_s"], exact_impl_s=exact["impl_s"])
    row = next(line for line in render({"quick": whole}, DEFAULT_TARGET).splitlines() if line.startswith("| quick"))
    assert f"| {exact['run_s']:.2f} |" in row and "| 2.00 [2.00, 2.50] |" in row and "| 20% [18%, 20%, 31%] |" in row, row
    assert "| 300 | 420 |" in row, row


def test_the_tree_memory_counts_a_child_process_too() -> None:
    """`dropcheck bench`'s peak memory sums the command and its workers (the lanes run two)."""
    import subprocess
    import sys

    from dropcheck.bench import _TreeMemory

    code = ("import os, time\n"
            "if os.fork() == 0:\n    b = bytearray(200 << 20); time.sleep(1.0); os._exit(0)\n"
            "a = bytearray(100 << 20); time.sleep(1.0); os.wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    tree = _TreeMemory(proc.pid)
    proc.wait()
    peak = tree.stop()
    if peak is None:
        import pytest
        pytest.skip("no /proc/PID/smaps_rollup here")
    assert peak > 300, f"100 MiB in the process and 200 MiB in its child, but the peak read {peak:.0f} MiB"
