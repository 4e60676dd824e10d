"""Statistical tests on dropout masks: one function per row of the battery in STATISTICS.md.

Why a module of its own: every statistical verdict dropcheck gives rests on these p-values, so they
are tested apart from any dropout implementation (tests/test_stats_calibration.py): uniform
p-values on simulated correct masks, rejection of simulated broken ones at alpha = 1e-8.

Conventions
- A mask is a bool tensor with True = KEPT (`y != 0`), False = dropped. p is the drop probability,
  q = 1 - p the keep probability. Integer arrays of counts say in their name what they count.
- Large inputs are `torch.Tensor`s on any device; the heavy work (sums, FFTs, sorts, a matmul)
  runs there with torch, counts in int64 and moments in float64, and only small summaries reach
  the host for scipy. numpy arrays are accepted too (they are wrapped with `torch.as_tensor`).
- Every test returns a `TestOutcome(statistic, pvalue, df_or_n, detail)`.
- The dependence tests (spread, call-to-call, periodicity, local, rows, input) condition on the
  observed number of drops, so a wrong drop rate, which `binom_test` and `RobbinsMixture` judge,
  does not also fail them; their `q` argument is reported in `detail`, not used as the null.
- Where a p-value is exact (conditional on the counts) the docstring says so; "Bonferroni" tests
  take the smallest of many p-values and are conservative by design (do not check them for
  uniformity, only that they reject at most alpha of the time).
- A run uses alpha ~ 1e-8, far in the tails, where a normal or Pearson chi-square approximation
  of a sparse count can be off by 100x (see `consecutive_calls_test`). Hence exact hypergeometric
  and binomial p-values wherever a single count decides, and likelihood-ratio (G) statistics,
  whose tails follow the counts' large deviations, where tables are summed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import special
from scipy import stats as sps

# Prior concentrations (a + b of the beta prior, centred on the rate tested) averaged by
# RobbinsMixture: prior sd ~ sqrt(pq / c), from "anything goes" (c = 1) down to biases of ~1e-4.
# Fixed in advance, as the mixture must be; the average costs log(9) = 2.2 nats of evidence.
DEFAULT_WIDTHS: tuple[float, ...] = tuple(10.0**k for k in range(9))

# The row test sums pairwise chi-squares only when every pair's 2x2 table expects at least this
# many in each cell; below it the sum's tail is heavier than any chi-square (see the function).
_ROWS_SUM_MIN_EXPECTED = 10.0


class TestOutcome(NamedTuple):
    """What one statistical test found.

    `statistic` is in the units named in each function's docstring; `df_or_n` is the chi-square
    degrees of freedom or the number of elements/tests it rests on (also said per function).
    """

    __test__ = False  # not a pytest test class, despite the name

    statistic: float
    pvalue: float
    df_or_n: int
    detail: dict[str, Any]


# --------------------------------------------------------------------------- helpers


def _tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _flat_mask(mask: Any) -> torch.Tensor:
    t = _tensor(mask)
    if t.dtype != torch.bool:
        t = t != 0
    return t.reshape(-1)


def _f64(t: torch.Tensor) -> torch.Tensor:
    # MPS has no float64: fall back to the CPU there (counts are exact either way).
    if t.device.type == "mps":
        t = t.cpu()
    return t.to(torch.float64)


def _host_f64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _two_sided(lower: float, upper: float) -> float:
    """Doubled smaller tail: the usual two-sided p-value of a (possibly discrete) statistic."""
    return float(min(1.0, 2.0 * min(lower, upper)))


def _hyper_two_sided(x: int, N: int, K: int, n: int) -> float:
    """Two-sided exact p-value of a count x ~ Hypergeometric(N population, K marked, n drawn)."""
    return _two_sided(float(sps.hypergeom.cdf(x, N, K, n)), float(sps.hypergeom.sf(x - 1, N, K, n)))


def _degenerate(statistic: float, df_or_n: int, reason: str, **detail: Any) -> TestOutcome:
    # A test that has nothing to test (no drops at all, a constant mask) does not reject: the
    # rate test is the one that judges an all-kept or all-dropped mask.
    return TestOutcome(float(statistic), 1.0, int(df_or_n), {"degenerate": reason, **detail})


def _scaled_chi2_sf(stat: float, mean: float, var: float) -> tuple[float, float, float]:
    """Upper tail of `stat` under g·chi2(h) matching the null's mean and variance (Satterthwaite)."""
    var = max(var, 1e-12 * mean)
    g, h = var / (2.0 * mean), 2.0 * mean * mean / var
    return float(sps.chi2.sf(stat / g, h)), g, h


