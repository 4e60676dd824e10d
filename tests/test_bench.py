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
    assert stat["elements"] > 10 * exact["elements"], "the exact phase calls on small inputs, the statistical on samples"
    assert whole["mdes"]["DROP-RATE/binomial"] > 0

    whole.update(walls_s=[2.0, 2.5], wall_s=2.0, peak_rss_mib=300.0, overhead_share=0.5, elements_per_s=1e7,
                 stat_run_s=stat["run_s"], stat_impl_s=stat["impl_s"], stat_overhead_share=0.3,
                 exact_run_s=exact["run_s"], exact_impl_s=exact["impl_s"])
    row = next(line for line in render({"quick": whole}, DEFAULT_TARGET).splitlines() if line.startswith("| quick"))
    assert f"| {exact['run_s']:.2f} |" in row and "| 2.00 [2.00, 2.50] |" in row, row
