"""The minimum detectable effects (MDEs) that verdicts report are what the tests detect.

Each MDE in dropcheck.power is derived from a formula; here each is checked by simulation at a
loose alpha (1e-3, so a few hundred draws suffice): at the MDE the test rejects with the planned
power (0.999), and at a much smaller effect it clearly does not, so the figure is neither
optimistic nor vacuous. Draws are from fixed generators: these are checks of formulas, not of
implementations, and a formula that is off by a factor fails them whatever the seed.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats as sps

from dropcheck import independence, power, stats

ALPHA, POWER, DRAWS = 1e-3, 0.999, 400
# At power 0.999, DRAWS draws miss more than 4 times with probability < 1e-3.
MOST_MISSES = 4


def test_the_periodogram_detects_its_mde_amplitude() -> None:
    n, p = 4096, 0.5
    a = power.periodic_mde(n, p, ALPHA, POWER)
    gen = torch.Generator().manual_seed(11)
    i = torch.arange(n, dtype=torch.float64)

    def rejections(amplitude: float) -> int:
        keep_prob = (1 - p) + amplitude * torch.cos(2 * math.pi * 37 * i / n)
        return sum(independence.periodogram_test(torch.rand(n, generator=gen, dtype=torch.float64) < keep_prob,
                                                 1 - p).pvalue <= ALPHA for _ in range(DRAWS))

    assert rejections(a) >= DRAWS - MOST_MISSES, f"MDE amplitude {a:.4f} was not detected with power {POWER}"
    # Half the amplitude is a quarter of the noncentrality: detected far less often than planned.
    assert rejections(a / 2) <= 0.8 * DRAWS


def test_the_dispersion_test_detects_its_mde_variance_ratio() -> None:
    K, n, p = 64, 10_000, 0.1
    rng = np.random.default_rng(12)
    scaled_df = independence.dispersion_test(rng.binomial(n, p, K), n, p).detail["scaled_df"]
    ratio = power.dispersion_mde(scaled_df, ALPHA, POWER)

    def rejections(variance_ratio: float) -> int:
        # Beta-binomial counts: Var(D) = n·p·q·(1 + (n-1)/(c+1)) = variance_ratio · n·p·q.
        c = (n - 1) / (variance_ratio - 1) - 1
        drops = rng.binomial(n, rng.beta(c * p, c * (1 - p), size=(DRAWS, K)))
        return sum(independence.dispersion_test(d, n, p).pvalue <= ALPHA for d in drops)

    assert rejections(ratio) >= DRAWS - MOST_MISSES, f"MDE variance ratio {ratio:.3f} was not detected with power {POWER}"
    assert rejections(1 + (ratio - 1) / 3) <= 0.8 * DRAWS


def test_the_sequential_test_detects_its_mde_bias_by_the_end_of_its_sample() -> None:
    n, p = 20_000, 0.1
    delta = power.sequential_rate_mde(n, p, ALPHA, POWER)
    # It pays for looking at every chunk: a larger bias than the fixed-n binomial test's.
    assert delta > power.rate_mde(n, p, ALPHA, POWER)
    rng = np.random.default_rng(13)
    for side in (+1, -1):
        def rejections(bias: float, side: int = side) -> int:
            drops = rng.binomial(n, p + side * bias, DRAWS)
            return int(np.sum(stats.robbins_log_evidence(drops, n, p) >= math.log(1 / ALPHA)))

        assert rejections(delta) >= DRAWS - MOST_MISSES, (side, delta)
        assert rejections(delta / 2) <= 0.8 * DRAWS, (side, delta)


def test_most_misses_is_what_the_planned_power_allows() -> None:
    # The assertions above allow MOST_MISSES misses: at the planned power that many or more is rare.
    assert sps.binom.sf(MOST_MISSES, DRAWS, 1 - POWER) < 1e-3


def test_every_statistical_verdict_of_a_passing_run_states_its_mde() -> None:
    """Every test behind a CONFORMS verdict says what it could have detected, and so does the line."""
    from dropcheck import registry
    from dropcheck.runner import run_check

    ids = [p.id for p in registry.for_contract("inverted", "statistical")]
    result = run_check("reference_impls.inverted:InvertedDropout", profile="quick", only=ids)
    assert result.ok, result.summary()
    for verdict in result.verdicts:
        missing = [t.name for t in verdict.tests if t.mde is None or not t.mde > 0 or not t.mde_unit]
        assert not missing, f"{verdict.label}: no MDE for {missing}"
        assert "MDE" in verdict.summary, verdict.summary