# --------------------------------------------------------------------------- drop rate


def binom_test(k: int, n: int, p: float) -> TestOutcome:
    """Exact two-sided binomial test that `k` drops out of `n` elements have drop rate `p`.

    statistic: the observed drop rate k/n; df_or_n: n.

    >>> binom_test(100, 1000, 0.1).pvalue
    1.0
    """
    k, n = int(k), int(n)
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    res = sps.binomtest(k, n, p)
    rate = k / n
    sd = math.sqrt(n * p * (1.0 - p))
    z = (k - n * p) / sd if sd > 0 else (0.0 if k == n * p else math.copysign(math.inf, k - n * p))
    return TestOutcome(rate, float(res.pvalue), n, {"drops": k, "n": n, "p": p, "rate": rate, "z": z})


def robbins_log_evidence(
    drops: Any, n: Any, r: float, widths: Sequence[float] = DEFAULT_WIDTHS, side: int = 0
) -> np.ndarray:
    """log of Robbins' beta-binomial mixture martingale for H0: drop rate == r (vectorised).

    log M = log mean_c [B(a+S, b+n-S) / B(a, b)] - S log r - (n-S) log(1-r), with a = c·r,
    b = c·(1-r) for each prior concentration c in `widths`. Under H0, M is a nonnegative martingale
    with mean 1, so P(M ever reaches 1/alpha) <= alpha (Ville): valid however often it is checked.

    side=+1 restricts each prior to rates > r (evidence that the rate exceeds r), side=-1 to rates
    < r. These one-sided mixtures are supermartingales under the whole composite null (rate <= r,
    resp. >= r), which is what an equivalence claim needs.
    """
    S = np.asarray(drops, dtype=np.float64)[..., None]
    N = np.asarray(n, dtype=np.float64)[..., None]
    c = np.asarray(widths, dtype=np.float64)
    a, b = c * r, c * (1.0 - r)
    null = special.xlogy(S, r) + special.xlogy(N - S, 1.0 - r)
    with np.errstate(divide="ignore"):
        terms = special.betaln(a + S, b + N - S) - special.betaln(a, b) - null
        if side > 0:
            terms = terms + np.log(special.betaincc(a + S, b + N - S, r)) - np.log(special.betaincc(a, b, r))
        elif side < 0:
            terms = terms + np.log(special.betainc(a + S, b + N - S, r)) - np.log(special.betainc(a, b, r))
    return special.logsumexp(terms, axis=-1) - math.log(len(c))


