"""The statistics tested on their own, with simulated masks (no dropout implementation involved).

- Calibration: on correct masks (torch.rand < q) the exact p-values are uniform (KS), and the
  Bonferroni-min p-values reject at most their nominal alpha (plus 3 standard errors).
- Power: each test rejects the broken mask it exists for at alpha = 1e-8, on 20 seeds; where the
  effect is graded the sample is the one `dropcheck.power` plans for power 0.999.
- RobbinsMixture: false alarms stay below alpha when checked after every chunk; gross bugs stop
  within tens of elements.
- dropcheck.power reproduces the constants of STATISTICS.md.

Every random stream has its own literal seed. Fixed seeds make each check deterministic, so the
significance levels below are the chance that a *new* stream (a torch upgrade changing
torch.rand) is unlucky, not a flakiness rate. A failing check is a bug in the statistics or a
sign the stream changed: never re-seed to make it pass.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from dropcheck import independence, power, statistical, stats
from dropcheck.ledger import get_profile

KS_ALPHA = 1e-3  # level of each uniformity check (KS over REPS p-values)
LOOSE_ALPHA = 0.05  # nominal level at which Bonferroni-min tests' rejection rates are checked
SE_MARGIN = 3.0  # rejection rate <= alpha + 3 SE: a correct test fails this with chance ~1e-3
POWER_ALPHA = 1e-8  # the per-test alpha of a real run (1e-6 family split over ~100 tests)
REPS = 200  # simulated correct masks per calibration check
SEEDS = 20  # simulated broken masks per power check
# Graded effects are planned for power 0.999, so >= 18 of 20 must reject; a correct test misses
# more than 2 with chance C(20,3)·1e-9 ~ 1e-6.
MIN_GRADED_REJECTIONS = 18


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tensors are small: intra-op threads only add OpenMP barriers, which cost a scheduler
    # time slice each when the other core is busy (a 16x2048 matmul took 25 ms under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _keep(shape: tuple[int, ...], q: float, g: torch.Generator) -> torch.Tensor:
    """A correct dropout mask: True = kept, independently with probability q."""
    return torch.rand(shape, generator=g) < q


def _signed_log_uniform(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    mag = 10.0 ** (6.0 * torch.rand(shape, generator=g, dtype=torch.float64) - 3.0)
    return torch.where(torch.rand(shape, generator=g) < 0.5, -mag, mag)


def _assert_uniform(pvalues: list[float], what: str, alternative: str = "two-sided") -> None:
    """KS against U(0, 1). alternative="greater" checks only that p-values are not too small
    (for conservative discrete tests, whose p-values pile up at 1 by design)."""
    res = sps.kstest(np.asarray(pvalues), "uniform", alternative=alternative)
    assert res.pvalue > KS_ALPHA, (
        f"{what}: p-values are not uniform (KS {alternative} D={res.statistic:.3f}, p={res.pvalue:.1e}); "
        f"deciles {np.quantile(pvalues, np.linspace(0.1, 0.9, 9)).round(2).tolist()}"
    )


def _assert_rate_at_most(pvalues: list[float], alpha: float, what: str) -> None:
    n = len(pvalues)
    rate = float(np.mean(np.asarray(pvalues) <= alpha))
    bound = alpha + SE_MARGIN * math.sqrt(alpha * (1 - alpha) / n)
    assert rate <= bound, f"{what}: rejects {rate:.3f} of correct masks at alpha={alpha} (bound {bound:.3f})"


def _assert_power(pvalues: list[float], what: str, at_least: int = SEEDS) -> None:
    rejected = sum(p <= POWER_ALPHA for p in pvalues)
    assert rejected >= at_least, (
        f"{what}: rejected {rejected}/{len(pvalues)} broken masks at alpha={POWER_ALPHA} "
        f"(needs {at_least}); largest p={max(pvalues):.2e}"
    )


# ============================================================================ calibration (exact p)


@pytest.mark.parametrize("p, seed", [(0.1, 1101), (0.5, 1102)])
def test_binom_test_is_calibrated(p: float, seed: int) -> None:
    n = 10_000
    drops = (~_keep((REPS, n), 1 - p, _gen(seed))).sum(dim=1)
    _assert_uniform([stats.binom_test(int(k), n, p).pvalue for k in drops], f"binom_test p={p}")


@pytest.mark.parametrize("p, seed", [(0.1, 1201), (0.5, 1202)])
def test_homogeneity_test_is_calibrated(p: float, seed: int) -> None:
    kept = _keep((REPS, 64, 256), 1 - p, _gen(seed)).sum(dim=2)  # (reps, blocks)
    _assert_uniform([stats.homogeneity_test(k, 256).pvalue for k in kept], f"homogeneity_test p={p}")


@pytest.mark.parametrize("p, seed", [(0.02, 1301), (0.5, 1302)])
def test_dispersion_test_is_calibrated(p: float, seed: int) -> None:
    n = 1024
    drops = (~_keep((REPS, 64, n), 1 - p, _gen(seed))).sum(dim=2)  # (reps, calls)
    _assert_uniform([independence.dispersion_test(d, n, p).pvalue for d in drops], f"dispersion_test p={p}")


@pytest.mark.parametrize("p, seed", [(0.1, 1401), (0.5, 1402)])
def test_position_count_test_is_calibrated(p: float, seed: int) -> None:
    K = 32
    counts = _keep((REPS, K, 2048), 1 - p, _gen(seed)).sum(dim=1)  # (reps, positions)
    _assert_uniform(
        [independence.position_count_test(c, K, 1 - p).pvalue for c in counts], f"position_count_test p={p}"
    )


@pytest.mark.parametrize("p, seed", [(0.1, 1501), (0.5, 1502)])
def test_consecutive_calls_test_is_calibrated(p: float, seed: int) -> None:
    masks = _keep((REPS, 2, 40_000), 1 - p, _gen(seed))
    _assert_uniform([independence.consecutive_calls_test(m[0], m[1]).pvalue for m in masks], f"consecutive_calls_test p={p}")


def test_consecutive_calls_test_with_few_pairs_is_valid() -> None:
    # 300 pairs at p = 0.1: 3 expected drop-drop pairs. The exact p-values are then coarse and
    # conservative (they pile up at 1), so only "not too small" is checked.
    masks = _keep((REPS, 2, 300), 0.9, _gen(1503))
    pvals = [independence.consecutive_calls_test(m[0], m[1]).pvalue for m in masks]
    _assert_uniform(pvals, "consecutive_calls_test N=300", alternative="greater")


@pytest.mark.parametrize("p, seed", [(0.1, 1601), (0.5, 1602)])
def test_markov_test_is_calibrated(p: float, seed: int) -> None:
    masks = _keep((REPS, 20_000), 1 - p, _gen(seed))
    _assert_uniform([independence.markov_test(m).pvalue for m in masks], f"markov_test p={p}")


def test_markov_test_with_rare_drops_is_valid() -> None:
    # ~100 drops in 5000: R is coarse, the exact test conservative; only "not too small" checked.
    masks = _keep((REPS, 5000), 0.98, _gen(1603))
    _assert_uniform([independence.markov_test(m).pvalue for m in masks], "markov_test p=0.02", alternative="greater")


@pytest.mark.parametrize("p, seed", [(0.1, 1701), (0.5, 1702)])
def test_row_correlation_test_is_calibrated(p: float, seed: int) -> None:
    # >= ~20 expected in every pair's 2x2 table: the summed form is used (it is exact in mean and
    # variance; at p = 0.1 with 10 expected its rejection rates matched 1e-2..1e-4 over 2e4 masks)
    masks = _keep((REPS, 16, 2048), 1 - p, _gen(seed))
    outs = [independence.row_correlation_test(m, 1 - p) for m in masks]
    assert {o.detail["method"] for o in outs} == {"sum"}
    _assert_uniform([o.pvalue for o in outs], f"row_correlation_test p={p}")


@pytest.mark.parametrize("p, seed", [(0.1, 1801), (0.5, 1802)])
def test_input_dependence_test_is_calibrated(p: float, seed: int) -> None:
    g = _gen(seed)
    x = _signed_log_uniform((REPS, 8192), g)
    kept = _keep((REPS, 8192), 1 - p, g)
    _assert_uniform(
        [independence.input_dependence_test(xi, ki).pvalue for xi, ki in zip(x, kept)], f"input_dependence_test p={p}"
    )


def _inverted_dropout_sums(x: torch.Tensor, kept: torch.Tensor, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element deviation y - x and null variance x^2 p/q of inverted dropout."""
    y = torch.where(kept, x / q, torch.zeros_like(x))
    return y - x, x.square() * (1 - q) / q


