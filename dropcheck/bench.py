"""`dropcheck bench`: how long a verdict takes, where the time goes, and what it buys.

For each profile, two kinds of process:
- the user's: `python -m dropcheck check TARGET --profile P`, run as a user runs it (forked
  worker, start-up and exit included), several times: its wall time and its peak memory (the
  process and its worker, from `os.wait4`) are what the user waits and pays;
- instrumented ones, `python -m dropcheck.bench --child PROFILE TARGET PHASE`, which run the same
  check in-process with a `CallMeter` timing the implementation's own calls: the whole check (then
  its calls replayed in a bare loop: same shapes, dtypes and modes), and in fresh processes the
  statistical phase alone and the exact phase alone, so that the overhead can be split between
  the sampling and the exact properties' Hypothesis search.
The parent writes everything to reports/performance.md.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dropcheck.allocator import keep_freed_memory

DEFAULT_TARGET = "reference_impls.inverted:InvertedDropout"


PHASES = ("all", "statistical", "exact")  # what one instrumented child runs: each in a fresh process


def _child(profile: str, target: str, phase: str = "all") -> dict[str, Any]:
    """One instrumented run of `phase`: the whole check ("all", then its bare loop), or only the
    statistical or only the exact properties (same seeds, same verdicts). Each phase gets a fresh
    process so that none is timed with caches another one warmed (the exact phase run after the
    others took 20% less)."""
    import torch

    from dropcheck import registry
    from dropcheck.runner import run_check
    from dropcheck.targets import CallMeter, resolve_dropout
    from dropcheck.verdict import Status

    # As in the real command's forked worker (dropcheck.guard): one torch thread, freed memory kept
    # for reuse, and everything imported so far frozen out of the garbage collector's sight.
    torch.set_num_threads(1)
    keep_freed_memory()
    resolved = resolve_dropout(target)
    gc.freeze()
    resolved.meter = CallMeter()
    only = None if phase == "all" else [p.id for p in registry.for_contract("inverted", phase)]
    start = time.perf_counter()
    result = run_check(resolved, profile=profile, only=only)
    run_s = time.perf_counter() - start
    meter = resolved.meter
    figures: dict[str, Any] = {"ok": result.ok, "run_s": run_s, "impl_s": meter.seconds, "calls": meter.calls,
                               "elements": meter.elements}
    if phase != "all":
        return figures

    # The bare loop: the same calls with nothing around them.
    replay = resolve_dropout(target)
    dut = replay.build(0.5)
    inputs: dict[tuple, torch.Tensor] = {}
    bare_start = time.perf_counter()
    for shape, dtype, training in meter.log:
        x = inputs.get((shape, dtype))
        if x is None:
            x = inputs.setdefault((shape, dtype), torch.rand(shape).to(dtype) + 1.0)
        (dut.train if training else dut.eval)(x)
    bare_s = time.perf_counter() - bare_start

    mdes = {}
    for v in result.verdicts:
        for t in v.tests:
            if t.mde is not None:
                key = f"{v.property_id}/{t.name}"
                mdes[key] = max(mdes.get(key, 0.0), t.mde)  # the weakest p's figure
    return {
        **figures,
        "failures": [v.label for v in result.verdicts if v.status not in (Status.PASS, Status.SKIP)],
        "bare_s": bare_s,
        "tests": result.ledger["tests"],
        "mdes": mdes,
    }


def run_child(profile: str, target: str, phase: str = "all") -> dict[str, Any]:
    """`_child` in its own process (`python -m dropcheck.bench --child PROFILE TARGET PHASE`)."""
    proc = subprocess.run([sys.executable, "-m", "dropcheck.bench", "--child", profile, target, phase],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child for profile {profile}, phase {phase} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


WALL_REPEATS = {"quick": 5, "default": 3}  # thorough: once (a minute each)


def time_cli(profile: str, target: str, repeats: int) -> list[tuple[float, float | None]]:
    """(wall seconds, peak RSS MiB or None) of `repeats` runs of the real command."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "dropcheck", "check", target, "--profile", profile],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if hasattr(os, "wait4"):
            # wait4's usage covers the process and the children it reaped (the check's worker).
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            peak = usage.ru_maxrss / 1024
        else:
            proc.wait()
            peak = None
        runs.append((time.perf_counter() - start, peak))
    return runs


