"""Statistical tests on dropout masks: the drop rate (exact and sequential), homogeneity and the
expectation; the independence tests are in dropcheck/independence.py. Both follow the battery in
STATISTICS.md.

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
import scipy.fft
import torch
from scipy import special
from scipy import stats as sps

# Prior concentrations (a + b of the beta prior, centred on the rate tested) averaged by
# RobbinsMixture: prior sd ~ sqrt(pq / c), from "anything goes" (c = 1) down to biases of ~1e-4.
# Fixed in advance, as the mixture must be; the average costs log(9) = 2.2 nats of evidence.
DEFAULT_WIDTHS: tuple[float, ...] = tuple(10.0**k for k in range(9))


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


def count_true(mask: torch.Tensor) -> torch.Tensor:
    """How many elements of a bool tensor are True: a 0-d integer tensor on its device.

    Counting kept units is done once or twice per sample call, so it takes the fastest way: on the
    CPU numpy's `count_nonzero` (a vectorised popcount: 2x the byte sum below, 5x
    `torch.count_nonzero`); elsewhere a sum of the bytes, on the device (int32 where it cannot
    overflow)."""
    if mask.device.type == "cpu":
        return torch.tensor(np.count_nonzero(mask.numpy()))
    return mask.view(torch.uint8).sum(dtype=torch.int32 if mask.numel() < 2**31 else torch.int64)


def _f64(t: torch.Tensor) -> torch.Tensor:
    # MPS has no float64: fall back to the CPU there (counts are exact either way).
    if t.device.type == "mps":
        t = t.cpu()
    return t.to(torch.float64)


def rfft(x: torch.Tensor) -> torch.Tensor:
    """`torch.fft.rfft(x)` of a 1-d real tensor, on its own device. On the CPU scipy.fft computes it,
    on a zero-copy view: 2.5-3x faster than torch's own on one thread (2^17 to 2^19 points), and
    the FFTs were dropcheck's largest cost in the default profile. Elsewhere torch does, so that a
    CUDA sample never leaves the device."""
    if _numpy_fft_ok(x, (torch.float32, torch.float64)):
        return torch.from_numpy(scipy.fft.rfft(_numpy_view(x)))
    return torch.fft.rfft(x)


def irfft(X: torch.Tensor, n: int) -> torch.Tensor:
    """`torch.fft.irfft(X, n=n)`, computed like `rfft`."""
    if _numpy_fft_ok(X, (torch.complex64, torch.complex128)):
        return torch.from_numpy(scipy.fft.irfft(_numpy_view(X), n=n))
    return torch.fft.irfft(X, n=n)


def _numpy_fft_ok(t: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> bool:
    # Only where scipy gives what torch gives (same result dtype); anything else goes to torch.
    return t.device.type == "cpu" and t.dtype in dtypes


def _numpy_view(t: torch.Tensor) -> np.ndarray:
    return t.detach().resolve_conj().resolve_neg().numpy()


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
    return log_mean_exp(terms)


def max_log_likelihood_ratio(drops: int, n: int, r: float) -> float:
    """log sup_θ L(θ)/L(r) for `drops` of `n` (n times the KL divergence of drops/n from r): an upper
    bound of Robbins' log M(r), which averages L(θ)/L(r) over a prior. Costs a microsecond."""
    rate = drops / n
    return (_xlogx_ratio(drops, rate, r) + _xlogx_ratio(n - drops, 1.0 - rate, 1.0 - r)) * (1.0 + 1e-12) + 1e-9


def _xlogx_ratio(count: float, a: float, b: float) -> float:
    return count * math.log(a / b) if count else 0.0


def log_mean_exp(terms: np.ndarray) -> np.ndarray:
    """log(mean(exp(terms))) over the last axis, stable for large and -inf terms.

    By hand rather than scipy's logsumexp, which costs 10x more on a few numbers: this runs after
    every chunk of the drop-rate sample."""
    top = np.max(terms, axis=-1, keepdims=True)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(terms - safe), axis=-1)) + safe[..., 0] - math.log(terms.shape[-1])