@pytest.mark.parametrize("p, seed", [(0.1, 1901), (0.5, 1902)])
def test_expectation_test_is_calibrated(p: float, seed: int) -> None:
    g = _gen(seed)
    x = _signed_log_uniform((REPS, 4096), g).abs() ** 0.25  # positive, spread over 0.18..5.6
    dev, var = _inverted_dropout_sums(x, _keep((REPS, 4096), 1 - p, g), 1 - p)
    sums = zip(dev.sum(dim=1).tolist(), var.sum(dim=1).tolist())
    _assert_uniform([stats.expectation_test(d, v).pvalue for d, v in sums], f"expectation_test p={p}")


@pytest.mark.parametrize("p, seed", [(0.1, 1911), (0.02, 1912)])
def test_expectation_per_position_test_is_calibrated(p: float, seed: int) -> None:
    # 32 calls at p = 0.02: each z_i^2 has variance ~3.6, not chi2's 2; the kurtosis passed in
    # corrects for it (without it this check fails: the p-values pile up near 0 and 1).
    g = _gen(seed)
    calls, positions = 32, 1024
    x = 1.0 + torch.rand((REPS, calls, positions), generator=g, dtype=torch.float64)
    dev, var = _inverted_dropout_sums(x, _keep((REPS, calls, positions), 1 - p, g), 1 - p)
    shape = (x**4).sum(dim=1) / (x**2).sum(dim=1) ** 2  # sum x^4 / (sum x^2)^2 per position
    kurt = stats.bernoulli_sum_kurtosis(p, 1) * shape
    pvals = [
        stats.expectation_per_position_test(d, v, kurtosis=k).pvalue
        for d, v, k in zip(dev.sum(dim=1), var.sum(dim=1), kurt)
    ]
    _assert_uniform(pvals, f"expectation_per_position_test p={p}")