class RobbinsMixture:
    """Anytime-valid test of H0: drop rate == p, for a stream of (drops, n) chunks.

    Check `rejects(alpha)` after every chunk and stop when it says so: the chance that it ever
    says so on a correct implementation is at most alpha, however many times it was checked (a
    fixed-n test checked repeatedly is not valid). Gross bugs fail within tens of elements.

    >>> rm = RobbinsMixture(0.1)
    >>> rm.update(drops=18, n=20)  # keep/drop swapped
    >>> rm.rejects(1e-8)
    True
    """

    def __init__(self, p: float, widths: Sequence[float] = DEFAULT_WIDTHS):
        if not 0.0 < p < 1.0:
            raise ValueError(f"RobbinsMixture needs 0 < p < 1, got {p}")
        self.p = float(p)
        self.widths = tuple(float(w) for w in widths)
        self.drops = 0
        self.n = 0
        self.max_log_evidence = 0.0  # sup over time of log M(p); M starts at 1

    def update(self, drops: int, n: int) -> None:
        """Add a chunk of `n` elements of which `drops` were dropped."""
        drops, n = int(drops), int(n)
        if n < 0 or not 0 <= drops <= n:
            raise ValueError(f"need 0 <= drops <= n, got drops={drops}, n={n}")
        if n == 0:
            return
        self.drops += drops
        self.n += n
        self.max_log_evidence = max(self.max_log_evidence, self.log_evidence())

    @property
    def rate(self) -> float:
        return self.drops / self.n if self.n else float("nan")

    def log_evidence(self, r: float | None = None, side: int = 0) -> float:
        """log M(r) now: the evidence against drop rate == r (side=+1: against rate <= r;
        side=-1: against rate >= r)."""
        r = self.p if r is None else float(r)
        if r <= 0.0 or r >= 1.0:
            # Rates outside (0, 1) are impossible: "rate > r" for r <= 0 is certain, etc.
            certain = (side > 0 and r <= 0.0) or (side < 0 and r >= 1.0)
            return math.inf if certain else -math.inf
        return float(robbins_log_evidence(self.drops, self.n, r, self.widths, side))

    def rejects(self, alpha: float) -> bool:
        """True once log M(p) has reached log(1/alpha) at any update: drop rate != p."""
        return self.max_log_evidence >= math.log(1.0 / alpha)

    def equivalent(self, delta: float, alpha: float) -> bool:
        """True when the data show |rate - p| < delta at level alpha, valid at any stopping time.

        Both one-sided mixtures, log M+(p-delta) (rate > p-delta) and log M-(p+delta) (rate <
        p+delta), must reach log(1/alpha), and the observed rate lie inside p ± delta. One-sided
        priors keep each half valid against the whole composite null (rate <= p-delta, resp.
        >= p+delta), so wrongly claiming equivalence has probability <= alpha.
        """
        if self.n == 0:
            return False
        thr = math.log(1.0 / alpha)
        inside = abs(self.rate - self.p) < delta
        return (
            inside
            and self.log_evidence(self.p - delta, side=+1) >= thr
            and self.log_evidence(self.p + delta, side=-1) >= thr
        )


# --------------------------------------------------------------------------- homogeneity


def _g_stat(obs: np.ndarray, exp: np.ndarray) -> float:
    """Likelihood-ratio (G) statistic 2 sum O log(O/E); empty cells contribute 0."""
    return float(2.0 * np.sum(special.xlogy(obs, obs / exp) - (obs - exp)))


