"""`dropcheck bench`: how long a verdict takes, where the time goes, and what it buys.

For each profile, a fresh `python -m dropcheck.bench --child PROFILE TARGET` process runs one full
check (so start-up is counted, as a user pays it) and reports, from inside: the time spent in the
implementation's own calls (a `CallMeter`), the elements it processed, its peak memory, and the
minimum detectable effects the run reached. It then replays the very same calls in a bare loop
(same shapes, dtypes and modes, fresh inputs) to show what the implementation alone costs.
The parent writes everything to reports/performance.md.
"""
from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_TARGET = "reference_impls.inverted:InvertedDropout"


def _child(profile: str, target: str) -> dict[str, Any]:
    import torch

    from dropcheck.runner import run_check
    from dropcheck.targets import CallMeter, resolve_dropout
    from dropcheck.verdict import Status

    resolved = resolve_dropout(target)
    resolved.meter = CallMeter()
    start = time.perf_counter()
    result = run_check(resolved, profile=profile)
    run_s = time.perf_counter() - start
    meter = resolved.meter

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

    # The statistical phase alone (same seeds, same verdicts): where sampling overhead shows,
    # without the Hypothesis search of the exact properties.
    from dropcheck import registry

    stat_ids = [p.id for p in registry.for_contract("inverted", "statistical")]
    stat_target = resolve_dropout(target)
    stat_target.meter = CallMeter()
    stat_start = time.perf_counter()
    run_check(stat_target, profile=profile, only=stat_ids)
    stat_run_s = time.perf_counter() - stat_start

    mdes = {}
    for v in result.verdicts:
        for t in v.tests:
            if t.mde is not None:
                key = f"{v.property_id}/{t.name}"
                mdes[key] = max(mdes.get(key, 0.0), t.mde)  # the weakest p's figure
    return {
        "ok": result.ok,
        "failures": [v.label for v in result.verdicts if v.status not in (Status.PASS, Status.SKIP)],
        "run_s": run_s,
        "impl_s": meter.seconds,
        "calls": meter.calls,
        "elements": meter.elements,
        "bare_s": bare_s,
        "stat_run_s": stat_run_s,
        "stat_impl_s": stat_target.meter.seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tests": result.ledger["tests"],
        "mdes": mdes,
    }


def measure(profile: str, target: str = DEFAULT_TARGET) -> dict[str, Any]:
    """Run one profile in a fresh process and return its figures (wall time includes start-up)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dropcheck.bench", "--child", profile, target],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"bench child for profile {profile} failed:\n{proc.stderr[-2000:]}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["wall_s"] = wall
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
        f"{platform.machine()} with {torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}.",
        "",
        "- **wall**: the whole `python -m dropcheck` process, start-up included (what a user waits).",
        "- **run**: `run_check` itself; **impl**: time inside the implementation's own calls;",
        "  **overhead** = (run − impl) / run: dropcheck's share (target ≤ 25%).",
        "- **bare loop**: the same calls (shapes, dtypes, modes) replayed with nothing around them.",
        "",
        "- **statistical phase**: the statistical properties alone (`--only` them): run s, impl s and",
        "  overhead, i.e. the sampling and the scipy tests without the exact properties' Hypothesis search.",
        "",
        "| profile | verdict | wall s | run s | impl s | overhead | statistical phase: run s / impl s / overhead | calls | elements | elements/s | bare loop s | peak RSS MiB | tests |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        verdict = "all pass" if r["ok"] else "FAIL: " + ", ".join(r["failures"])
        lines.append(
            f"| {name} | {verdict} | {r['wall_s']:.2f} | {r['run_s']:.2f} | {r['impl_s']:.2f} | {r['overhead_share']:.0%} | "
            f"{r['stat_run_s']:.2f} / {r['stat_impl_s']:.2f} / {r['stat_overhead_share']:.0%} | "
            f"{r['calls']} | {r['elements']:.3g} | {r['elements_per_s']:.3g} | {r['bare_s']:.2f} | {r['peak_rss_mib']:.0f} | {r['tests']} |"
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
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], sys.argv[3])))
    else:
        sys.exit("usage: python -m dropcheck.bench --child PROFILE TARGET (use `dropcheck bench` instead)")
