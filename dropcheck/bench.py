"""`dropcheck bench`: how long a verdict takes, where the time goes, and what it buys.

For each profile, two kinds of process:
- the user's: `python -m dropcheck check TARGET --profile P`, run as a user runs it (forked
  workers, start-up and exit included), several times: its wall time, its largest process (from
  `os.wait4`) and the memory of its whole process tree (sampled) are what the user waits and pays;
- instrumented ones, `python -m dropcheck.bench --child PROFILE TARGET PHASE`, each in a fresh
  process, with a `CallMeter` timing the implementation's own calls:
  - "lanes": the check as the command runs it, in forked workers, the two lanes side by side
    (dropcheck.lanes); the workers add their calls' times into shared memory (`SharedCallMeter`);
  - "all": the whole check in-process, on one core (then its calls replayed in a bare loop: same
    shapes, dtypes and modes);
  - "statistical" and "exact": each phase alone, in-process, to split the one-core overhead between
    the sampling and the exact properties (one Hypothesis draw of inputs, and the checks on them).
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
from dropcheck.targets import CallMeter

DEFAULT_TARGET = "reference_impls.inverted:InvertedDropout"


PHASES = ("lanes", "all", "statistical", "exact")  # what one instrumented child runs: each in a fresh process


class SharedCallMeter(CallMeter):
    """A `CallMeter` whose totals survive the fork: each forked worker of a run adds its calls'
    seconds, count and elements into its own slot of shared memory (claimed by its pid, under a
    lock), where the parent reads them. It keeps no per-call log (the bare loop replays the
    in-process run's). With it the runner forks as the command does, instead of running the
    checks in-process. For the well-behaved references the bench times: a worker killed while
    holding the lock would stop the others, and the figures are per worker, not per lane (after a
    worker is replaced, a lane's calls are split over two slots)."""

    crosses_fork = True
    SLOTS = 32  # workers per run: one per lane, plus one after each hang, crash or allocation failure

    def __init__(self) -> None:
        import multiprocessing

        super().__init__()
        self._slots = multiprocessing.get_context("fork").Array("d", 4 * self.SLOTS)  # pid, s, calls, elements
        self._mine: int | None = None  # this process's slot, once claimed
        self._pid = 0

    def add(self, x: Any, training: bool, seconds: float) -> None:
        s = self._slots
        with s.get_lock():
            if self._pid != os.getpid():  # first call in this process (a fresh worker)
                self._pid = os.getpid()
                free = [i for i in range(self.SLOTS) if s[4 * i] in (0.0, float(self._pid))]
                if not free:
                    raise RuntimeError(f"SharedCallMeter: more than {self.SLOTS} worker processes in one run")
                self._mine = free[0]
                s[4 * self._mine] = float(self._pid)
            i = 4 * self._mine
            s[i + 1] += seconds
            s[i + 2] += 1
            s[i + 3] += x.numel()

    def per_process(self) -> list[tuple[float, int, int]]:
        """(seconds, calls, elements) of each process that made calls, most seconds first."""
        s = self._slots
        with s.get_lock():
            rows = [(s[4 * i + 1], int(s[4 * i + 2]), int(s[4 * i + 3])) for i in range(self.SLOTS) if s[4 * i]]
        return sorted(rows, reverse=True)


def _child(profile: str, target: str, phase: str = "all") -> dict[str, Any]:
    """One instrumented run of `phase` (see PHASES and the module docstring; same seeds, same
    verdicts in each). Each phase gets a fresh process so that none is timed with caches another
    one warmed (the exact phase run after the others took 20% less)."""
    import torch

    from dropcheck import registry
    from dropcheck.runner import run_check
    from dropcheck.targets import resolve_dropout
    from dropcheck.verdict import Status

    if phase == "lanes":  # as the command runs: the workers set themselves up (dropcheck.guard)
        resolved = resolve_dropout(target)
        resolved.meter = meter = SharedCallMeter()
        start = time.perf_counter()
        result = run_check(resolved, profile=profile)
        run_s = time.perf_counter() - start
        workers = meter.per_process()
        return {"ok": result.ok, "run_s": run_s, "impl_s": sum(w[0] for w in workers),
                "calls": sum(w[1] for w in workers), "elements": sum(w[2] for w in workers),
                "longest_impl_s": workers[0][0], "impl_s_by_worker": [w[0] for w in workers],
                "lanes": result.limits["lanes"].get("cpu", "")}

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
LANES_REPEATS = {"quick": 5, "default": 5}  # the forked run shares two cores with itself: noisier


def time_cli(profile: str, target: str, repeats: int,
             sample_memory: bool = False) -> list[tuple[float, float | None, float | None]]:
    """(wall seconds, largest process's peak RSS MiB, peak memory of the process tree MiB or None)
    of `repeats` runs of the real command; a figure this platform cannot give is None. Sampling
    the tree's memory costs CPU beside the run (the median wall time at `default` read 2.9 s with
    it, 2.4 s without), so the runs timed are not the one sampled."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "dropcheck", "check", target, "--profile", profile],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tree = _TreeMemory(proc.pid) if sample_memory else None
        if hasattr(os, "wait4"):
            # wait4's usage covers the process and the children it reaped (the check's workers): its
            # maxrss is the largest of them, not their sum, which `_TreeMemory` samples.
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            peak = usage.ru_maxrss / 1024
        else:
            proc.wait()
            peak = None
        runs.append((time.perf_counter() - start, peak, tree.stop() if tree is not None else None))
    return runs


class _TreeMemory:
    """Samples, every 10 ms, the memory of a process and all its descendants: the sum of their
    proportional set sizes (Pss: a page shared by n processes counts 1/n in each), so that the
    lanes' two workers, which share most of their pages with the command, are not counted twice.
    Linux only (/proc); a sample may miss a peak shorter than 10 ms."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid, self.peak, self._done = pid, 0.0, threading.Event()
        self.usable = os.path.exists(f"/proc/{pid}/smaps_rollup")
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while self.usable and not self._done.wait(0.01):
            self.peak = max(self.peak, sum(_pss_kib(p) for p in _descendants(self.pid)) / 1024)

    def stop(self) -> float | None:
        self._done.set()
        self._thread.join()
        return self.peak if self.usable and self.peak > 0 else None


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:  # it has just exited
            continue
        for task in tasks:
            try:
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            except OSError:  # that thread has just exited
                pass
    return found


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
    except (OSError, ValueError, IndexError):
        return 0


def measure(profile: str, target: str = DEFAULT_TARGET) -> dict[str, Any]:
    """One profile's figures: the real command's wall time and peak memory, and the instrumented
    runs' split of where the time went."""
    figures = run_child(profile, target)  # in-process, one core: the calls' log, the bare loop, the MDEs
    figures["one_core_overhead_share"] = (figures["run_s"] - figures["impl_s"]) / figures["run_s"]
    lanes = [run_child(profile, target, "lanes") for _ in range(LANES_REPEATS.get(profile, 1))]
    for run in lanes:
        if (run["calls"], run["elements"]) != (figures["calls"], figures["elements"]):
            raise RuntimeError(f"the forked run made {run['calls']} calls on {run['elements']} elements, the "
                               f"in-process one {figures['calls']} on {figures['elements']}: not the same check")
        run["overhead_share"] = (run["run_s"] - run["longest_impl_s"]) / run["run_s"]
    lanes.sort(key=lambda run: run["overhead_share"])
    middle = lanes[len(lanes) // 2]  # the median run (of an odd number)
    figures.update(lanes=middle["lanes"], lanes_run_s=middle["run_s"], lanes_impl_s=middle["longest_impl_s"],
                   lanes_other_impl_s=middle["impl_s"] - middle["longest_impl_s"],
                   overhead_share=middle["overhead_share"], overhead_shares=[run["overhead_share"] for run in lanes])
    for phase, prefix in (("statistical", "stat"), ("exact", "exact")):
        part = run_child(profile, target, phase)
        figures[f"{prefix}_run_s"], figures[f"{prefix}_impl_s"] = part["run_s"], part["impl_s"]
    runs = time_cli(profile, target, WALL_REPEATS.get(profile, 1))
    runs += time_cli(profile, target, 1, sample_memory=True)  # not timed: see time_cli
    walls = sorted(w for w, _, _ in runs[:-1])
    figures["walls_s"] = walls
    figures["wall_s"] = statistics.median(walls)
    peaks = [m for _, m, _ in runs if m is not None]
    figures["peak_rss_mib"] = max(peaks) if peaks else None
    trees = [m for _, _, m in runs if m is not None]
    figures["peak_tree_mib"] = max(trees) if trees else None
    figures["elements_per_s"] = figures["elements"] / figures["lanes_run_s"]
    figures["stat_overhead_share"] = (figures["stat_run_s"] - figures["stat_impl_s"]) / figures["stat_run_s"]
    return figures


def render(results: dict[str, dict[str, Any]], target: str) -> str:
    import torch

    lines = [
        "# dropcheck performance",
        "",
        (f"Target `{target}` (contract inverted, p = 0.1, 0.5, 0.9, cpu). Measured by `dropcheck bench` on "
         f"{platform.machine()} ({os.cpu_count()} cores), Python {platform.python_version()}, "
         f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}."),
        "",
        "- **wall**: `python -m dropcheck check TARGET --profile P`, run as a user runs it, start-up and",
        "  exit included: the median, and every run's figure in brackets.",
        "- **peak RSS**: the largest resident memory of one process of that command (it or a worker), over",
        "  those runs; **peak memory**: the largest sum over the command and its workers, each counting",
        "  its shared pages in proportion (Pss, sampled every 10 ms).",
        "- **run**: `run_check` itself, as the command runs it: in forked workers, two lanes side by side",
        "  (dropcheck.lanes: the implementation's many calls in one, the exact properties and the small-sample",
        "  analyses in the other), instrumented; the median of several runs by overhead.",
        "  **impl**: time inside the implementation's own calls in the long lane's worker (the other",
        "  lane's calls, in **other lane impl**, overlap with it and are not counted as the",
        "  implementation's); **overhead** = (run − impl) / run: the share of the run dropcheck adds to",
        "  the implementation's own time (target ≤ 25%); every run's figure in brackets.",
        "- **one core**: the whole check in one process, one lane, no fork: run s / impl s / overhead,",
        "  i.e. dropcheck's share of the CPU time rather than of the wait.",
        "- **exact phase**: the exact properties alone (`--only` them, in-process, in a fresh process): one",
        "  Hypothesis draw of the profile's inputs (20 / 50 / 200), shared by the properties, and each",
        "  property's checks on them; its cost grows with that number, not with the sample sizes or the",
        "  implementation's speed (its calls are on inputs of a few to 2048 elements, and one of 65536 for",
        "  each of EVAL-IDENTITY, KEEPS-META, GRAD-MASK and INPUT-UNTOUCHED, so little of it is impl).",
        "- **statistical phase**: the statistical properties alone (`--only` them, likewise): run s,",
        "  impl s and overhead, i.e. the sampling, the counting and the scipy tests.",
        "- **bare loop**: the same calls (shapes, dtypes, modes) replayed with nothing around them.",
        "",
        "| profile | verdict | wall s | run s | impl s | other lane impl s | overhead | one core: run s / impl s / overhead | exact phase s | statistical phase: run s / impl s / overhead | calls | elements | elements/s | bare loop s | peak RSS MiB | peak memory MiB | tests |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        verdict = "all pass" if r["ok"] else "FAIL: " + ", ".join(r["failures"])
        walls = ", ".join(f"{w:.2f}" for w in r["walls_s"])
        shares = ", ".join(f"{s:.0%}" for s in r["overhead_shares"])
        peak = f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] is not None else "n/a"
        tree = f"{r['peak_tree_mib']:.0f}" if r["peak_tree_mib"] is not None else "n/a"
        lines.append(
            f"| {name} | {verdict} | {r['wall_s']:.2f} [{walls}] | {r['lanes_run_s']:.2f} | {r['lanes_impl_s']:.2f} | "
            f"{r['lanes_other_impl_s']:.2f} | {r['overhead_share']:.0%} [{shares}] | "
            f"{r['run_s']:.2f} / {r['impl_s']:.2f} / {r['one_core_overhead_share']:.0%} | {r['exact_run_s']:.2f} | "
            f"{r['stat_run_s']:.2f} / {r['stat_impl_s']:.2f} / {r['stat_overhead_share']:.0%} | "
            f"{r['calls']} | {r['elements']:.3g} | {r['elements_per_s']:.3g} | {r['bare_s']:.2f} | {peak} | {tree} | {r['tests']} |"
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
