"""`dropcheck bench`: its instrumented child measures what the table says it does."""
from __future__ import annotations

import json
import subprocess
import sys

from dropcheck.bench import DEFAULT_TARGET, render


def test_the_bench_child_splits_the_run_into_its_phases() -> None:
    # In a subprocess, as `dropcheck bench` runs it: the child sets the worker's allocator and thread
    # settings for its whole life, which must not leak into the test process.
    proc = subprocess.run([sys.executable, "-m", "dropcheck.bench", "--child", "quick", DEFAULT_TARGET],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["ok"], r["failures"]
    assert 0 < r["impl_s"] < r["run_s"], r
    # Each phase alone is a part of the whole run (timings are noisy: allow 50% slack, no more).
    for phase in ("stat", "exact"):
        assert 0 < r[f"{phase}_run_s"] < 1.5 * r["run_s"], (phase, r)
    assert r["stat_impl_s"] > r["exact_impl_s"] > 0, "the exact phase calls on small inputs, the statistical on samples"
    assert r["calls"] > 0 and r["elements"] > r["calls"]
    assert r["mdes"]["DROP-RATE/binomial"] > 0

    r.update(walls_s=[2.0, 2.5], wall_s=2.0, peak_rss_mib=300.0, overhead_share=0.5, elements_per_s=1e7,
             stat_overhead_share=0.3)
    row = next(line for line in render({"quick": r}, DEFAULT_TARGET).splitlines() if line.startswith("| quick"))
    assert f"| {r['exact_run_s']:.2f} |" in row and "| 2.00 [2.00, 2.50] |" in row, row