# ============================================================================ calibration (Bonferroni)

BONF_REPS = 400


@pytest.mark.parametrize("p, seed", [(0.1, 2001), (0.02, 2002)])
def test_cross_correlation_test_false_alarms_at_most_alpha(p: float, seed: int) -> None:
    masks = _keep((BONF_REPS, 2, 4096), 1 - p, _gen(seed))
    pvals = [independence.cross_correlation_test(m[0], m[1], 1 - p).pvalue for m in masks]
    _assert_rate_at_most(pvals, LOOSE_ALPHA, f"cross_correlation_test p={p}")


@pytest.mark.parametrize("p, seed", [(0.1, 2101), (0.02, 2102)])
def test_periodogram_test_false_alarms_at_most_alpha(p: float, seed: int) -> None:
    masks = _keep((BONF_REPS, 4096), 1 - p, _gen(seed))
    pvals = [independence.periodogram_test(m, 1 - p).pvalue for m in masks]
    _assert_rate_at_most(pvals, LOOSE_ALPHA, f"periodogram_test p={p}")


def test_row_correlation_test_with_rare_drops_false_alarms_at_most_alpha() -> None:
    # p = 0.02 over 1024 units: 0.4 expected co-drops per pair, so the max-pair Bonferroni form
    # is used (the summed form rejected 13x too often at 1e-4 here).
    masks = _keep((BONF_REPS, 16, 1024), 0.98, _gen(2301))
    outs = [independence.row_correlation_test(m, 0.98) for m in masks]
    assert {o.detail["method"] for o in outs} == {"max-pair"}
    _assert_rate_at_most([o.pvalue for o in outs], LOOSE_ALPHA, "row_correlation_test p=0.02")


@pytest.mark.slow
def test_row_correlation_test_tail_is_calibrated() -> None:
    # The summed form's chi-square reference is a two-moment fit, so check its tail directly:
    # 10^4 masks at p = 0.1, F = 1024 (~10 expected co-drops per pair, at the switch between the
    # summed and max-pair forms), rejection rates at 1e-2 and 1e-3.
    g = _gen(2401)
    pvals: list[float] = []
    for _ in range(100):
        pvals += [independence.row_correlation_test(m, 0.9).pvalue for m in _keep((100, 16, 1024), 0.9, g)]
    for alpha in (1e-2, 1e-3):
        _assert_rate_at_most(pvals, alpha, f"row_correlation_test tail at {alpha}")


@pytest.mark.parametrize("p, seed", [(0.1, 2201), (0.02, 2202)])
def test_lag_test_false_alarms_at_most_alpha(p: float, seed: int) -> None:
    masks = _keep((BONF_REPS, 4096), 1 - p, _gen(seed))
    pvals = [independence.lag_test(m, [1, 64, 512], 1 - p).pvalue for m in masks]
    _assert_rate_at_most(pvals, LOOSE_ALPHA, f"lag_test p={p}")


@pytest.mark.parametrize("p, seed", [(0.1, 2211), (0.02, 2212)])
def test_lag_test_at_half_the_mask_is_exact(p: float, seed: int) -> None:
    # Lag N/2 alone is one exact hypergeometric count (its pairs counted once, not circularly twice).
    masks = _keep((REPS, 4096), 1 - p, _gen(seed))
    _assert_uniform([independence.lag_test(m, [2048], 1 - p).pvalue for m in masks], f"lag_test at N/2, p={p}",
                    alternative="greater")


