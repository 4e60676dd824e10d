"""Independence tests on dropout masks: across calls, within one mask, across rows, and of the
input values (the dependence rows of the battery in STATISTICS.md).

Conventions are those of dropcheck/stats.py (True = kept, torch tensors on any device, counts in
int64, `TestOutcome` results). Every test here conditions on the observed number of drops, so a
wrong drop rate, which `stats.binom_test` judges, does not also fail them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import special
from scipy import stats as sps

from dropcheck.stats import (
    TestOutcome,
    _degenerate,
    _f64,
    _flat_mask,
    _g_stat,
    _host_f64,
    _hyper_two_sided,
    _scaled_chi2_sf,
    _tensor,
    _two_sided,
    count_true,
    homogeneity_test,
    irfft,
    rfft,
)

# The row test sums pairwise chi-squares only when every pair's 2x2 table expects at least this
# many in each cell; below it the sum's tail is heavier than any chi-square (see the function).
_ROWS_SUM_MIN_EXPECTED = 10.0


# --------------------------------------------------------------------------- across calls


def dispersion_test(drops_per_call: Any, n: int, p: float) -> TestOutcome:
    """Two-sided test that per-call drop counts vary as Bin(n, p) does (variance n·p·q).

    W = sum_k (D_k - mean D)^2 / (n p^ q^), p^ the pooled drop rate, is ~chi2(K-1) for binomial
    counts; it is referred to a scaled chi-square matching its exact mean and its variance
    2(K-1) + kappa(K-1)^2/K, kappa = (1-6pq)/(npq) the binomial excess kurtosis. An exact-count
    sampler (round(p·n) drops every call) gives W = 0, p-value 0; per-call rate jitter gives W
    too large. The pooled rate keeps a small rate bias (binom_test's job) from showing up here.
    statistic: dispersion index W/(K-1) (1 under H0); df_or_n: K - 1.
    """
    D = _host_f64(drops_per_call).reshape(-1)
    K = int(D.size)
    if K < 2:
        raise ValueError("dispersion_test needs at least 2 calls")
    p_hat = D.sum() / (K * n)
    if not 0.0 < p_hat < 1.0:
        p_hat = p  # no drops (or no keeps) at all: judge the zero variance against the nominal p
    pq = p_hat * (1.0 - p_hat)
    W = float(np.sum((D - D.mean()) ** 2) / (n * pq))
    kappa = (1.0 - 6.0 * pq) / (n * pq)
    mean, var = K - 1.0, 2.0 * (K - 1) + kappa * (K - 1) ** 2 / K
    var = max(var, 1e-3 * mean)
    g, h = var / (2.0 * mean), 2.0 * mean * mean / var
    pvalue = _two_sided(float(sps.chi2.cdf(W / g, h)), float(sps.chi2.sf(W / g, h)))
    return TestOutcome(
        W / (K - 1),
        pvalue,
        K - 1,
        {"W": W, "calls": K, "n": n, "p": p, "p_hat": float(p_hat), "scaled_df": h, "scale": g,
         "min_drops": float(D.min()), "max_drops": float(D.max())},
    )


def position_count_test(
    keep_counts: Any, K: int, q: float, fit_rate: bool = True, min_expected: float = 10.0
) -> TestOutcome:
    """Goodness of fit of per-position keep counts over K calls to Bin(K, q) (G-test).

    `keep_counts` (N,) int: how many of the K calls kept each position. The histogram of counts
    0..K is compared with N·Bin(K, q^) pmf, tail bins pooled until each expects >= `min_expected`,
    by the likelihood-ratio G (far-tail accurate where Pearson's X^2 is not; see homogeneity_test).
    With fit_rate=True (default) q^ is the pooled keep rate and df = groups - 2, so a rate bias is
    left to binom_test; fit_rate=False uses `q` and df = groups - 1. A mask cached across calls
    (counts only 0 or K) or reused in pairs (counts all even) fails. Asymptotically exact.
    statistic: G; df_or_n: df.
    """
    c = _tensor(keep_counts).reshape(-1)
    N = c.numel()
    if N == 0:
        raise ValueError("empty keep_counts")
    lo, hi = int(c.min().item()), int(c.max().item())
    if lo < 0 or hi > K:
        raise ValueError(f"keep counts must lie in [0, K={K}], got [{lo}, {hi}]")
    obs = _host_f64(torch.bincount(c.to(torch.int64), minlength=K + 1))
    q_hat = float(np.dot(np.arange(K + 1), obs) / (N * K)) if fit_rate else float(q)
    var_ratio = float(
        (np.dot((np.arange(K + 1) - K * q_hat) ** 2, obs) / N) / (K * q_hat * (1 - q_hat))
    ) if 0 < q_hat < 1 else float("nan")
    if not 0.0 < q_hat < 1.0:
        return _degenerate(0.0, 0, "every position kept always or never", q_hat=q_hat)
    exp = N * sps.binom.pmf(np.arange(K + 1), K, q_hat)
    groups: list[list[float]] = []
    acc_o = acc_e = 0.0
    for o, e in zip(obs, exp):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= min_expected:
            groups.append([acc_o, acc_e])
            acc_o = acc_e = 0.0
    if groups:
        groups[-1][0] += acc_o
        groups[-1][1] += acc_e
    df = len(groups) - 1 - int(fit_rate)
    if df < 1:
        return _degenerate(0.0, 0, "too few positions for a goodness-of-fit test", q_hat=q_hat)
    g = np.asarray(groups)
    G = _g_stat(g[:, 0], g[:, 1])
    return TestOutcome(
        G,
        float(sps.chi2.sf(G, df)),
        df,
        {"positions": N, "calls": K, "q": q, "q_hat": q_hat, "groups": len(groups),
         "count_variance_ratio": var_ratio, "fit_rate": fit_rate},
    )


def consecutive_calls_test(mask_a: Any, mask_b: Any) -> TestOutcome:
    """Independence of the same positions' masks in two successive calls (2×2 table).

    Rows: kept/dropped at t; columns: kept/dropped at t+1. Given the two keep counts, the
    kept-kept count is exactly Hypergeometric(N, kept_a, kept_b) under independence; the p-value
    is its two-sided (doubled smaller tail) exact p-value, i.e. Fisher's exact test, at any N.
    (Pearson's 1-df chi-square is no substitute at alpha = 1e-8: with 10 expected in the rarest
    cell it rejects ~150x more often than alpha.) A reused or partly reused mask fails.
    statistic: phi, the correlation between the two masks; df_or_n: N.
    """
    a, b = _flat_mask(mask_a), _flat_mask(mask_b)
    if a.numel() != b.numel():
        raise ValueError(f"masks differ in size: {a.numel()} vs {b.numel()}")
    return consecutive_counts_test(int(count_true(a & b)), int(count_true(a)),
                                   int(count_true(b)), a.numel())


def consecutive_counts_test(n11: int, na: int, nb: int, N: int) -> TestOutcome:
    """`consecutive_calls_test` from its counts: N position pairs, na kept at t, nb kept at t+1,
    n11 kept at both (a caller that streams calls accumulates these instead of keeping masks)."""
    table = [[n11, na - n11], [nb - n11, N - na - nb + n11]]
    if min(na, nb) == 0 or max(na, nb) == N:
        return _degenerate(0.0, N, "a mask is constant", table=table)
    num = n11 * (N - na - nb + n11) - (na - n11) * (nb - n11)
    phi = num / math.sqrt(float(na) * (N - na) * nb * (N - nb))
    pvalue = _hyper_two_sided(n11, N, na, nb)
    return TestOutcome(phi, pvalue, N, {"table": table, "expected_kept_kept": na * nb / N, "z": phi * math.sqrt(N - 1)})


def cross_correlation_test(mask_a: Any, mask_b: Any, q: float, max_shift: int | None = None) -> TestOutcome:
    """Is call t+1's mask call t's mask shifted? Circular cross-correlation over shifts, via FFT.

    X_s = #{i: a[i] and b[(i+s) mod N] both dropped}. Given the two drop counts, X_s for any one
    shift is exactly Hypergeometric(N, D_a, D_b) when the masks are independent, so each shift's
    two-sided p-value is exact; the smallest is multiplied by the number of shifts J (Bonferroni:
    conservative). Shifts tested: all N, or -max_shift..max_shift. Equivalent to the standardized
    correlation r_s ~ N(0, 1/N), but exact in the tails when drops are rare.
    statistic: r at the worst shift (detail["shift"]); df_or_n: J.
    """
    a, b = _flat_mask(mask_a), _flat_mask(mask_b)
    if a.numel() != b.numel():
        raise ValueError(f"masks differ in size: {a.numel()} vs {b.numel()}")
    N = a.numel()
    Da, Db = N - int(count_true(a)), N - int(count_true(b))
    if Da in (0, N) or Db in (0, N):
        return _degenerate(0.0, N, "a mask is constant", drops=(Da, Db))
    fa = rfft(_f64(~a))
    fb = rfft(_f64(~b))
    X = irfft(torch.conj(fa) * fb, n=N)  # X[s] = sum_i da[i] db[(i+s) mod N]
    Xi = (X + 0.5).to(torch.int64)  # counts are >= 0; (not X.round(): erratically slow on CPU)
    roundoff = float((X - Xi).abs().max().item())
    X = Xi
    shifts = torch.arange(N, device=X.device)
    if max_shift is not None and 2 * max_shift + 1 < N:
        keep = torch.cat([torch.arange(max_shift + 1), torch.arange(N - max_shift, N)]).to(X.device)
        X, shifts = X[keep], shifts[keep]
    J = X.numel()
    i_hi, i_lo = int(torch.argmax(X).item()), int(torch.argmin(X).item())
    x_hi, x_lo = int(X[i_hi].item()), int(X[i_lo].item())
    p_hi = float(sps.hypergeom.sf(x_hi - 1, N, Da, Db))
    p_lo = float(sps.hypergeom.cdf(x_lo, N, Da, Db))
    x, idx = (x_hi, i_hi) if p_hi <= p_lo else (x_lo, i_lo)
    p_one = _hyper_two_sided(x, N, Da, Db)
    s = int(shifts[idx].item())
    s = s - N if s > N // 2 else s
    r = (N * x - Da * Db) / math.sqrt(float(Da) * (N - Da) * Db * (N - Db))
    return TestOutcome(
        r,
        min(1.0, J * p_one),
        J,
        {"shift": s, "coincident_drops": int(x), "expected": Da * Db / N, "z": r * math.sqrt(N - 1),
         "p_single": p_one, "shifts_tested": J, "n": N, "q": q, "q_hat": 1 - Da / N,
         "fft_roundoff": roundoff},
    )


# --------------------------------------------------------------------------- within one mask


def periodogram_test(mask: Any, q: float) -> TestOutcome:
    """Fisher's max-periodogram test for periodic structure in one mask (in memory order).

    z = mask - mean; I_j = |rfft(z)_j|^2 / (N·q^·p^) ~ Exp(1) for 0 < j < N/2 (chi2_1 at the
    Nyquist frequency), q^ the observed keep rate. Smallest per-frequency p-value combined over the
    J frequencies by Sidak: p = 1 - (1 - p_min)^J (for interior frequencies 1 - (1 - e^-maxI)^J).
    Asymptotically exact per frequency; the combination is slightly conservative. The Exp(1) tail
    is off by a factor ~1 + c, c = (g/8)(I^2 - 4I + 2), g = 1.5(1-6pq)/(pq·N) (Edgeworth, reported
    as detail["tail_correction"]): at I ~ 30 (alpha 1e-8) c ~ 141(1-6pq)/(pq·N), i.e. 0.1 at
    p = 0.01 and N = 1.3e5, but ~1 at p = 0.001: use N >> 150/p for rare drops.
    statistic: the largest I_j; df_or_n: J.
    """
    m = _flat_mask(mask)
    N = m.numel()
    # float32 is ample here: the FFT's rounding moves I_j by ~1e-5 at the I ≈ 30 that alpha 1e-8
    # needs, and it halves the cost of the largest transform in the battery. (The cross-correlation
    # stays in float64: it rounds its output to integer counts.)
    x = m.to(torch.float32)
    mean = int(count_true(m)) / N if N else 0.0  # exact, on any device
    var = mean * (1.0 - mean)
    if var == 0.0 or N < 3:
        return _degenerate(0.0, 0, "constant mask (or fewer than 3 elements)", q_hat=mean)
    F = rfft(x - mean)
    I = (F.real.square() + F.imag.square()) / (N * var)  # |F|²; not abs(): a hypot per element, 4x slower
    J_int = (N - 1) // 2
    interior = I[1 : J_int + 1]
    j = int(torch.argmax(interior).item())
    i_max = float(interior[j].item())
    p_min, freq = math.exp(-i_max), j + 1
    stat = i_max
    J = J_int
    if N % 2 == 0:
        J += 1
        i_nyq = float(I[N // 2].item())
        p_nyq = float(sps.chi2.sf(i_nyq, 1))
        if p_nyq < p_min:
            p_min, freq, stat = p_nyq, N // 2, i_nyq
    pvalue = float(-math.expm1(J * math.log1p(-p_min))) if p_min < 1 else 1.0
    kurt = 1.5 * (1.0 - 6.0 * var) / (var * N)
    return TestOutcome(
        stat,
        pvalue,
        J,
        {"frequency": freq, "period": N / freq, "p_single": p_min, "frequencies": J, "n": N,
         "q": q, "q_hat": mean, "tail_correction": kurt / 8.0 * (stat * stat - 4.0 * stat + 2.0)},
    )


def lag_test(mask: Any, lags: Sequence[int], q: float) -> TestOutcome:
    """Autocorrelation of one mask at the given lags (e.g. each axis stride), Bonferroni over lags.

    For lag L, X_L = #{i: i and (i+L) mod N both dropped}. Given the drop count D, X_L has mean
    ~D^2/N and variance ~N p^2 q^2, matched (with its skew when drops are rare) by
    Hypergeometric(N, D, D), which gives each lag's two-sided p-value; the smallest is multiplied
    by the number of lags. Approximate per lag (exact for independent masks, i.e. the cross test).
    Lag N/2 is the exception: circularly each of its pairs would count twice (twice the variance
    the null assumes), so it counts the N/2 pairs (i, i+N/2) once, and given the drops D1 and D2 in
    the two halves that count is exactly Hypergeometric(N/2, D1, D2) under independence. It is the
    lag at which a mask tiled twice over the sample shows.
    statistic: autocorrelation r at the worst lag (detail["lag"]); df_or_n: number of lags.
    """
    m = _flat_mask(mask)
    N = m.numel()
    lags = [int(L) for L in lags]
    if not lags or any(not 0 < L < N for L in lags):
        raise ValueError(f"lags must be in [1, N-1] (N={N}), got {lags}")
    d = ~m
    D = int(count_true(d))
    if D in (0, N):
        return _degenerate(0.0, len(lags), "constant mask", drops=D)
    denom = float(D) * (N - D)
    half = N // 2 if N % 2 == 0 and N // 2 in lags else None  # counted apart (docstring)
    # Circular: pairs (i, i+L) inside the mask, then the L pairs that wrap around (no rolled copy).
    x_by_lag = {L: int(count_true(d[:-L] & d[L:])) + int(count_true(d[-L:] & d[:L])) for L in lags if L != half}
    # Every circular lag's count has the same null distribution, and its two-sided p-value, 2·min(cdf(x),
    # sf(x-1)), is smallest at the largest or the smallest count: only those two need scipy.
    candidates = []
    for x in {max(x_by_lag.values()), min(x_by_lag.values())} if x_by_lag else ():
        p_one = _hyper_two_sided(x, N, D, D)
        candidates += [(p_one, L, x) for L, x_L in x_by_lag.items() if x_L == x]
    r_by_lag = {lag: (N * x_L - D * D) / denom for lag, x_L in x_by_lag.items()}
    if half is not None:
        d1 = int(count_true(d[:half]))
        d2 = D - d1
        x_half = int(count_true(d[:half] & d[half:]))
        candidates.append((_hyper_two_sided(x_half, half, d1, d2), half, x_half))
        # r over the N/2 pairs, as for the circular lags over N
        r_by_lag[half] = (half * x_half - d1 * d2) / math.sqrt(max(1.0, float(d1) * (half - d1) * d2 * (half - d2)))
    p_one, L, x = min(candidates)
    return TestOutcome(
        r_by_lag[L],
        min(1.0, len(lags) * p_one),
        len(lags),
        {"lag": L, "coincident_drops": x, "expected": D * D / N if L != half else d1 * d2 / half, "p_single": p_one,
         "r_by_lag": r_by_lag, "n": N, "q": q, "q_hat": 1 - D / N},
    )


def _runs_log_pmf(n1: int, n2: int, R: np.ndarray) -> np.ndarray:
    """log P(R runs) for a uniformly random arrangement of n1 + n2 items (Wald–Wolfowitz)."""
    R = np.asarray(R)
    if R.size == 0:
        return np.zeros(0)
    # Each k = R // 2 serves two R (one even, one odd), and log C(n-1, k) and log C(n-1, k-1) share
    # their log-gamma terms: six arrays of them over the distinct k, not twelve over every R.
    k_of_r = R // 2
    k = np.arange(k_of_r.min(), k_of_r.max() + 1)
    with np.errstate(invalid="ignore"):
        lg_k, lg_k1 = special.gammaln(k), special.gammaln(k + 1)  # log (k-1)!, log k!

        def log_choose(n: int) -> tuple[np.ndarray, np.ndarray]:  # log C(n-1, k), log C(n-1, k-1)
            lg_n, rest_k, rest_k1 = special.gammaln(n), special.gammaln(n - k), special.gammaln(n - k + 1)
            at_k = np.where((k >= 0) & (k <= n - 1), lg_n - lg_k1 - rest_k, -np.inf)
            at_k1 = np.where((k >= 1) & (k <= n), lg_n - lg_k - rest_k1, -np.inf)
            return at_k, at_k1

        a_k, a_k1 = log_choose(n1)
        b_k, b_k1 = log_choose(n2)
    i = k_of_r - k[0]
    even = np.log(2.0) + a_k1[i] + b_k1[i]
    odd = np.logaddexp(a_k[i] + b_k1[i], a_k1[i] + b_k[i])
    total = special.gammaln(n1 + n2 + 1) - special.gammaln(n1 + 1) - special.gammaln(n2 + 1)
    return np.where(R % 2 == 0, even, odd) - total


def markov_test(mask: Any) -> TestOutcome:
    """Clumped (or alternating) drops: exact two-sided Wald–Wolfowitz runs test on one mask.

    The number of runs R is, given the drop count, the sufficient statistic of an order-1 Markov
    dependence (the same information as the transition-count G-test), and its distribution over
    all equally likely arrangements is exact (conditional on the counts). Clumped drops (block
    dropout) give too few runs.
    statistic: z of R against its exact mean and sd (negative: clumped); df_or_n: N.
    """
    m = _flat_mask(mask)
    N = m.numel()
    n1 = int(count_true(m))
    n2 = N - n1
    if n1 == 0 or n2 == 0:
        return _degenerate(0.0, N, "constant mask")
    dd = int(count_true((~m[1:]) & (~m[:-1])))
    R = 1 + int(count_true(m[1:] != m[:-1]))
    mu = 1.0 + 2.0 * n1 * n2 / N
    var = 2.0 * n1 * n2 * (2.0 * n1 * n2 - N) / (N * N * (N - 1.0)) if N > 1 else 0.0
    sd = math.sqrt(max(var, 0.0))
    r_min, r_max = 2, 2 * min(n1, n2) + (1 if n1 != n2 else 0)
    # Sum only mu ± 40 sd: the mass outside is far below any alpha here (< 1e-40 even for rare,
    # skewed drops), and the full support (2·min(n1, n2) values) cost more than the sampling.
    lo, hi = max(r_min, int(mu - 40 * sd) - 2), min(r_max, int(mu + 40 * sd) + 2)
    Rs = np.arange(lo, hi + 1)
    logp = _runs_log_pmf(n1, n2, Rs)
    below = Rs <= R
    above = Rs >= R
    p_le = float(np.exp(special.logsumexp(logp[below]))) if below.any() else 0.0
    p_ge = float(np.exp(special.logsumexp(logp[above]))) if above.any() else 0.0
    z = (R - mu) / sd if sd > 0 else 0.0
    return TestOutcome(
        z,
        _two_sided(p_le, p_ge),
        N,
        {"runs": R, "expected_runs": mu, "kept": n1, "dropped": n2,
         "p_drop_after_drop": dd / max(1, n2 - int(not m[-1].item())),
         "p_drop_after_keep": (n2 - int(not m[0].item()) - dd) / max(1, n1 - int(m[-1].item()))},
    )


# --------------------------------------------------------------------------- rows, inputs


def row_correlation_test(mask: Any, q: float, min_expected: float = _ROWS_SUM_MIN_EXPECTED,
                         groups: Any = None) -> TestOutcome:
    """A mask shared (or partly shared) across batch rows of a (B, F) mask.

    For rows a, b let X_ab be the units both dropped. Given the rows' drop counts, X_ab is exactly
    Hypergeometric(F, D_a, D_b) under independence, and T_ab = (X_ab - mu)^2 / sigma^2 = (F-1)·r_ab^2
    (r_ab the rows' correlation) has E T_ab = 1 and Var T_ab = 2 + its excess kurtosis; the T_ab
    are pairwise independent.
    - method "sum" (every 2x2 table expects >= `min_expected` in each cell): S = sum_{a<b} T_ab,
      the textbook F·sum r^2 ~ chi2(M), referred to the scaled chi-square matching its exact mean M
      and variance (Satterthwaite). Sees weak sharing spread over all pairs. Simulated rejection
      rates at 1e-2, 1e-3, 1e-4 matched nominal with 10 expected (B=16, F=1024, p=0.1, 2e4 masks;
      B=64, F=4096, p=0.05, 5e3 masks) but were 1.3-1.7x nominal with 5 expected.
    - method "max-pair" (rare drops or keeps): the sum's tail is then far heavier than any
      chi-square (co-drops in one column feed several pairs at once: 13x too many rejections at
      1e-4 for p = 0.02, F = 1024), so each pair gets its exact two-sided hypergeometric p-value
      and the smallest is multiplied by M (Bonferroni: conservative; weaker against sharing
      spread thinly over all pairs).
    Rows with no drops or no keeps are skipped. `groups` (B,) ints: only pairs of rows in the same
    group are tested (rows of separate calls, independent by construction, carry no sharing signal).
    statistic: S ("sum") or the largest |r_ab| ("max-pair"); df_or_n: number of row pairs M.
    """
    t = _tensor(mask)
    if t.dim() != 2:
        raise ValueError(f"row_correlation_test wants a (B, F) mask, got shape {tuple(t.shape)}")
    if t.dtype != torch.bool:
        t = t != 0
    B, F = t.shape
    d = _f64(~t)
    X = _host_f64(d @ d.T)
    D = _host_f64(d.sum(dim=1))
    ok = (D > 0) & (D < F)
    X, D = X[np.ix_(ok, ok)], D[ok]
    group = (np.zeros(B, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64))[ok]
    Bv = int(D.size)
    ia, ib = np.triu_indices(Bv, k=1)
    same = group[ia] == group[ib]
    ia, ib = ia[same], ib[same]
    if ia.size == 0:
        return _degenerate(0.0, 0, "fewer than 2 rows with both kept and dropped units in any group")
    Da, Db, x = D[ia], D[ib], X[ia, ib]
    M = int(x.size)
    mu = Da * Db / F
    var = Da * Db * (F - Da) * (F - Db) / (F * F * (F - 1.0))
    r = (x - mu) / np.sqrt(var * (F - 1.0))
    least_cell = float(np.min(np.minimum(Da, F - Da) * np.minimum(Db, F - Db) / F))
    detail: dict[str, Any] = {
        "rows": B, "rows_used": Bv, "features": F, "pairs": M, "min_expected_cell": least_cell,
        "mean_r": float(r.mean()), "max_abs_r": float(np.abs(r).max()), "q": q, "q_hat": float(1 - D.mean() / F),
    }
    if least_cell >= min_expected:
        T = (x - mu) ** 2 / var
        kurt = np.asarray(sps.hypergeom.stats(F, Da, Db, moments="k"), dtype=np.float64)
        S = float(T.sum())
        pvalue, g, h = _scaled_chi2_sf(S, float(M), float(np.sum(2.0 + kurt)))
        return TestOutcome(S, pvalue, M, {**detail, "method": "sum", "scaled_df": h, "scale": g})
    p_pair = np.minimum(1.0, 2.0 * np.minimum(sps.hypergeom.cdf(x, F, Da, Db), sps.hypergeom.sf(x - 1, F, Da, Db)))
    worst = int(np.argmin(p_pair))
    return TestOutcome(
        float(abs(r[worst])),
        float(min(1.0, M * p_pair[worst])),
        M,
        {**detail, "method": "max-pair", "p_single": float(p_pair[worst]), "worst_pair": tuple(int(i) for i in np.flatnonzero(ok)[[ia[worst], ib[worst]]])},
    )


def input_dependence_test(x: Any, kept: Any, bins: int = 8) -> TestOutcome:
    """Do drop decisions depend on the input value? Chi-square of (x-quantile bin × kept/dropped).

    The bin edges are the quantiles of x estimated from an evenly strided subsample of at most 8192
    elements (a full sort of x cost more than the implementation's own calls), so the bins hold
    about equal counts; `homogeneity_test` compares their keep rates (df = bins - 1). The edges
    depend on x alone, so under independence the test is exactly as valid as with exact quantiles.
    Sign- or size-dependent drops fail. statistic: chi-square; df_or_n: df.
    """
    xv = _tensor(x).reshape(-1).float()
    k = _flat_mask(kept)
    N = xv.numel()
    if k.numel() != N:
        raise ValueError(f"x and kept differ in size: {N} vs {k.numel()}")
    sample = xv[:: max(1, N // 8192)]
    levels = torch.arange(1, bins, device=xv.device, dtype=torch.float32) / bins
    edges = torch.quantile(sample, levels)
    res = binned_dependence_test(torch.bucketize(xv, edges), k, bins)  # bins 0 .. bins-1
    return TestOutcome(res.statistic, res.pvalue, res.df_or_n, {**res.detail, "bin_edges": _host_f64(edges).tolist()})


def binned_dependence_test(bin_id: Any, kept: Any, bins: int) -> TestOutcome:
    """`input_dependence_test` with the bins given: `bin_id` (N,) int in [0, bins), a function of
    the input values alone (a caller that drew x from a known law can bin by construction, with
    no quantiles to estimate). Chi-square of (bin × kept/dropped) via `homogeneity_test`."""
    b = _tensor(bin_id).reshape(-1).to(torch.int64)
    k = _flat_mask(kept)
    if b.numel() != k.numel():
        raise ValueError(f"bin_id and kept differ in size: {b.numel()} vs {k.numel()}")
    # One bincount over (bin, kept) pairs instead of indexing by the mask (a copy per call).
    joint = torch.bincount(b * 2 + k.to(torch.int64), minlength=2 * bins).view(bins, 2)
    kept_per_bin, total = joint[:, 1], joint.sum(dim=1)
    res = homogeneity_test(kept_per_bin, total)
    rates = _host_f64(kept_per_bin) / np.maximum(_host_f64(total), 1)
    return TestOutcome(res.statistic, res.pvalue, res.df_or_n, {**res.detail, "keep_rate_by_bin": rates.tolist()})
