"""Verdicts: what dropcheck says about one property, with the evidence behind it.

Every check in dropcheck (exact, statistical, decoding) ends in a `Verdict`. The CLI prints them,
the JSON report serialises them, the pytest plugin asserts on them: one shape for all three.
"""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any


class Status(str, enum.Enum):
    """The outcome of one property check.

    PASS/FAIL are the statistical CONFORMS/VIOLATES too; INCONCLUSIVE is a check that reached no
    verdict (a sample not run after others hung: dropcheck.hangs), or a statistical test whose
    planned sample could not be completed; ERROR means the implementation raised; SKIP carries a
    reason (no CUDA, not applicable to the contract); TIMEOUT means the per-property limit ran out.
    """

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"
    INCONCLUSIVE = "inconclusive"
    TIMEOUT = "timeout"

    @property
    def is_failure(self) -> bool:
        return self in (Status.FAIL, Status.ERROR, Status.TIMEOUT)


@dataclasses.dataclass
class StatTest:
    """One statistical test inside a property: its p-value against its share of the alpha budget.

    `mde` is the smallest effect the sample could detect with the planned power, in the units
    named by `mde_unit` (e.g. "drop-rate bias" or "correlation").
    """

    name: str
    pvalue: float
    alpha: float
    n: int
    statistic: float | None = None
    mde: float | None = None
    mde_unit: str | None = None
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def rejected(self) -> bool:
        return self.pvalue <= self.alpha

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rejected"] = self.rejected
        return d


@dataclasses.dataclass
class Verdict:
    """The verdict on one property for one configuration (p, dtype, device).

    `summary` is the one-line evidence shown in the CLI; `evidence` holds everything else
    (counts, first offending element, exception text). `replay` is a command that reproduces it.
    """

    property_id: str
    status: Status
    summary: str
    device: str = "cpu"
    p: float | None = None
    dtype: str | None = None
    seed: int | None = None
    replay: str = ""
    duration_s: float = 0.0
    tests: list[StatTest] = dataclasses.field(default_factory=list)
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short name for the configuration, e.g. `DROP-RATE[p=0.1,cpu]`."""
        parts = []
        if self.p is not None:
            parts.append(f"p={self.p:g}")
        if self.dtype:
            parts.append(self.dtype)
        parts.append(self.device)
        return f"{self.property_id}[{','.join(parts)}]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "property": self.property_id,
            "status": self.status.value,
            "summary": self.summary,
            "device": self.device,
            "p": self.p,
            "dtype": self.dtype,
            "seed": self.seed,
            "replay": self.replay,
            "duration_s": round(self.duration_s, 4),
            "tests": [t.to_dict() for t in self.tests],
            "evidence": self.evidence,
        }


def gathering(on_verdict: Callable[[Verdict], None] | None = None) -> tuple[list[Verdict], Callable[[Verdict], None]]:
    """A list that fills as a run's verdicts come, and the callback that fills it, passing each
    verdict on to `on_verdict` (the CLI's printing, a progress bar) as it comes."""
    verdicts: list[Verdict] = []

    def gather(verdict: Verdict) -> None:
        verdicts.append(verdict)
        if on_verdict is not None:
            on_verdict(verdict)

    return verdicts, gather


def failures(verdicts: list[Verdict]) -> list[Verdict]:
    """The verdicts that make a run not ok: anything but PASS and SKIP."""
    return [v for v in verdicts if v.status not in (Status.PASS, Status.SKIP)]


def summarize(title: str, verdicts: list[Verdict]) -> str:
    """`title: N pass, M fail`, then one line per failing verdict with its replay command: the
    message a user sees from `assert result.ok, result.summary()`."""
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status.value] = counts.get(v.status.value, 0) + 1
    lines = [f"{title}: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    for v in failures(verdicts):
        lines.append(f"  {v.status.value.upper()} {v.label}: {v.summary}\n    replay: {v.replay}")
    return "\n".join(lines)


def worst(statuses: list[Status]) -> Status:
    """The status that decides a group: any failure beats inconclusive beats pass beats skip."""
    order = [Status.ERROR, Status.TIMEOUT, Status.FAIL, Status.INCONCLUSIVE, Status.PASS, Status.SKIP]
    for s in order:
        if s in statuses:
            return s
    return Status.SKIP