def _edge_counts(g: torch.Generator, p: float, tail_rate: float | None = None):
    """A RATE-EDGES sample at `default` simulated: its calls' masks, of sizes 1..EDGE_MAX_UNITS, and
    their kept units per distance from the start and the end. With `tail_rate`, the last size % 8
    units of each drop at that rate."""
    calls, most, edge = statistical.edge_calls(get_profile("default")), statistical.EDGE_MAX_UNITS, statistical.EDGE_UNITS
    sizes = torch.randint(1, most + 1, (calls, 1), generator=g)
    pos = torch.arange(most)
    rate = torch.full((calls, most), p)
    if tail_rate is not None:
        rate = torch.where(pos >= sizes // 8 * 8, tail_rate, rate)
    kept = (torch.rand((calls, most), generator=g) >= rate) & (pos < sizes)  # row c: a mask of sizes[c] units
    d = torch.arange(edge)
    last = kept.gather(1, (sizes - 1 - d).clamp(min=0)) & (d < sizes)
    return kept[:, :edge].sum(0), last.sum(0), (d < sizes).sum(0)


@pytest.mark.parametrize("p, seed", [(0.1, 2221), (0.5, 2222)])
def test_edge_regions_test_false_alarms_at_most_alpha(p: float, seed: int) -> None:
    g = _gen(seed)
    pvals = [stats.edge_regions_test(*_edge_counts(g, p), p).pvalue for _ in range(BONF_REPS)]
    _assert_rate_at_most(pvals, LOOSE_ALPHA, f"edge_regions_test p={p}")


# ============================================================================ power


def _pvals(make_outcome, seed: int, n: int = SEEDS) -> list[float]:
    g = _gen(seed)
    return [make_outcome(g).pvalue for _ in range(n)]


def test_binom_test_detects_rate_bias_at_planned_n() -> None:
    n = power.rate_sample_size(0.1, 0.004, POWER_ALPHA)  # ~4.4e5
    pvals = _pvals(lambda g: stats.binom_test(int((torch.rand(n, generator=g) < 0.104).sum()), n, 0.1), 3001)
    _assert_power(pvals, "binom_test: rate 0.104 vs 0.1", MIN_GRADED_REJECTIONS)


def test_homogeneity_test_detects_positional_bias_at_planned_n() -> None:
    blocks = 64
    rates = torch.linspace(0.08, 0.12, blocks)  # drop rate drifting along the tensor
    w = float(rates.std(unbiased=False)) / math.sqrt(0.1 * 0.9)
    per_block = math.ceil(power.chi2_sample_size(w, blocks - 1, POWER_ALPHA) / blocks)

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        kept = torch.rand((blocks, per_block), generator=g) >= rates[:, None]
        return stats.homogeneity_test(kept.sum(dim=1), per_block)

    _assert_power(_pvals(outcome, 3101), "homogeneity_test: drop rate 0.08..0.12 by block", MIN_GRADED_REJECTIONS)


def test_homogeneity_test_two_sided_detects_tiled_mask() -> None:
    # A 64-element mask tiled 256 times, in blocks of 1024 (16 tiles each): every block holds the
    # same count, far too even for binomial blocks, so only the lower tail sees it. (Blocks
    # smaller than the tile are plain binomial draws, repeated: the chi-square's mean is right
    # and no block test sees them; the periodogram and lag tests do.)
    def outcome(g: torch.Generator) -> stats.TestOutcome:
        tile = _keep((64,), 0.9, g)
        while bool(tile.all()):  # an all-kept tile is a constant mask: the rate test's business
            tile = _keep((64,), 0.9, g)
        m = tile.repeat(256).reshape(-1, 1024)
        return stats.homogeneity_test(m.sum(dim=1), 1024, alternative="two-sided")

    _assert_power(_pvals(outcome, 3102), "homogeneity_test: tiled mask")


def test_dispersion_test_detects_exact_count_sampler() -> None:
    calls, n, p = 64, 1024, 0.1

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        # round(p·n) drops every call, at random positions: right rate, no binomial spread
        ranks = torch.rand((calls, n), generator=g).argsort(dim=1).argsort(dim=1)
        kept = ranks >= round(p * n)
        return independence.dispersion_test((~kept).sum(dim=1), n, p)

    _assert_power(_pvals(outcome, 3201), "dispersion_test: exact-count sampler")


def test_dispersion_test_detects_per_call_rate_jitter() -> None:
    # Per-call rate ~ U(0.08, 0.12): count variance n^2/12 · 0.04^2 = 2237 on top of npq = 369.
    calls, n, p = 64, 4096, 0.1

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        rate = 0.08 + 0.04 * torch.rand((calls, 1), generator=g)  # drop rate drawn per call
        kept = torch.rand((calls, n), generator=g) >= rate
        return independence.dispersion_test((~kept).sum(dim=1), n, p)

    _assert_power(_pvals(outcome, 3202), "dispersion_test: per-call rate jitter")


@pytest.mark.parametrize("reuse, seed", [(32, 3301), (2, 3302)])
def test_position_count_test_detects_cached_mask(reuse: int, seed: int) -> None:
    # The same mask for `reuse` calls in a row (32: cached for all K; 2: each mask used twice).
    K, N, q = 32, 2048, 0.9

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        masks = _keep((K // reuse, N), q, g).repeat_interleave(reuse, dim=0)
        return independence.position_count_test(masks.sum(dim=0), K, q)

    _assert_power(_pvals(outcome, seed), f"position_count_test: mask reused {reuse}x")


def test_consecutive_calls_test_detects_reused_mask() -> None:
    def outcome(g: torch.Generator) -> stats.TestOutcome:
        a = _keep((4096,), 0.9, g)
        return independence.consecutive_calls_test(a, a.clone())

    _assert_power(_pvals(outcome, 3401), "consecutive_calls_test: same mask twice")


def test_consecutive_calls_test_detects_partial_reuse_at_planned_n() -> None:
    rho = 0.05  # 5% of positions carry the previous call's decision over
    n = power.correlation_sample_size(rho, POWER_ALPHA)  # ~3.1e4

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        a = _keep((n,), 0.9, g)
        b = torch.where(torch.rand(n, generator=g) < rho, a, _keep((n,), 0.9, g))
        return independence.consecutive_calls_test(a, b)

    _assert_power(_pvals(outcome, 3402), "consecutive_calls_test: 5% reuse", MIN_GRADED_REJECTIONS)


@pytest.mark.parametrize("shift, seed", [(1, 3501), (1000, 3502), (-3, 3503)])
def test_cross_correlation_test_detects_shifted_reuse(shift: int, seed: int) -> None:
    N = 4096

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        a = _keep((N,), 0.9, g)
        b = torch.roll(a, shift)  # b[i] = a[i - shift]: the RNG stream advanced by `shift`
        fresh = _keep((N,), 0.9, g)
        edge = slice(0, shift) if shift > 0 else slice(N + shift, N)
        b[edge] = fresh[edge]  # the positions with no predecessor get fresh decisions
        out = independence.cross_correlation_test(a, b, 0.9)
        assert out.detail["shift"] == shift
        return out

    _assert_power(_pvals(outcome, seed), f"cross_correlation_test: reuse shifted by {shift}")


@pytest.mark.parametrize("period, seed", [(7, 3601), (64, 3602)])
def test_periodogram_test_detects_tiled_mask(period: int, seed: int) -> None:
    N = 4096

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        tile = _keep((period,), 0.9, g)
        while bool(tile.all()):  # an all-kept tile is a constant mask: nothing periodic to see
            tile = _keep((period,), 0.9, g)
        return independence.periodogram_test(tile.repeat(N // period + 1)[:N], 0.9)

    _assert_power(_pvals(outcome, seed), f"periodogram_test: tile of period {period}")


def test_lag_test_detects_mask_shared_across_rows() -> None:
    B, F = 8, 512

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        mask = _keep((F,), 0.9, g).expand(B, F)
        out = independence.lag_test(mask, [1, F], 0.9)
        assert out.detail["lag"] == F
        return out

    _assert_power(_pvals(outcome, 3701), "lag_test: rows share one mask")


def test_lag_test_detects_a_mask_repeated_once() -> None:
    def outcome(g: torch.Generator) -> stats.TestOutcome:
        half = _keep((2048,), 0.9, g)
        return independence.lag_test(torch.cat([half, half]), [1, 64, 1024, 2048], 0.9)

    _assert_power(_pvals(outcome, 3711), "lag_test: the second half repeats the first")


def test_edge_regions_test_detects_a_tail_loop_at_half_the_rate() -> None:
    # A tail loop (size % 8 units) dropping at p/2, at p = 0.5: RATE-EDGES' default sample.
    _assert_power(_pvals(lambda g: stats.edge_regions_test(*_edge_counts(g, 0.5, tail_rate=0.25), 0.5), 3721),
                  "edge_regions_test: tail loop at p/2")


def test_markov_test_detects_clumped_drops() -> None:
    def outcome(g: torch.Generator) -> stats.TestOutcome:
        return independence.markov_test(_keep((1024,), 0.9, g).repeat_interleave(4))  # drops in runs of 4

    _assert_power(_pvals(outcome, 3801), "markov_test: block dropout (runs of 4)")


def test_markov_test_detects_weak_clumping_at_planned_n() -> None:
    rho = 0.05  # P(drop | drop) = p + rho q: lag-1 correlation rho
    n = power.correlation_sample_size(rho, POWER_ALPHA)

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        fresh = _keep((n,), 0.9, g)
        refresh = torch.rand(n, generator=g) >= rho
        refresh[0] = True
        source = torch.cummax(torch.where(refresh, torch.arange(n), 0), dim=0).values
        return independence.markov_test(fresh[source])  # copy the previous decision with prob rho

    _assert_power(_pvals(outcome, 3802), "markov_test: lag-1 correlation 0.05", MIN_GRADED_REJECTIONS)


@pytest.mark.parametrize("share, q, seed", [(1.0, 0.9, 3901), (0.3, 0.9, 3902), (1.0, 0.98, 3903)])
def test_row_correlation_test_detects_shared_rows(share: float, q: float, seed: int) -> None:
    B, F = 16, 2048  # q = 0.9: ~20 expected co-drops per pair, the summed form; q = 0.98: max-pair

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        shared = _keep((F,), q, g).expand(B, F)
        own = _keep((B, F), q, g)
        mask = torch.where(torch.rand((B, F), generator=g) < share, shared, own)
        return independence.row_correlation_test(mask, q)

    _assert_power(_pvals(outcome, seed), f"row_correlation_test: {share:.0%} shared, q={q}")


@pytest.mark.parametrize("kind, seed", [("sign", 4001), ("size", 4002)])
def test_input_dependence_test_detects_value_dependent_drops_at_planned_n(kind: str, seed: int) -> None:
    # Drop rate 0.10 for half the values, 0.12 for the other half (negative vs positive inputs,
    # or small vs large |x|). Cohen's w over 8 equal bins: 0.01 / sqrt(0.11 · 0.89).
    w = 0.01 / math.sqrt(0.11 * 0.89)
    n = power.chi2_sample_size(w, 7, POWER_ALPHA)  # ~9.5e4

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        x = _signed_log_uniform((n,), g)
        high = x > 0 if kind == "sign" else x.abs() > 1.0
        kept = torch.rand(n, generator=g) >= torch.where(high, 0.12, 0.10)
        return independence.input_dependence_test(x, kept)

    _assert_power(_pvals(outcome, seed), f"input_dependence_test: {kind}", MIN_GRADED_REJECTIONS)


def test_expectation_test_detects_scale_bias_at_planned_n() -> None:
    q, bias = 0.9, 1.01  # survivors scaled by 1.01/q: mean 1% high
    # per element: E[y - x] = 0.01 E[x], null sd sqrt(E[x^2] p/q), true sd 1.01x that; x ~ U(1, 2)
    effect = 0.01 * 1.5 / math.sqrt(7 / 3 * (1 - q) / q)
    n = math.ceil(power.chi2_noncentrality(1, POWER_ALPHA) * bias**2 / effect**2)

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        x = 1.0 + torch.rand(n, generator=g, dtype=torch.float64)
        y = torch.where(_keep((n,), q, g), x * bias / q, torch.zeros_like(x))
        return stats.expectation_test(float((y - x).sum()), float((x.square() * (1 - q) / q).sum()), n)

    _assert_power(_pvals(outcome, 4101), "expectation_test: scale 1.01/q", MIN_GRADED_REJECTIONS)


def test_expectation_per_position_test_detects_cached_mask() -> None:
    calls, N, q = 32, 1024, 0.9

    def outcome(g: torch.Generator) -> stats.TestOutcome:
        kept = _keep((N,), q, g).expand(calls, N)  # one mask for every call: unbiased overall only
        x = torch.ones((calls, N), dtype=torch.float64)
        dev, var = _inverted_dropout_sums(x, kept, q)
        return stats.expectation_per_position_test(dev.sum(dim=0), var.sum(dim=0))

    _assert_power(_pvals(outcome, 4102), "expectation_per_position_test: cached mask")


# ============================================================================ RobbinsMixture


def _stop_time(rm: stats.RobbinsMixture, draws: torch.Tensor, alpha: float) -> int:
    """Feed drop indicators one at a time; the number fed when `rm` first rejects (0: never)."""
    for i, d in enumerate(draws.tolist(), start=1):
        rm.update(int(d), 1)
        if rm.rejects(alpha):
            return i
    return 0


@pytest.mark.parametrize("p, limit", [(0.1, 20), (0.5, 40)])
def test_robbins_fails_all_dropped_within_tens(p: float, limit: int) -> None:
    t = _stop_time(stats.RobbinsMixture(p), torch.ones(1000, dtype=torch.int64), POWER_ALPHA)
    assert 0 < t <= limit, f"all-dropped at p={p} rejected after {t} elements (limit {limit})"


def test_robbins_fails_keep_drop_swap_within_tens() -> None:
    g = _gen(5001)
    times = [_stop_time(stats.RobbinsMixture(0.1), torch.rand(1000, generator=g) < 0.9, POWER_ALPHA) for _ in range(SEEDS)]
    assert all(0 < t <= 60 for t in times) and np.median(times) <= 25, f"swap at p=0.1 stopped after {times}"


@pytest.mark.parametrize("p, seed", [(0.1, 5101), (0.5, 5102)])
def test_robbins_false_alarms_at_most_alpha_when_checked_every_chunk(p: float, seed: int) -> None:
    # 2000 correct streams, checked after each of 200 chunks of 256 draws. The chunk counts are
    # drawn as Binomial(256, p), which is exactly what a mask's chunk drop count is.
    alpha, streams, chunks, size = 0.01, 2000, 200, 256
    drops = torch.binomial(torch.full((streams, chunks), float(size)), torch.full((streams, chunks), p), generator=_gen(seed))
    S = drops.cumsum(dim=1).double().numpy()
    n = size * np.arange(1, chunks + 1, dtype=np.float64)
    log_m = stats.robbins_log_evidence(S, n[None, :], p)
    alarms = np.any(log_m >= math.log(1 / alpha), axis=1)
    _assert_rate_at_most(list(np.where(alarms, 0.0, 1.0)), alpha, f"RobbinsMixture p={p}")
    # The same streams under a fixed-n z-test repeated after every chunk: far above its 5%, which
    # shows this check can see an invalid sequential test.
    z = (S - n * p) / np.sqrt(n * p * (1 - p))
    assert np.mean(np.any(np.abs(z) >= sps.norm.isf(0.025), axis=1)) > 0.2


def test_robbins_class_matches_vectorised_evidence() -> None:
    rm = stats.RobbinsMixture(0.1)
    g = _gen(5201)
    for _ in range(10):
        rm.update(int((torch.rand(1000, generator=g) >= 0.9).sum()), 1000)
    assert rm.n == 10_000
    assert rm.log_evidence() == pytest.approx(float(stats.robbins_log_evidence(rm.drops, rm.n, 0.1)))
    assert rm.log_evidence() < math.log(1e8) and not rm.rejects(1e-8)


def test_likelihood_ratio_bound_is_above_the_mixture() -> None:
    # The skip in RobbinsMixture(alpha=...) is safe only if this bound never falls below log M.
    for r in (0.01, 0.1, 0.5, 0.9, 0.999):
        for n in (1, 7, 64, 1000, 10**6, 3 * 10**7):
            for drops in sorted(d for d in {0, 1, n // 3, int(n * r), int(n * r) + 1, n - 1, n} if 0 <= d <= n):
                exact = float(stats.robbins_log_evidence(drops, n, r))
                bound = stats.max_log_likelihood_ratio(drops, n, r)
                assert bound >= exact, f"bound {bound} below log M {exact} at drops={drops}, n={n}, r={r}"


@pytest.mark.parametrize("p, true_rate", [(0.1, 0.1), (0.1, 0.104), (0.1, 0.2), (0.5, 0.5), (0.5, 0.51), (0.9, 0.9), (0.9, 0.89)])
def test_robbins_told_its_alpha_stops_exactly_when_the_full_one_does(p: float, true_rate: float) -> None:
    # Same streams (chunks growing 64, 256, ... as in DROP-RATE), same alpha: the mixture that
    # skips evaluations below the threshold must stop at the same chunk, or not stop, like the one
    # that evaluates every chunk.
    alpha, g = 1e-8, _gen(5501)
    for _ in range(20):
        full, lazy = stats.RobbinsMixture(p), stats.RobbinsMixture(p, alpha=alpha)
        for size in [64 * 4**k for k in range(8)] + [2**20] * 8:
            d = int(torch.binomial(torch.tensor(float(size)), torch.tensor(true_rate), generator=g))
            full.update(d, size)
            lazy.update(d, size)
            assert full.rejects(alpha) == lazy.rejects(alpha), (
                f"after {full.n} units ({full.drops} dropped, p={p}): full mixture rejects={full.rejects(alpha)}, "
                f"the one told alpha={alpha:g} rejects={lazy.rejects(alpha)}")
            if full.rejects(alpha):
                break
    with pytest.raises(ValueError, match="cannot answer"):
        lazy.rejects(10 * alpha)


def test_robbins_equivalence_false_claims_at_most_alpha() -> None:
    # True rate exactly at the edge p + delta: "equivalent within delta" is then wrong; checked
    # after every chunk it must be claimed at most alpha of the time.
    alpha, p, delta, streams, chunks, size = 0.01, 0.1, 0.01, 1000, 100, 512
    drops = torch.binomial(
        torch.full((streams, chunks), float(size)), torch.full((streams, chunks), p + delta), generator=_gen(5301)
    )
    S = drops.cumsum(dim=1).double().numpy()
    n = np.broadcast_to(size * np.arange(1, chunks + 1, dtype=np.float64), S.shape)
    thr = math.log(1 / alpha)
    claims = np.abs(S / n - p) < delta  # the observed rate must be inside; evaluate only there
    for r, side in [(p + delta, -1), (p - delta, +1)]:  # the rarely passed half first: fewer evaluations
        claims[claims] = stats.robbins_log_evidence(S[claims], n[claims], r, side=side) >= thr
    _assert_rate_at_most(list(np.where(claims.any(axis=1), 0.0, 1.0)), alpha, "RobbinsMixture.equivalent at the edge")


def test_robbins_equivalence_reached_on_correct_rate() -> None:
    # At the true rate, equivalence within 0.01 at alpha 1e-6 should need ~1.3x the fixed-n TOST
    # sample (STATISTICS.md); allow 2x.
    p, delta, alpha = 0.1, 0.01, 1e-6
    budget = 2 * power.equivalence_sample_size(p, delta, alpha)
    g = _gen(5401)
    reached = 0
    for _ in range(SEEDS):
        rm = stats.RobbinsMixture(p)
        while rm.n < budget and not rm.equivalent(delta, alpha):
            rm.update(int((torch.rand(2048, generator=g) >= 1 - p).sum()), 2048)
        reached += rm.equivalent(delta, alpha)
    assert reached >= MIN_GRADED_REJECTIONS, f"equivalence reached in {reached}/{SEEDS} streams within {budget}"


# ============================================================================ power.py constants


@pytest.mark.parametrize(
    "p, delta, table",  # STATISTICS.md "Sample sizes": alpha 1e-6, power 0.999
    [(0.1, 1e-2, 6.0e4), (0.1, 1e-3, 5.8e6), (0.1, 1e-4, 5.7e8),
     (0.5, 1e-2, 1.6e5), (0.5, 1e-3, 1.6e7), (0.5, 1e-4, 1.6e9)],
)
def test_rate_sample_size_matches_statistics_table(p: float, delta: float, table: float) -> None:
    assert power.rate_sample_size(p, delta, 1e-6, 0.999) == pytest.approx(table, rel=0.03)
    assert power.rate_mde(power.rate_sample_size(p, delta, 1e-6, 0.999), p, 1e-6, 0.999) == pytest.approx(delta, rel=1e-3)


def test_power_constants_match_statistics_md() -> None:
    # "n ~ 63.7·p·q/delta^2" at alpha 1e-6, power 0.999
    assert power.rate_sample_size(0.3, 1e-4, 1e-6, 0.999) * 1e-8 / 0.21 == pytest.approx(63.7, rel=0.03)
    # "Moving from 1e-6 to 1e-9 per test costs 1.33x the samples"
    ratio = power.rate_sample_size(0.3, 1e-4, 1e-9) / power.rate_sample_size(0.3, 1e-4, 1e-6)
    assert ratio == pytest.approx(1.33, rel=0.03)
    # "Chi-square noncentrality for power 0.999 at alpha = 1e-8: 77.8 (1 dof), 97.2 (7), 112 (15)"
    for df, lam in [(1, 77.8), (7, 97.2), (15, 112.0)]:
        assert power.chi2_noncentrality(df, 1e-8, 0.999) == pytest.approx(lam, rel=0.03)
    # "n ~ 77.8/rho^2 (7.8e5 for 1% reuse)"
    assert power.correlation_sample_size(0.01) == pytest.approx(7.8e5, rel=0.03)
    assert power.correlation_mde(10_000) == pytest.approx(math.sqrt(77.8 / 10_000), rel=0.03)
    assert power.chi2_mde_effect(10_000, 7) == pytest.approx(math.sqrt(97.2 / 10_000), rel=0.03)
    # Equivalence: "64.7·p·q/delta^2"; "both error rates at 1e-6 needs 93·p·q/delta^2"
    assert power.equivalence_sample_size(0.5, 1e-3, 1e-6, 0.999) / 0.25e6 == pytest.approx(64.7, rel=0.03)
    assert power.equivalence_sample_size(0.5, 1e-3, 1e-6, 1 - 1e-6) / 0.25e6 == pytest.approx(93.0, rel=0.03)


# ============================================================================ devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_statistics_agree_on_cuda() -> None:
    g = _gen(6001)
    a, b = _keep((4096,), 0.9, g), _keep((4096,), 0.9, g)
    rows = _keep((16, 512), 0.9, g)
    x = _signed_log_uniform((4096,), g)
    cases = {
        "cross": lambda d: independence.cross_correlation_test(a.to(d), b.to(d), 0.9),
        "periodogram": lambda d: independence.periodogram_test(a.to(d), 0.9),
        "lag": lambda d: independence.lag_test(a.to(d), [1, 64], 0.9),
        "markov": lambda d: independence.markov_test(a.to(d)),
        "consecutive": lambda d: independence.consecutive_calls_test(a.to(d), b.to(d)),
        "rows": lambda d: independence.row_correlation_test(rows.to(d), 0.9),
        "input": lambda d: independence.input_dependence_test(x.to(d), a.to(d)),
        "position": lambda d: independence.position_count_test(rows.sum(dim=0).to(d), 16, 0.9),
    }
    for name, run in cases.items():
        cpu, cuda = run("cpu"), run("cuda")
        assert cuda.pvalue == pytest.approx(cpu.pvalue, rel=1e-6, abs=1e-12), name
        assert cuda.statistic == pytest.approx(cpu.statistic, rel=1e-6, abs=1e-9), name
