"""The conformance run: TARGET → adapter → properties → verdicts, for every p and device asked for.

`run_check` is what the CLI, the pytest plugin and the Python API call. It plans the alpha ledger
before any sampling, runs the exact properties once per device and the statistical ones once per
(p, device), and returns a `CheckResult` holding every verdict with its evidence.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from dropcheck import __version__, guard, registry, statistical
from dropcheck.context import CheckContext
from dropcheck.contracts import get_contract
from dropcheck.defaults import DEFAULT_PS, DEFAULT_SEED
from dropcheck.exact import run_exact
from dropcheck.hangs import HangStreak
from dropcheck.lanes import run_lanes, side_by_side
from dropcheck.ledger import Ledger, get_profile
from dropcheck.seeding import seeded
from dropcheck.statistical import run_statistical
from dropcheck.targets import DropoutTarget, describe_object, resolve_dropout, target_code
from dropcheck.verdict import Status, Verdict, failures, gathering, summarize

CUDA_MISSING = "CUDA not available on this machine (torch.cuda.is_available() is False)"


def versions() -> dict[str, str]:
    import numpy
    import scipy

    return {
        "dropcheck": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.version.cuda or "none",  # the CUDA runtime torch was built with
        "cuda_devices": _cuda_devices(),
    }


def _cuda_devices() -> str:
    """The CUDA devices' names, read only where this process has initialised CUDA already (a CUDA
    run): reading them would initialise it, and from then on every CPU check in this process would
    run without a forked worker (dropcheck.guard), losing its crash and memory isolation."""
    if not torch.cuda.is_available():
        return "none"
    if not torch.cuda.is_initialized():
        return f"{torch.cuda.device_count()} (names not read: this run did not use CUDA)"
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def expand_devices(device: str | Sequence[str]) -> list[str]:
    """'cpu' | 'cuda' | 'all' (or a list of them) → the device names to run on, in order."""
    names = [device] if isinstance(device, str) else list(device)
    out: list[str] = []
    for name in names:
        for d in (["cpu", "cuda"] if name == "all" else [name]):
            if d not in ("cpu", "cuda"):
                raise ValueError(f"unknown device {d!r}; choose cpu, cuda or all")
            if d not in out:
                out.append(d)
    return out


@dataclasses.dataclass
class CheckResult:
    """All verdicts of one run, with what is needed to replay and report it."""

    target: str
    contract: str
    profile: str
    seed: int
    ps: list[float]
    devices: list[str]
    verdicts: list[Verdict]
    ledger: dict[str, Any]
    started: str
    finished: str
    duration_s: float
    versions: dict[str, str]
    spatial_rank: int | None = None
    dtype: str = "float32"
    interrupted: bool = False  # Ctrl-C: `verdicts` holds those gathered before it
    limits: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no property failed, errored or timed out (skips and passes only), and the run
        was not interrupted."""
        return not self.interrupted and not failures(self.verdicts)

    def failures(self) -> list[Verdict]:
        return failures(self.verdicts)

    def summary(self) -> str:
        """A readable account: one line per failing verdict with its replay command."""
        return summarize(f"dropcheck {self.target} (contract {self.contract}, profile {self.profile}, seed {self.seed})",
                         self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "dropcheck-report/1",
            "kind": "check",
            "target": self.target,
            "contract": self.contract,
            "profile": self.profile,
            "seed": self.seed,
            "ps": self.ps,
            "devices": self.devices,
            "spatial_rank": self.spatial_rank,
            "sample_dtype": self.dtype,
            "ok": self.ok,
            "interrupted": self.interrupted,
            "limits": self.limits,
            "started": self.started,
            "finished": self.finished,
            "duration_s": round(self.duration_s, 3),
            "versions": self.versions,
            "alpha_ledger": self.ledger,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


def probe_ranks(target: DropoutTarget, device: str) -> tuple[int, ...]:
    """For channel contracts: the numbers of spatial dims after (N, C) the target accepts cleanly.

    Dropout1d takes (N, C, L), Dropout2d (N, C, H, W), Dropout3d (N, C, D, H, W); fewer dims warn,
    raise, or are read as an unbatched input (Dropout3d takes a 4-D input as (C, D, H, W)). So the
    ranks that run in both modes without a warning are the ones checked, the highest by every
    property; failing that, the highest that runs at all; failing that, 1 (and the properties will
    report the errors).
    """
    clean, noisy = [], []
    for rank in (1, 2, 3):
        x = torch.ones((2, 3, *([2] * rank)), device=device)
        with warnings.catch_warnings(record=True) as caught, seeded(0):
            warnings.simplefilter("always")
            try:
                dut = target.build(0.5, device)
                dut.train(x)
                dut.eval(x)
            except Exception:  # noqa: S112  (a rank the target rejects is simply not a candidate)
                continue
        (noisy if caught else clean).append(rank)
    return tuple(clean) or (max(noisy or [1]),)


def check_only(property_ids: Sequence[str], contract: str) -> None:
    """`--only` must name properties of the contract: a gate that silently checks nothing (a
    misspelled or wrong-contract ID) would pass CI without testing anything."""
    applicable = {p.id for p in registry.for_contract(contract)}
    foreign = [pid for pid in property_ids if pid not in applicable]
    if foreign:
        raise ValueError(f"--only: {', '.join(foreign)} not part of contract {contract!r}; "
                         f"its properties are {', '.join(sorted(applicable))}")


def run_check(
    target: str | Any,
    contract: str = "inverted",
    ps: Sequence[float] = DEFAULT_PS,
    device: str | Sequence[str] = "cpu",
    seed: int = DEFAULT_SEED,
    profile: str = "default",
    only: Sequence[str] | None = None,
    dtype: str = "float32",
    on_verdict: Callable[[Verdict], None] | None = None,
    select: Callable[[str, float | None, str], bool] | None = None,
    timeout: float | None = guard.DEFAULT_TIMEOUT_S,
    memory_limit_mb: int | None = guard.DEFAULT_MEMORY_LIMIT_MB,
    hangs: dict[str, HangStreak] | None = None,
) -> CheckResult:
    """Check a dropout TARGET against a contract and return every verdict.

    >>> result = run_check("torch.nn:Dropout", profile="quick", only=["EVAL-IDENTITY"])
    >>> result.ok
    True

    `select(property_id, p, device)` (p None for exact properties) runs only the slices it accepts,
    with the alpha ledger still planned over the whole run: the pytest plugin runs one per test.

    Each property check runs under `timeout` seconds and `memory_limit_mb` (None or 0: no limit;
    see `dropcheck.guard`): one that hangs, crashes or runs out of memory gets a TIMEOUT or ERROR
    verdict and the run goes on. Once 3 statistical samples in a row have timed out on a device,
    the samples not yet started there of a property that timed out are not run, and are
    INCONCLUSIVE (dropcheck.hangs).
    `hangs` (device -> HangStreak) carries those counts across calls (the plugin runs one slice
    per call).
    Ctrl-C stops the run and returns the verdicts gathered so far, with `interrupted` set.
    """
    keep = select or (lambda pid, p, dev: True)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    # The CLI and the plugin resolved TARGET already (targets.resolve_within); from the API this is
    # the first time its code runs, so a hang or an exit there is a TargetError here too.
    named = target if isinstance(target, str) else describe_object(target)
    with target_code(named, timeout, "importing it and building it with p=0.5"):
        resolved = resolve_dropout(target)
        resolved.check_constructible()
    con = get_contract(contract)
    prof = get_profile(profile)
    ps = [float(p) for p in ps]
    devices = expand_devices(device)
    runnable = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    # The ledger is planned over the whole run even with --only, so that `--only ID` replays a
    # verdict of the full run exactly: same seed, same sample, same alpha share.
    ledger = plan_ledger(con.name, ps, runnable, prof.name)
    if only:
        check_only([registry.get(pid).id for pid in only], con.name)
    plan = [slot for slot in check_plan(con.name, ps, devices, only) if keep(*slot)]

    verdicts, emit = gathering(on_verdict)
    spatial_rank = None
    limits: dict[str, Any] = {"timeout_s": timeout or None, "memory_limit_mb": memory_limit_mb or None,
                              "isolation": {}, "lanes": {}}
    interrupted = False
    hangs = {} if hangs is None else hangs  # one count per device: a slow CPU path says nothing of CUDA
    try:
        for dev in devices:
            slots = [(pid, p) for pid, p, d in plan if d == dev]
            if dev not in runnable:
                for pid, _ in slots:
                    emit(Verdict(pid, Status.SKIP, CUDA_MISSING, device=dev, seed=seed))
                continue
            mechanism = limits["isolation"][dev] = _mechanism(resolved, dev)
            # The spatial rank is set by the probe, run before the other checks for a channel contract.
            ctx = CheckContext(resolved, con, dev, seed, tuple(ps), prof.max_examples, 1, getattr(torch, dtype),
                               prof.name, timeout, memory_limit_mb)
            planned: list[Planned] = [
                (pid, p, functools.partial(run_exact, ctx, pid) if p is None
                 else functools.partial(run_statistical, ctx, prof, ledger, pid, p))
                for pid, p in slots
            ]
            parallel = side_by_side(mechanism, len({lane_of(pid, p) for pid, p, _ in planned}))
            limits["lanes"][dev] = "side by side" if parallel else "one after the other"
            try:
                if con.unit == "channel" and planned:
                    _run_limited(ctx, [(None, None, functools.partial(_probe_into, ctx))], limits, emit)
                _run_limited(ctx, planned, limits, emit, parallel, hangs.setdefault(dev, HangStreak()))
            finally:  # also when interrupted: the probe's result is known here as soon as it ran
                spatial_rank = ctx.spatial_rank if con.unit == "channel" else None
    except KeyboardInterrupt:  # Ctrl-C: stop, and keep every verdict gathered so far
        interrupted = True

    return CheckResult(
        target=resolved.spec,
        contract=con.name,
        profile=prof.name,
        seed=seed,
        ps=ps,
        devices=devices,
        verdicts=verdicts,
        ledger=ledger.to_dict(),
        started=started.isoformat(timespec="seconds"),
        finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        duration_s=time.perf_counter() - t0,
        versions=versions(),
        spatial_rank=spatial_rank,
        dtype=dtype,
        interrupted=interrupted,
        limits=limits,
    )


def _mechanism(target: DropoutTarget, device: str) -> str:
    # `dropcheck bench` times the implementation's calls with a CallMeter, which counts only in this
    # process unless it says it crosses the fork (bench.SharedCallMeter): otherwise no fork.
    meter = getattr(target, "meter", None)
    if meter is not None and not getattr(meter, "crosses_fork", False):
        return "alarm"
    return guard.choose_mechanism(device)


def _probe_into(ctx: CheckContext) -> tuple[int, ...]:
    """The channel-rank probe calls the implementation too, so it runs under the same limits, as the
    first check of the sequence: it sets the ranks in the process that runs the checks after it."""
    ranks = probe_ranks(ctx.target, ctx.device)
    ctx.set_ranks(ranks)
    return ranks


def plan_ledger(contract: str, ps: Sequence[float], runnable_devices: Sequence[str], profile: str) -> Ledger:
    """The alpha ledger of a run: every statistical test of the contract at each p in (0, 1) that the
    property judges with the profile's sample, on each device that can run."""
    prof = get_profile(profile)
    statistical_ids = [p.id for p in registry.for_contract(contract, kind="statistical")]
    return Ledger.plan(statistical_ids, [p for p in ps if 0.0 < p < 1.0], list(runnable_devices),
                       judged=lambda pid, test, p: statistical.judges(pid, p, prof, test))


def check_plan(contract: str, ps: Sequence[float], devices: Sequence[str],
               only: Sequence[str] | None = None) -> list[tuple[str, float | None, str]]:
    """(property ID, p, device) of each verdict `run_check` gives, in its order: device by device,
    the exact properties (p None), then each statistical one at each p; on a CUDA device this
    machine lacks, one skip per property (p None).

    >>> check_plan("inverted", [0.5], ["cpu"], only=["EVAL-IDENTITY", "DROP-RATE"])
    [('EVAL-IDENTITY', None, 'cpu'), ('DROP-RATE', 0.5, 'cpu')]
    """
    wanted = {registry.get(pid).id for pid in only} if only else None
    properties = [p for p in registry.for_contract(contract) if wanted is None or p.id in wanted]
    plan: list[tuple[str, float | None, str]] = []
    for dev in devices:
        if dev != "cpu" and not torch.cuda.is_available():
            plan += [(prop.id, None, dev) for prop in properties]
            continue
        plan += [(prop.id, None, dev) for prop in properties if prop.kind == "exact"]
        plan += [(prop.id, float(p), dev) for p in ps for prop in properties if prop.kind == "statistical"]
    return plan


Planned = tuple[str | None, float | None, Callable[[], Any]]  # (property ID, p, check); ID None: the probe


def lane_of(property_id: str | None, p: float | None) -> int:
    """Which lane (dropcheck.lanes) runs a check: 0, the implementation's many calls (the
    statistical samples, the long lane); 1, dropcheck's own work (the exact properties' search,
    the analysis of small samples: statistical.SECOND_LANE). The channel probe runs alone, before both."""
    return 0 if p is not None and property_id not in statistical.SECOND_LANE else 1


def _run_limited(ctx: CheckContext, planned: list[Planned], limits: dict[str, Any],
                 emit: Callable[[Verdict], None], parallel: bool = False, hangs: HangStreak | None = None) -> None:
    """Run one device's checks under the run's limits (dropcheck.guard), in their lanes side by
    side when `parallel` (dropcheck.lanes), emitting each verdict in plan order as soon as it and
    those before it are in, and turn a hang, a crash or an allocation failure into that
    property's verdict, so that it costs nothing else. `hangs` counts the statistical samples'
    timeouts in a row: once it trips, the samples left of a property that timed out are not run
    (INCONCLUSIVE, with their replay lines; dropcheck.hangs)."""

    def on_outcome(index: int, outcome: guard.Outcome) -> None:
        property_id, p, _ = planned[index]
        if property_id is None:
            # Here too, so that a worker forked after a failure inherits it. If the probe hung or
            # crashed, rank 1 is assumed and the properties report the problem themselves.
            ctx.set_ranks(outcome.value if outcome.status == "ok" else (1,))
        else:
            emit(_verdict(ctx, property_id, p, outcome, limits))

    run_lanes([check for _, _, check in planned], [lane_of(property_id, p) for property_id, p, _ in planned],
              limits["timeout_s"], device=ctx.device, memory_limit_mb=limits["memory_limit_mb"],
              mechanism=limits["isolation"][ctx.device], on_outcome=on_outcome, fresh_worker_after=_out_of_memory,
              parallel=parallel, hangs=hangs, groups=[property_id if p is not None else None for property_id, p, _ in planned])


def _out_of_memory(verdict: Any) -> bool:
    """Called in the worker: after this verdict the next check gets a fresh worker (whatever filled
    the memory may still hold it)."""
    return isinstance(verdict, Verdict) and verdict.status is Status.ERROR and guard.is_out_of_memory(verdict.summary)


def _verdict(ctx: CheckContext, property_id: str, p: float | None, outcome: guard.Outcome,
             limits: dict[str, Any]) -> Verdict:
    """The verdict of one property check from how it ended."""
    if outcome.status == "ok":
        verdict = outcome.value
        if verdict.status is Status.ERROR and guard.is_out_of_memory(verdict.summary):
            verdict.summary = guard.out_of_memory_summary(verdict.summary, limits["memory_limit_mb"], outcome.mechanism)
            verdict.evidence["out_of_memory"] = True
        return verdict
    timed_out, summary, evidence = guard.describe_unfinished(outcome, limits["timeout_s"], "the implementation")
    if timed_out and p is not None:
        summary += "; the sample could not be completed, so there is no verdict on it"
    status = Status.TIMEOUT if timed_out else Status.INCONCLUSIVE if outcome.status == "not-run" else Status.ERROR
    return Verdict(property_id, status, summary, device=ctx.device, p=p,
                   seed=ctx.seed, replay=ctx.replay(property_id, p), duration_s=outcome.elapsed, evidence=evidence)