class RobbinsMixture:
    """Anytime-valid test of H0: drop rate == p, for a stream of (drops, n) chunks.

    Check `rejects(alpha)` after every chunk and stop when it says so: the chance that it ever
    says so on a correct implementation is at most alpha, however many times it was checked (a
    fixed-n test checked repeatedly is not valid). Gross bugs fail within tens of elements.

    >>> rm = RobbinsMixture(0.1)
    >>> rm.update(drops=18, n=20)  # keep/drop swapped
    >>> rm.rejects(1e-8)
    True

    Given the `alpha` it will be asked about, an update skips the mixture's evaluation (a few
    special functions per prior width, once per chunk) whenever a cheap upper bound shows that
    log M cannot reach log(1/alpha) then: `rejects` answers exactly as without it, for that alpha
    or any smaller one, and `max_log_evidence` is exact only once it has reached log(1/alpha).
    """

    def __init__(self, p: float, widths: Sequence[float] = DEFAULT_WIDTHS, alpha: float | None = None):
        if not 0.0 < p < 1.0:
            raise ValueError(f"RobbinsMixture needs 0 < p < 1, got {p}")
        self.p = float(p)
        self.widths = tuple(float(w) for w in widths)
        self.alpha = alpha
        self._threshold = math.log(1.0 / alpha) if alpha is not None else -math.inf
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
        bound = max_log_likelihood_ratio(self.drops, self.n, self.p)
        if bound > self.max_log_evidence and bound >= self._threshold:
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
        if self.alpha is not None and alpha > self.alpha:
            raise ValueError(f"this mixture skips evaluations below alpha={self.alpha:g}; it cannot answer for {alpha:g}")
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


def edge_regions_test(kept_first: Any, kept_last: Any, present: Any, p: float) -> TestOutcome:
    """Exact test that the first and the last 1, 2, 4, ... units of calls drop at rate `p`.

    `kept_first[d]` / `kept_last[d]`: kept units at distance d from the start / the end of a call,
    summed over calls; `present[d]`: calls with a unit at distance d (the same for both ends). The
    drops within each region (distance < 1, 2, 4, ..., len(present)) are Binomial(units, p) under
    H0, exactly and at any p. Each region gets the doubled smaller binomial tail, all in one scipy
    call (14 calls of scipy's binomtest cost 7 ms); the smallest, times the number of regions, is
    the p-value (Bonferroni).
    statistic: the drop rate of the worst region (detail["region"]); df_or_n: its units.
    """
    present = np.cumsum(_host_f64(present).reshape(-1))
    regions = [2**k for k in range(present.size.bit_length()) if 2**k <= present.size]
    names = [f"{end} {r}" for end in ("first", "last") for r in regions]
    n = np.concatenate([present[np.array(regions) - 1]] * 2)
    kept = np.concatenate([np.cumsum(_host_f64(k).reshape(-1))[np.array(regions) - 1] for k in (kept_first, kept_last)])
    if not n.all():
        return _degenerate(0.0, 0, "a region with no units")
    drops = n - kept
    pvals = np.minimum(1.0, 2.0 * np.minimum(sps.binom.cdf(drops, n, p), sps.binom.sf(drops - 1, n, p)))
    rates = drops / n
    i = int(np.argmin(pvals))
    return TestOutcome(float(rates[i]), float(min(1.0, len(names) * pvals[i])), int(n[i]),
                       {"region": names[i], "drops": int(drops[i]), "n": int(n[i]), "p_single": float(pvals[i]),
                        "drop_rate_by_region": dict(zip(names, np.round(rates, 5).tolist())), "regions": len(names)})


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
    k = None if kurtosis is None else _f64(_tensor(kurtosis).reshape(-1)).to(dev.device)
    sizes = [dev.numel(), var.numel()] + ([] if k is None else [k.numel()])
    if sizes[0] != sizes[1] or sizes[2:] not in ([], [1], [sizes[1]]):
        raise ValueError(f"dev_sums, var_sums (and a per-position kurtosis) must have one value per position; got sizes {sizes}")
    ok = var > 0
    n = int(ok.sum().item())
    if n == 0:
        return _degenerate(0.0, 0, "zero variance everywhere")
    everywhere = n == ok.numel()  # the usual case: no boolean indexing (a gather over every position)
    z2 = dev.square() / var if everywhere else dev[ok].square() / var[ok]
    S = float(z2.sum().item())
    if k is None:
        pvalue, detail = float(sps.chi2.sf(S, n)), {}
    else:
        if k.numel() > 1 and not everywhere:
            k = k[ok]
        vsum = float((2.0 + k).sum().item()) if k.numel() > 1 else n * (2.0 + float(k.item()))
        pvalue, g, h = _scaled_chi2_sf(S, float(n), vsum)
        detail = {"scaled_df": h, "scale": g}
    worst = int(torch.argmax(z2).item())
    return TestOutcome(S, pvalue, n, {"mean_z2": S / n, "max_z2": float(z2[worst].item()), **detail})
