"""The conformance run: TARGET → adapter → properties → verdicts, for every p and device asked for.

`run_check` is what the CLI, the pytest plugin and the Python API call. It plans the alpha ledger
before any sampling, runs the exact properties once per device and the statistical ones once per
(p, device), and returns a `CheckResult` holding every verdict with its evidence.
"""
from __future__ import annotations

import dataclasses
import datetime
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from dropcheck import __version__, registry
from dropcheck.contracts import get_contract
from dropcheck.context import CheckContext
from dropcheck.exact import run_exact
from dropcheck.ledger import Ledger, get_profile
from dropcheck.defaults import DEFAULT_PS, DEFAULT_SEED
from dropcheck.seeding import seeded
from dropcheck.statistical import run_statistical
from dropcheck.targets import DropoutTarget, resolve_dropout
from dropcheck.verdict import Status, Verdict

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
    }


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

    @property
    def ok(self) -> bool:
        """True when no property failed, errored or timed out (skips and passes only)."""
        return all(v.status in (Status.PASS, Status.SKIP) for v in self.verdicts)

    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status not in (Status.PASS, Status.SKIP)]

    def summary(self) -> str:
        """A readable account: one line per failing verdict with its replay command."""
        counts: dict[str, int] = {}
        for v in self.verdicts:
            counts[v.status.value] = counts.get(v.status.value, 0) + 1
        head = f"dropcheck {self.target} (contract {self.contract}, profile {self.profile}, seed {self.seed}): " + ", ".join(
            f"{n} {s}" for s, n in counts.items()
        )
        lines = [head]
        for v in self.failures():
            lines.append(f"  {v.status.value.upper()} {v.label}: {v.summary}\n    replay: {v.replay}")
        return "\n".join(lines)

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
            "ok": self.ok,
            "started": self.started,
            "finished": self.finished,
            "duration_s": round(self.duration_s, 3),
            "versions": self.versions,
            "alpha_ledger": self.ledger,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


def probe_spatial_rank(target: DropoutTarget, device: str) -> int:
    """For channel contracts: the number of spatial dims after (N, C) the target accepts cleanly.

    Dropout1d takes (N, C, L), Dropout2d (N, C, H, W), Dropout3d (N, C, D, H, W); fewer dims warn,
    raise, or are read as an unbatched input (Dropout3d takes a 4-D input as (C, D, H, W)). So the
    highest rank that runs in both modes without a warning wins; failing that, the highest that
    runs at all; failing that, 1 (and the properties will report the errors).
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
            except Exception:
                continue
        (noisy if caught else clean).append(rank)
    return max(clean or noisy or [1])


def run_check(
    target: str | Any,
    contract: str = "inverted",
    ps: Sequence[float] = DEFAULT_PS,
    device: str | Sequence[str] = "cpu",
    seed: int = DEFAULT_SEED,
    profile: str = "default",
    only: Sequence[str] | None = None,
    on_verdict: Callable[[Verdict], None] | None = None,
) -> CheckResult:
    """Check a dropout TARGET against a contract and return every verdict.

    >>> result = run_check("torch.nn:Dropout", profile="quick", only=["EVAL-IDENTITY"])
    >>> result.ok
    True
    """
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    resolved = resolve_dropout(target)
    resolved.check_constructible()
    con = get_contract(contract)
    prof = get_profile(profile)
    ps = [float(p) for p in ps]
    devices = expand_devices(device)
    properties = registry.for_contract(con.name)
    if only:
        wanted = [registry.get(pid).id for pid in only]
        properties = [p for p in properties if p.id in wanted]
    runnable = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    statistical_ids = [p.id for p in properties if p.kind == "statistical"]
    ledger = Ledger.plan(statistical_ids, [p for p in ps if 0.0 < p < 1.0], runnable)

    verdicts: list[Verdict] = []

    def emit(v: Verdict) -> None:
        verdicts.append(v)
        if on_verdict is not None:
            on_verdict(v)

    spatial_rank = None
    for dev in devices:
        if dev not in runnable:
            for prop in properties:
                emit(Verdict(prop.id, Status.SKIP, CUDA_MISSING, device=dev, seed=seed))
            continue
        rank = probe_spatial_rank(resolved, dev) if con.unit == "channel" else 1
        spatial_rank = rank if con.unit == "channel" else None
        ctx = CheckContext(resolved, con, dev, seed, tuple(ps), prof.max_examples, rank)
        for prop in properties:
            if prop.kind == "exact":
                emit(run_exact(ctx, prop.id))
        for p in ps:
            for prop in properties:
                if prop.kind == "statistical":
                    emit(run_statistical(ctx, prof, ledger, prop.id, p))

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
    )

