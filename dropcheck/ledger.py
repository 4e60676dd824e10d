"""Profiles and the alpha ledger: how much evidence a run gathers, and how its false-alarm budget
is shared.

One budget per `dropcheck check` run: the familywise false-alarm probability is at most
`FAMILY_ALPHA` = 1e-6, split by Bonferroni over every statistical test the run will make. The
tests are listed before any sampling starts (so the split cannot depend on the data), counted,
and each gets alpha = 1e-6 / m. Sample sizes then follow from each profile's sensitivity target at
that alpha with power 0.999 (see `dropcheck.power`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

FAMILY_ALPHA = 1e-6
POWER = 0.999

# The statistical tests each property makes, for each (p, device). Changing this list changes
# every alpha share, which is the point: the ledger is data, not a constant in each test.
TESTS_BY_PROPERTY: dict[str, tuple[str, ...]] = {
    "DROP-RATE": ("sequential", "binomial"),
    "EXPECTATION": ("overall-z", "per-position"),
    "RATE-HOMOGENEITY": ("blocks",),
    "RATE-EDGES": ("edges",),
    "INDEP-POSITIONS": ("markov", "periodogram", "stride-lags"),
    "INDEP-ROWS": ("row-correlation",),
    "INDEP-CALLS": ("consecutive", "cross-correlation", "dispersion", "position-counts"),
    "INDEP-INPUT": ("input-bins", "value-runs"),
}


@dataclasses.dataclass(frozen=True)
class Profile:
    """How hard a run looks. `rate_delta` is the drop-rate bias detected with power 0.999."""

    name: str
    rate_delta: float
    # Inputs each exact property is checked on, besides its fixed ones. They are drawn once per run
    # and shared by the exact properties (dropcheck.exact), so twice what each property's own search
    # drew before (10 / 25 / 100): one input no longer gets eleven chances to show an input-specific
    # bug. Measured on a drop path that never drops a batch of one (SUPPORT-SCALE and GRAD-MASK see
    # it), at `default` over seeds 1-20, before a fixed batch of one caught it every time: caught in
    # 16 runs with a search per property, 8 with 25 shared inputs, 12 with 50.
    max_examples: int
    call_units: int  # units per call in the independence battery
    calls: int  # successive calls for INDEP-CALLS and EXPECTATION
    rows: int  # batch rows for INDEP-ROWS
    description: str


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile("quick", 1e-2, 20, 1 << 14, 32, 16, "CI smoke: drop-rate bias ≥ 1e-2"),
        Profile("default", 1e-3, 50, 1 << 17, 64, 32, "drop-rate bias ≥ 1e-3 at power 0.999"),
        Profile("thorough", 1e-4, 200, 1 << 19, 128, 64, "drop-rate bias ≥ 1e-4 at power 0.999"),
    ]
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None


@dataclasses.dataclass(frozen=True)
class Entry:
    property_id: str
    test: str
    p: float
    device: str


class Ledger:
    """The run's list of statistical tests and each one's alpha share (Bonferroni).

    >>> led = Ledger([Entry("DROP-RATE", "binomial", 0.1, "cpu"), Entry("DROP-RATE", "sequential", 0.1, "cpu")])
    >>> led.alpha("DROP-RATE", "binomial", 0.1, "cpu")
    5e-07
    """

    def __init__(self, entries: list[Entry], family_alpha: float = FAMILY_ALPHA):
        self.entries = list(dict.fromkeys(entries))
        self.family_alpha = family_alpha
        self.each = family_alpha / max(1, len(self.entries))

    @classmethod
    def plan(cls, property_ids: list[str], ps: list[float], devices: list[str],
             judged: Callable[[str, str, float], bool] = lambda pid, test, p: True) -> Ledger:
        """Every test the run will make: each property's at each p where `judged(pid, test, p)` (a p
        too close to 0 or 1 for a test's sample is not judged, and gets no share of alpha)."""
        entries = [
            Entry(pid, test, p, dev)
            for dev in devices
            for p in ps
            for pid in property_ids
            for test in TESTS_BY_PROPERTY[pid]
            if judged(pid, test, p)
        ]
        return cls(entries)

    def planned(self, property_id: str, test: str, p: float, device: str) -> bool:
        return Entry(property_id, test, p, device) in self.entries

    def alpha(self, property_id: str, test: str, p: float, device: str) -> float:
        if Entry(property_id, test, p, device) not in self.entries:
            raise KeyError(f"test {property_id}/{test} at p={p}, {device} is not in the ledger: plan it first")
        return self.each

    def to_dict(self) -> dict:
        return {
            "family_alpha": self.family_alpha,
            "tests": len(self.entries),
            "alpha_each": self.each,
            "method": "Bonferroni over every statistical test planned for the run",
            "entries": [dataclasses.asdict(e) | {"alpha": self.each} for e in self.entries],
        }
