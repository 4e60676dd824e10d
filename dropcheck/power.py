"""Planning: how many samples a statistical test needs, and what a given sample can detect.

Why a module of its own: sample sizes follow from (effect, alpha, power) by formula, and every
verdict reports the minimum detectable effect (MDE) its sample achieved, so the same formulas are
used forwards (plan) and backwards (report). The reference constants quoted in the docstrings are
those of /work/shared/STATISTICS.md ("Sample sizes", "Equivalence") and are checked against these
functions in tests/test_stats_calibration.py.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize, special
from scipy import stats as sps


def _z(tail: float) -> float:
    """The standard normal quantile with upper-tail probability `tail` (norm.isf, minus the 50 us
    of scipy.stats' argument handling that a root search calling it 60 times adds up)."""
    return -float(special.ndtri(tail))


def _rate_n(p: float, delta: float, alpha: float, power: float) -> float:
    return _rate_n_z(p, delta, _z(alpha / 2.0), _z(1.0 - power))


def _rate_n_z(p: float, delta: float, za: float, zb: float) -> float:
    sd0 = math.sqrt(p * (1.0 - p))
    worst = 0.0
    for p1 in (p - delta, p + delta):
        if 0.0 < p1 < 1.0:
            n = ((za * sd0 + zb * math.sqrt(p1 * (1.0 - p1))) / delta) ** 2
            worst = max(worst, n)
    return worst


def rate_sample_size(p: float, delta: float, alpha: float = 1e-6, power: float = 0.999) -> int:
    """Elements needed for the two-sided level-`alpha` binomial test of drop rate `p` to detect a
    rate of p ± delta with probability `power`.

    Normal approximation with the variance under each hypothesis, worse side of p ± delta:
    n = ((z_{alpha/2} sqrt(pq) + z_{power} sqrt(p1 q1)) / delta)^2, which is ~ (z_{alpha/2} +
    z_{power})^2 pq / delta^2 = 63.7 pq / delta^2 at alpha = 1e-6, power 0.999 (STATISTICS.md:
    6.0e4 / 5.8e6 / 5.7e8 at p = 0.1 and delta = 1e-2 / 1e-3 / 1e-4; 1.6e5 ... at p = 0.5).

    >>> rate_sample_size(0.5, 1e-2)
    159251
    """
    if not 0.0 < p < 1.0 or delta <= 0.0:
        raise ValueError(f"need 0 < p < 1 and delta > 0, got p={p}, delta={delta}")
    return math.ceil(_rate_n(p, delta, alpha, power))


def rate_mde(n: int, p: float, alpha: float = 1e-6, power: float = 0.999) -> float:
    """The smallest drop-rate bias delta that `n` elements detect (inverse of rate_sample_size).

    About (z_{alpha/2} + z_{power}) sqrt(pq / n). inf if even the largest bias is out of reach.
    """
    hi = max(p, 1.0 - p) * (1.0 - 1e-12)
    za, zb = _z(alpha / 2.0), _z(1.0 - power)
    if _rate_n_z(p, hi, za, zb) > n:
        return math.inf
    return float(optimize.brentq(lambda d: _rate_n_z(p, d, za, zb) - n, 1e-15, hi, xtol=1e-15, rtol=1e-10))


def equivalence_sample_size(p: float, delta: float, alpha: float = 1e-6, power: float = 0.999) -> int:
    """Elements for TOST (two one-sided level-`alpha` tests) to show |rate - p| < delta with
    probability `power` when the rate is exactly p: n = (z_alpha + z_{(1-power)/2})^2 pq / delta^2.

    64.7 pq / delta^2 at alpha = 1e-6, power 0.999; 93 pq / delta^2 when power = 1 - 1e-6
    (STATISTICS.md, "Equivalence").
    """
    return math.ceil((_z(alpha) + _z((1.0 - power) / 2.0)) ** 2 * p * (1.0 - p) / delta**2)


@functools.lru_cache(maxsize=256)
def chi2_noncentrality(df: int, alpha: float = 1e-8, power: float = 0.999) -> float:
    """The noncentrality lambda at which a level-`alpha` chi-square test with `df` degrees of
    freedom rejects with probability `power`: ncx2.sf(chi2.isf(alpha, df), df, lambda) = power.

    77.8 / 97.2 / 112 at df 1 / 7 / 15, alpha 1e-8, power 0.999 (STATISTICS.md, "Sample sizes").
    For df = 1 this is (z_{alpha/2} + z_{power})^2.
    """
    crit = float(sps.chi2.isf(alpha, df))
    f = lambda lam: float(sps.ncx2.sf(crit, df, lam)) - power
    hi = 2.0 * crit + 100.0
    while f(hi) < 0:
        hi *= 2.0
    return float(optimize.brentq(f, 1e-9, hi, xtol=1e-9))


def chi2_mde_effect(n: int, df: int, alpha: float = 1e-8, power: float = 0.999) -> float:
    """Cohen's w detectable with `n` observations: w = sqrt(lambda / n), lambda from
    `chi2_noncentrality` (for a 2x2 table w is the correlation phi)."""
    return math.sqrt(chi2_noncentrality(df, alpha, power) / n)


def correlation_mde(n: int, alpha: float = 1e-8, power: float = 0.999) -> float:
    """The correlation (or partial-reuse fraction) rho that `n` pairs detect: sqrt(77.8 / n) at
    alpha 1e-8, power 0.999 (STATISTICS.md: n ~ 77.8 / rho^2, 7.8e5 for 1% reuse)."""
    return chi2_mde_effect(n, 1, alpha, power)


def correlation_sample_size(rho: float, alpha: float = 1e-8, power: float = 0.999) -> int:
    """Pairs needed to detect correlation rho: lambda_1 / rho^2 (inverse of correlation_mde)."""
    return math.ceil(chi2_noncentrality(1, alpha, power) / rho**2)


def chi2_sample_size(w: float, df: int, alpha: float = 1e-8, power: float = 0.999) -> int:
    """Observations needed to detect Cohen's w with a df-degree chi-square: lambda / w^2."""
    return math.ceil(chi2_noncentrality(df, alpha, power) / w**2)


# --------------------------------------------------------------------------- the other tests' MDEs


def sequential_rate_mde(n: int, p: float, alpha: float = 1e-6, power: float = 0.999) -> float:
    """The smallest drop-rate bias delta that Robbins' mixture (`stats.RobbinsMixture`) detects by
    the time it has seen `n` elements, with probability `power`, at level `alpha`.

    For a true rate p ± delta the drop count at n is, with probability `power`, at least as far
    from n·p as its (1 - power) quantile (normal approximation); the mixture's evidence grows with
    that distance, so delta is detectable when the evidence at that quantile reaches 1/alpha. Its
    earlier looks only add power, so this is conservative. Solved on a grid of candidate deltas
    (relative steps of 1%), worse side of p. inf if no delta up to max(p, 1-p) is detectable.
    """
    # Here rather than at the top: dropcheck.stats imports torch, and nothing else in this module needs it.
    from dropcheck.stats import robbins_log_evidence

    z = _z(1.0 - power)
    worst = 0.0
    for side in (+1.0, -1.0):
        room = (1.0 - p) if side > 0 else p  # the rate cannot leave [0, 1]
        deltas = room * np.geomspace(1e-6, 1.0 - 1e-9, 1500)
        rate = p + side * deltas
        drops = n * rate - side * z * np.sqrt(n * rate * (1.0 - rate))
        ok = robbins_log_evidence(np.clip(drops, 0.0, n), n, p) >= math.log(1.0 / alpha)
        if not ok.any():
            return math.inf
        worst = max(worst, float(deltas[int(np.argmax(ok))]))
    return worst


def periodic_mde(n: int, p: float, alpha: float = 1e-8, power: float = 0.999) -> float:
    """The smallest amplitude a of a periodic keep-rate modulation, q + a·cos(2π·j·i/n) at any
    Fourier frequency j, that the max-periodogram test (`independence.periodogram_test`) detects.

    That frequency's ordinate is 2·I_j ~ noncentral chi2(2, lambda), lambda = a²·n / (2pq); the
    test rejects when it exceeds the level that all J = (n-1)/2 interior frequencies together pass
    with probability 1 - alpha (Sidak), so a = sqrt(2pq·lambda / n) with lambda from
    `chi2_noncentrality` at that per-frequency level.
    """
    J = max(1, (n - 1) // 2)
    per_frequency = -math.expm1(math.log1p(-alpha) / J)
    return math.sqrt(2.0 * p * (1.0 - p) * chi2_noncentrality(2, per_frequency, power) / n)


def dispersion_mde(scaled_df: float, alpha: float = 1e-8, power: float = 0.999) -> float:
    """The smallest over-dispersion of per-call drop counts, Var(D_k) / (n·p·q) (1 for binomial
    counts), that the dispersion test (`independence.dispersion_test`, referred to a scaled
    chi2(`scaled_df`)) detects: its statistic scales by that ratio, so the ratio must lift the
    distribution's (1 - power) quantile above the test's upper critical value (alpha/2, as the
    test is two-sided). An exact-count sampler (ratio 0) fails at any sample size."""
    return float(sps.chi2.isf(alpha / 2.0, scaled_df) / sps.chi2.ppf(1.0 - power, scaled_df))