def homogeneity_test(
    kept_per_block: Any, total_per_block: Any, alternative: str = "greater", lambda_: str = "log-likelihood"
) -> TestOutcome:
    """Chi-square test that every block of a mask has the same keep rate ((block × kept/dropped) table).

    `total_per_block` is an array or one int for equal blocks. df = blocks - 1. The statistic is the
    likelihood-ratio G (`chi2_contingency(table, correction=False, lambda_="log-likelihood")`);
    lambda_="pearson" gives Pearson's X^2. G is the default because at the alphas of a run (1e-8)
    Pearson's tail is too light for cells with modest expected counts (in a 1-df table, a cell
    expecting 25 reaches Pearson's 1e-8 threshold 67x more often than 1e-8, G's about as often as
    nominal: G/2 is the count's large-deviation rate). With many blocks the effect is diluted. alternative="greater" (rates differ between blocks) or
    "two-sided" (also flags block counts too even to be binomial, e.g. a tiled mask whose blocks
    hold whole tiles). statistic: G (or X^2); df_or_n: df.
    """
    k = _host_f64(kept_per_block).reshape(-1)
    tot = np.broadcast_to(_host_f64(total_per_block), k.shape).astype(np.float64)
    if np.any(k < 0) or np.any(k > tot):
        raise ValueError("need 0 <= kept_per_block <= total_per_block")
    use = tot > 0
    k, tot = k[use], tot[use]
    B = int(k.size)
    q_hat = k.sum() / tot.sum() if B else float("nan")
    if B < 2 or not 0.0 < q_hat < 1.0:
        return _degenerate(0.0, max(B - 1, 0), "fewer than 2 blocks, or no drops / no keeps", q_hat=q_hat)
    e_k, e_d = tot * q_hat, tot * (1.0 - q_hat)
    z = (k - e_k) / np.sqrt(e_k * (1.0 - q_hat))
    if lambda_ == "pearson":
        stat = float(np.sum(z * z))
    elif lambda_ == "log-likelihood":
        stat = _g_stat(k, e_k) + _g_stat(tot - k, e_d)
    else:
        raise ValueError(f"lambda_ must be 'log-likelihood' or 'pearson', got {lambda_!r}")
    df = B - 1
    upper = float(sps.chi2.sf(stat, df))
    pvalue = _two_sided(float(sps.chi2.cdf(stat, df)), upper) if alternative == "two-sided" else upper
    worst = int(np.argmax(np.abs(z)))
    return TestOutcome(
        stat,
        pvalue,
        df,
        {
            "blocks": B,
            "q_hat": float(q_hat),
            "min_expected": float(min(e_k.min(), e_d.min())),
            "worst_block": worst,
            "worst_block_keep_rate": float(k[worst] / tot[worst]),
            "worst_block_z": float(z[worst]),
            "alternative": alternative,
            "statistic": lambda_,
        },
    )


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
    N = a.numel()
    n11 = int(torch.count_nonzero(a & b))
    na, nb = int(torch.count_nonzero(a)), int(torch.count_nonzero(b))
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
    Da, Db = N - int(torch.count_nonzero(a)), N - int(torch.count_nonzero(b))
    if Da in (0, N) or Db in (0, N):
        return _degenerate(0.0, N, "a mask is constant", drops=(Da, Db))
    fa = torch.fft.rfft(_f64(~a))
    fb = torch.fft.rfft(_f64(~b))
    X = torch.fft.irfft(torch.conj(fa) * fb, n=N)  # X[s] = sum_i da[i] db[(i+s) mod N]
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
    x = _f64(m)
    mean = float(x.mean().item())
    var = mean * (1.0 - mean)
    if var == 0.0 or N < 3:
        return _degenerate(0.0, 0, "constant mask (or fewer than 3 elements)", q_hat=mean)
    I = torch.fft.rfft(x - mean).abs().square() / (N * var)
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
    statistic: autocorrelation r at the worst lag (detail["lag"]); df_or_n: number of lags.
    """
    m = _flat_mask(mask)
    N = m.numel()
    lags = [int(L) for L in lags]
    if not lags or any(not 0 < L < N for L in lags):
        raise ValueError(f"lags must be in [1, N-1] (N={N}), got {lags}")
    d = ~m
    D = int(torch.count_nonzero(d))
    if D in (0, N):
        return _degenerate(0.0, len(lags), "constant mask", drops=D)
    denom = float(D) * (N - D)
    per_lag = []
    for L in lags:
        x = int(torch.count_nonzero(d & torch.roll(d, -L)))
        p_one = _hyper_two_sided(x, N, D, D)
        per_lag.append((p_one, L, (N * x - D * D) / denom, x))
    p_one, L, r, x = min(per_lag)
    return TestOutcome(
        r,
        min(1.0, len(lags) * p_one),
        len(lags),
        {"lag": L, "coincident_drops": x, "expected": D * D / N, "p_single": p_one,
         "r_by_lag": {lag: rr for _, lag, rr, _ in per_lag}, "n": N, "q": q, "q_hat": 1 - D / N},
    )


def _runs_log_pmf(n1: int, n2: int, R: np.ndarray) -> np.ndarray:
    """log P(R runs) for a uniformly random arrangement of n1 + n2 items (Wald–Wolfowitz)."""
    def logC(n: int, k: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            out = special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
        return np.where((k >= 0) & (k <= n), out, -np.inf)

    k = R // 2
    even = np.log(2.0) + logC(n1 - 1, k - 1) + logC(n2 - 1, k - 1)
    odd = np.logaddexp(logC(n1 - 1, k) + logC(n2 - 1, k - 1), logC(n1 - 1, k - 1) + logC(n2 - 1, k))
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
    n1 = int(torch.count_nonzero(m))
    n2 = N - n1
    if n1 == 0 or n2 == 0:
        return _degenerate(0.0, N, "constant mask")
    dd = int(torch.count_nonzero((~m[1:]) & (~m[:-1])))
    R = 1 + int(torch.count_nonzero(m[1:] != m[:-1]))
    mu = 1.0 + 2.0 * n1 * n2 / N
    var = 2.0 * n1 * n2 * (2.0 * n1 * n2 - N) / (N * N * (N - 1.0)) if N > 1 else 0.0
    sd = math.sqrt(max(var, 0.0))
    r_min, r_max = 2, 2 * min(n1, n2) + (1 if n1 != n2 else 0)
    lo, hi = r_min, r_max
    if hi - lo > 200_000:  # outside mu ± 40 sd the pmf is < e^-800: sum only the window
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


def row_correlation_test(mask: Any, q: float, min_expected: float = _ROWS_SUM_MIN_EXPECTED) -> TestOutcome:
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
    Rows with no drops or no keeps are skipped.
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
    Bv = int(D.size)
    if Bv < 2:
        return _degenerate(0.0, 0, "fewer than 2 rows with both kept and dropped units")
    ia, ib = np.triu_indices(Bv, k=1)
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
    bin_id = torch.bucketize(xv, edges)  # 0 .. bins-1
    kept_per_bin = torch.bincount(bin_id[k], minlength=bins)
    total = torch.bincount(bin_id, minlength=bins)
    res = homogeneity_test(kept_per_bin, total)
    rates = _host_f64(kept_per_bin) / np.maximum(_host_f64(total), 1)
    detail = {**res.detail, "bin_edges": _host_f64(edges).tolist(), "keep_rate_by_bin": rates.tolist()}
    return TestOutcome(res.statistic, res.pvalue, res.df_or_n, detail)


# --------------------------------------------------------------------------- expectation


def expectation_test(sum_dev: float, sum_var: float, n: int | None = None) -> TestOutcome:
    """End-to-end unbiasedness: z = sum(y - e) / sqrt(sum var(y)) ~ N(0, 1), two-sided.

    For inverted dropout e = x and var = x^2 p/q per element. statistic: z; df_or_n: n if given,
    else 1.
    """
    if not sum_var > 0:
        return _degenerate(0.0, n or 1, "zero variance")
    z = float(sum_dev) / math.sqrt(float(sum_var))
    return TestOutcome(z, float(2.0 * sps.norm.sf(abs(z))), int(n or 1), {"z": z})


def bernoulli_sum_kurtosis(p: float, calls: int) -> float:
    """Excess kurtosis of a sum of `calls` equal-weight Bernoulli(p) terms: (1-6pq)/(pq·calls).

    Every two-valued output (inverted, classic or alpha dropout of a fixed x) has the single-call
    excess kurtosis (1-6pq)/(pq), so with the same x in every call this is each position's value.
    With x_k varying across calls multiply (1-6pq)/(pq) by sum x^4 / (sum x^2)^2 instead.
    Pass it as `kurtosis` to `expectation_per_position_test`.
    """
    pq = p * (1.0 - p)
    return (1.0 - 6.0 * pq) / (pq * calls)


def expectation_per_position_test(dev_sums: Any, var_sums: Any, kurtosis: Any = None) -> TestOutcome:
    """Unbiasedness at every position: sum_i z_i^2, z_i = dev_i / sqrt(var_i), upper tail.

    Without `kurtosis`, referred to chi2(N). With the excess kurtosis of each z_i (scalar or (N,);
    see `bernoulli_sum_kurtosis`), to the scaled chi-square with the exact variance sum(2 + k_i):
    needed when drops are rare and calls few (p = 0.02 over 32 calls: k ~ 1.4, i.e. the variance
    of each z_i^2 is 70% above chi2's 2). Positions with var 0 are skipped.
    statistic: sum z_i^2; df_or_n: positions used.
    """
    dev = _f64(_tensor(dev_sums).reshape(-1))
    var = _f64(_tensor(var_sums).reshape(-1)).to(dev.device)
    ok = var > 0
    n = int(ok.sum().item())
    if n == 0:
        return _degenerate(0.0, 0, "zero variance everywhere")
    z2 = dev[ok].square() / var[ok]
    S = float(z2.sum().item())
    if kurtosis is None:
        pvalue, detail = float(sps.chi2.sf(S, n)), {}
    else:
        k = _tensor(kurtosis)
        k = _f64(k.reshape(-1)).to(dev.device)[ok] if k.numel() > 1 else _f64(k.reshape(-1)).to(dev.device)
        vsum = float((2.0 + k).sum().item()) if k.numel() > 1 else n * (2.0 + float(k.item()))
        pvalue, g, h = _scaled_chi2_sf(S, float(n), vsum)
        detail = {"scaled_df": h, "scale": g}
    worst = int(torch.argmax(z2).item())
    return TestOutcome(S, pvalue, n, {"mean_z2": S / n, "max_z2": float(z2[worst].item()), **detail})