def measure(profile: str, target: str = DEFAULT_TARGET) -> dict[str, Any]:
    """One profile's figures: the real command's wall time and peak memory, and the instrumented
    run's split of where the time went."""
    figures = run_child(profile, target)
    for phase, prefix in (("statistical", "stat"), ("exact", "exact")):
        part = run_child(profile, target, phase)
        figures[f"{prefix}_run_s"], figures[f"{prefix}_impl_s"] = part["run_s"], part["impl_s"]
    runs = time_cli(profile, target, WALL_REPEATS.get(profile, 1))
    walls = sorted(w for w, _ in runs)
    figures["walls_s"] = walls
    figures["wall_s"] = statistics.median(walls)
    peaks = [m for _, m in runs if m is not None]
    figures["peak_rss_mib"] = max(peaks) if peaks else None
    figures["overhead_share"] = (figures["run_s"] - figures["impl_s"]) / figures["run_s"]
    figures["elements_per_s"] = figures["elements"] / figures["run_s"]
    figures["stat_overhead_share"] = (figures["stat_run_s"] - figures["stat_impl_s"]) / figures["stat_run_s"]
    return figures


def render(results: dict[str, dict[str, Any]], target: str) -> str:
    import torch

    lines = [
        "# dropcheck performance",
        "",
        f"Target `{target}` (contract inverted, p = 0.1, 0.5, 0.9, cpu). Measured by `dropcheck bench` on "
        f"{platform.machine()} ({os.cpu_count()} cores), Python {platform.python_version()}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}.",
        "",
        "- **wall**: `python -m dropcheck check TARGET --profile P`, run as a user runs it, start-up and",
        "  exit included: the median, and every run's figure in brackets.",
        "- **peak RSS**: the largest resident memory of that command and its worker, over those runs.",
        "- **run**: `run_check` itself, in an instrumented process set up like the command's worker (one",
        "  torch thread); **impl**: time inside the implementation's own calls;",
        "  **overhead** = (run − impl) / run: dropcheck's share (target ≤ 25%).",
        "- **exact phase**: the exact properties alone (`--only` them, in a fresh process): the Hypothesis",
        "  search, whose cost grows with the profile's examples per property (10 / 25 / 100), not with",
        "  the sample sizes or the implementation's speed (its calls are on inputs of a few to 2048",
        "  elements, so almost none of it is impl).",
        "- **statistical phase**: the statistical properties alone (`--only` them, in a fresh process):",
        "  run s, impl s and overhead, i.e. the sampling, the counting and the scipy tests.",
        "- **bare loop**: the same calls (shapes, dtypes, modes) replayed with nothing around them.",
        "",
        "| profile | verdict | wall s | run s | impl s | overhead | exact phase s | statistical phase: run s / impl s / overhead | calls | elements | elements/s | bare loop s | peak RSS MiB | tests |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        verdict = "all pass" if r["ok"] else "FAIL: " + ", ".join(r["failures"])
        walls = ", ".join(f"{w:.2f}" for w in r["walls_s"])
        peak = f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] is not None else "n/a"
        lines.append(
            f"| {name} | {verdict} | {r['wall_s']:.2f} [{walls}] | {r['run_s']:.2f} | {r['impl_s']:.2f} | "
            f"{r['overhead_share']:.0%} | {r['exact_run_s']:.2f} | "
            f"{r['stat_run_s']:.2f} / {r['stat_impl_s']:.2f} / {r['stat_overhead_share']:.0%} | "
            f"{r['calls']} | {r['elements']:.3g} | {r['elements_per_s']:.3g} | {r['bare_s']:.2f} | {peak} | {r['tests']} |"
        )
    lines += ["", "## Minimum detectable effects reached (power 0.999, the weakest p of the run)", ""]
    keys = sorted({k for r in results.values() for k in r["mdes"]})
    lines.append("| test | " + " | ".join(results) + " |")
    lines.append("|---|" + "---|" * len(results))
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{r['mdes'].get(k, float('nan')):.3g}" for r in results.values()) + " |")
    return "\n".join(lines) + "\n"


def run_bench(profiles: list[str], out: Path, target: str = DEFAULT_TARGET) -> dict[str, dict[str, Any]]:
    results = {name: measure(name, target) for name in profiles}
    out.write_text(render(results, target))
    return results


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "--child" and (len(sys.argv) == 4 or sys.argv[4] in PHASES):
        print(json.dumps(_child(*sys.argv[2:])))
    else:
        sys.exit(f"usage: python -m dropcheck.bench --child PROFILE TARGET [{'|'.join(PHASES)}] (use `dropcheck bench` instead)")
