"""Statistical properties: distributional claims checked with planned scipy tests.

Each property draws its own sample (seeded from the run seed, the property, p and the device),
runs the tests listed for it in `ledger.TESTS_BY_PROPERTY`, each at its alpha share, and reports
every p-value with the minimum detectable effect (MDE) its sample achieved. A property fails when
any of its tests rejects. Which bug class each test aims at is in shared/STATISTICS.md.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import norm

from dropcheck import independence, power, stats
from dropcheck.context import CheckContext, PropertyViolation
from dropcheck.contracts import Contract
from dropcheck.ledger import POWER, Ledger, Profile
from dropcheck.sampling import (
    FRESH_INPUT_UNITS,
    MAX_CHUNK_UNITS,
    OutputCheck,
    chunked,
    kept_units,
    safe_high_magnitude,
    signed_uniform,
    unit_input_shape,
)
from dropcheck.seeding import derive_seed, seeded
from dropcheck.strategies import with_autograd
from dropcheck.verdict import StatTest, Status, Verdict

_WATCHED = 4096  # input values compared before and after a sample (Sampler.inputs_untouched)


class Sampler:
    """Everything one statistical property needs: the implementation at p, a seeded input
    generator, and its alpha shares."""

    def __init__(self, ctx: CheckContext, profile: Profile, ledger: Ledger, property_id: str, p: float):
        self.ctx, self.profile, self.ledger, self.property_id, self.p = ctx, profile, ledger, property_id, p
        self.q = 1.0 - p
        self.gen = torch.Generator().manual_seed(derive_seed(ctx.seed, property_id, p, ctx.device, "input"))
        self.dut = ctx.target.build(p, ctx.device)
        self.outputs = OutputCheck(ctx.device)  # every train output of the sample passes through it
        self.tests: list[StatTest] = []
        self._inputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # each input with its first values

    def alpha(self, test: str) -> float:
        return self.ledger.alpha(self.property_id, test, self.p, self.ctx.device)

    def planned(self, test: str) -> bool:
        """Whether the ledger planned `test` here (a test may need more drops than p gives)."""
        return self.ledger.planned(self.property_id, test, self.p, self.ctx.device)

    def input(self, units: int, rows: int = 1) -> torch.Tensor:
        high = safe_high_magnitude(self.ctx.contract.values, self.p, self.ctx.sample_dtype)
        x = signed_uniform(unit_input_shape(self.ctx, units, rows), self.ctx.device, self.gen,
                           self.ctx.sample_dtype, high, fresh=FRESH_INPUT_UNITS)
        self._inputs.append((x, x.flatten()[:_WATCHED].clone()))
        return x

    def inputs_untouched(self) -> bool:
        """Whether the sample's inputs still hold their values: an in-place implementation overwrites
        them, and its later calls then see its own outputs (zeros, at the end), which says nothing.
        The first few thousand values stand for the whole: such a write covers the whole input."""
        return all(torch.equal(x.flatten()[:_WATCHED], first) for x, first in self._inputs)

    def kept(self, x: torch.Tensor) -> torch.Tensor:
        return kept_units(self.ctx, self.dut, x, self.p, self.outputs)

    def record(self, name: str, outcome: stats.TestOutcome, n: int, mde: float | None, mde_unit: str) -> StatTest:
        t = StatTest(name, float(outcome.pvalue), self.alpha(name), int(n), float(outcome.statistic), mde, mde_unit,
                     dict(outcome.detail))
        self.tests.append(t)
        return t

    def chi2_mde(self, name: str, n: int, df: int) -> float:
        return power.chi2_mde_effect(n, df, self.alpha(name), POWER)


# ---- the properties ----------------------------------------------------------------------------------
def drop_rate(s: Sampler) -> str:
    alpha_seq, alpha_fix = s.alpha("sequential"), s.alpha("binomial")
    n_plan = power.rate_sample_size(s.p, s.profile.rate_delta, alpha_fix, POWER)
    seq = stats.RobbinsMixture(s.p, alpha=alpha_seq)
    x_big = s.input(min(n_plan, MAX_CHUNK_UNITS))
    # Every other chunk is called on an input that requires grad (a leaf sharing x_big's storage): a
    # rate that differs on the autograd path alone then shows, at half its size. An implementation
    # that cannot take such an input (in place, or through numpy) is GRAD-MASK's finding: its rate is
    # then judged on plain calls, with a note.
    inputs = [x_big, with_autograd(x_big, "requires_grad")]
    grad_failed = ""
    flat_dim = 0 if s.ctx.contract.unit == "sample" else 1
    drops = n = 0
    for k, size in enumerate(chunked(n_plan)):
        try:
            kept = s.kept(inputs[k % 2].narrow(flat_dim, 0, size))
        except Exception as e:
            if k % 2 == 0 or grad_failed:
                raise
            grad_failed = f"; calls on an input that requires grad raised {type(e).__name__} (see GRAD-MASK), so all were plain"
            inputs[1] = x_big
            kept = s.kept(x_big.narrow(flat_dim, 0, size))
        d = size - int(stats.count_true(kept))
        drops, n = drops + d, n + size
        seq.update(d, size)
        if seq.rejects(alpha_seq):
            log_m = seq.log_evidence()
            s.tests.append(StatTest("sequential", math.exp(-log_m), alpha_seq, n, log_m, None, None,
                                    {"stopped_after": n, "drops": drops}))
            when = "stopped early after" if n < n_plan else "rejected at the end of the sample, after"
            return (f"{when} {n} units: {drops} dropped (rate {drops / n:.4g}, p={s.p:g}); anytime-valid evidence "
                    f"e^{log_m:.1f} ≥ 1/alpha{grad_failed}")
    log_m = seq.log_evidence()
    s.tests.append(StatTest("sequential", min(1.0, math.exp(-log_m)), alpha_seq, n, log_m,
                            power.sequential_rate_mde(n, s.p, alpha_seq, POWER), "drop-rate bias", {"drops": drops}))
    s.record("binomial", stats.binom_test(drops, n, s.p), n, power.rate_mde(n, s.p, alpha_fix, POWER), "drop-rate bias")
    return f"rate {drops / n:.5f} over {n} units (p={s.p:g}){grad_failed}"


EDGE_UNITS = 64  # the edge regions: the first and last 1, 2, 4, ..., 64 units of a call
EDGE_MAX_UNITS = 2048  # sizes drawn from 1..this: any remainder modulo a vector width up to 2048


def edge_calls(profile: Profile) -> int:
    """RATE-EDGES' calls: 4 per call of INDEP-CALLS (128 / 256 / 512)."""
    return 4 * profile.calls


def rate_edges(s: Sampler) -> str:
    # A vectorised kernel handles the units past the last multiple of its width (or before the first
    # aligned one) in a loop of their own; a bug there changes the rate of a few units at the very
    # end or start of a call, and only when the size is not a multiple of the width, which the other
    # samples (powers of two) never show. So: many calls on fresh inputs of sizes drawn from 1..2048,
    # and the drop rate of the first and last 1, 2, 4, ..., 64 units, pooled over the calls. Each
    # region's drops are exactly binomial under H0, at any p (stats.edge_regions_test).
    calls, edge, dev = edge_calls(s.profile), EDGE_UNITS, s.ctx.device
    high = safe_high_magnitude(s.ctx.contract.values, s.p, s.ctx.sample_dtype)
    sizes = torch.randint(1, EDGE_MAX_UNITS + 1, (calls,), generator=s.gen)
    # Each call gets its own stretch of one buffer (so an in-place implementation spoils nothing), and
    # the masks are counted once, at the end: per call, only the call itself (a third of the cost).
    starts = sizes.cumsum(0) - sizes
    buffer = signed_uniform((int(sizes.sum()),), dev, s.gen, s.ctx.sample_dtype, high, fresh=FRESH_INPUT_UNITS)
    masks = [s.kept(buffer.narrow(0, start, units).view(unit_input_shape(s.ctx, units))).flatten()
             for start, units in zip(starts.tolist(), sizes.tolist())]
    kept_all = torch.cat(masks)
    distance = torch.arange(edge)
    present = distance < sizes.unsqueeze(1)  # (calls, distance): the call has a unit there
    at_start = (starts.unsqueeze(1) + distance).clamp_(max=kept_all.numel() - 1)
    at_end = (starts.unsqueeze(1) + sizes.unsqueeze(1) - 1 - distance).clamp_(min=0)
    present_dev = present.to(dev)
    kept_at = {end: (kept_all[index.to(dev)] & present_dev).sum(0) for end, index in (("first", at_start), ("last", at_end))}
    present = present.sum(0)  # calls reaching each distance
    t = stats.edge_regions_test(kept_at["first"], kept_at["last"], present, s.p)
    regions = t.detail["regions"]
    eight = int(present[:8].sum())  # the MDE of the regions a vector width of 8 leaves its tail in
    s.record("edges", t, 2 * int(present.sum()), power.rate_mde(eight, s.p, s.alpha("edges") / regions, POWER),
             "drop-rate bias of the first or last 8 units of a call")
    return (f"{calls} calls of 1..{EDGE_MAX_UNITS} units; the worst of {regions} edge regions: the {t.detail['region']} "
            f"unit(s), drop rate {t.statistic:.4g} over {t.df_or_n} units (p={s.p:g})")


def dtype_rounded_mean_factor(c: Contract, p: float, dtype: torch.dtype) -> float:
    """E[train]/x when survivors are x times the scale rounded to `dtype`, as torch's CPU kernels
    compute them (bfloat16 at p=0.1: 0.9·1.109375 = 0.9984, a 0.16% low mean). 1 when exact."""
    if c.values != "inverted":
        return 1.0
    q = 1.0 - p
    return q * float(torch.tensor(1.0 / q, dtype=dtype))


def expectation(s: Sampler) -> str:
    c, K = s.ctx.contract, s.profile.calls
    x = s.input(s.profile.call_units)
    expected = c.eval_expected(x, s.p)
    # Two admissible means: exact (x), and the one a dtype-rounded scale gives. The property fails
    # only if the mean matches neither (intersection-union test: each at the full alpha share, the
    # p-value is the larger of the two). In float32/64 the two coincide for all practical n.
    factor = dtype_rounded_mean_factor(c, s.p, x.dtype)
    rounded = abs(factor - 1.0) > 1e-6  # below that no sample here could tell the two apart
    candidates = {"exact": expected, "dtype-rounded": expected * factor} if rounded else {"exact": expected}
    # Σ_k y_k per position, in float32 (3.5x faster to add than float64; a float64 output is
    # rounded to float32 as it is added): each add rounds by at most half an ulp of the sum, so
    # after K ≤ 128 calls a position is off by a few ulps, at p = 0.01 about 4e-5 of its standard
    # deviation and less at larger p (tests/test_fast_paths.py compares both tests' statistics).
    total = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for _ in range(K):
        y = s.outputs(x, s.dut.train(x))
        total.add_(y)
    devs = {name: total.double() - K * mean for name, mean in candidates.items()}
    var = K * c.train_var(x, s.p)
    n = K * x.numel()
    # Deviations are signed by the expected value, so a scaling bias (survivors too large or too
    # small) adds up instead of cancelling between positive and negative inputs; under H0 the
    # signs are fixed and the statistic is still N(0, 1).
    sign = expected.sign()
    overall_by = {name: stats.expectation_test(float((d * sign).sum()), float(var.sum())) for name, d in devs.items()}
    best = max(overall_by, key=lambda name: overall_by[name].pvalue)
    overall = s.record("overall-z", overall_by[best], n, None, "")
    overall.detail.update({"closest_mean": best, "dtype": str(x.dtype).removeprefix("torch."),
                           "dtype_induced_bias": factor - 1.0})
    # MDE of the overall z: a relative bias b moves the mean by b·Σ|e|; detectable when it is
    # (z_{α/2} + z_power) standard deviations.
    z_sum = norm.isf(overall.alpha / 2) + norm.ppf(POWER)
    overall.mde = z_sum * math.sqrt(float(var.sum())) / float(expected.abs().sum() * K)
    overall.mde_unit = "relative bias of the mean"
    # Σz² over positions is only chi-square for large K·p·q; the exact 4th moment of a two-valued
    # sum fixes its variance (11% false alarms at 0.05 without it, p=0.02, 32 calls).
    kurtosis = stats.bernoulli_sum_kurtosis(s.p, K)
    per_by = {name: stats.expectation_per_position_test(d.flatten(), var.flatten(), kurtosis=kurtosis)
              for name, d in devs.items()}
    best_pos = max(per_by, key=lambda name: per_by[name].pvalue)
    s.record("per-position", per_by[best_pos], n, s.chi2_mde("per-position", x.numel(), x.numel()), "Cohen's w")
    note = f"; dtype-induced bias {factor - 1.0:+.3%} (information)" if rounded else ""
    return f"mean deviation z = {overall.statistic:+.2f} over {K} calls × {x.numel()} positions{note}"


def rate_homogeneity(s: Sampler, blocks: int = 64, rows: int = 8) -> str:
    # In rows, so that a rate that differs between the batch's rows (the first row handled apart)
    # differs between blocks: each row is blocks // rows of them.
    x = s.input(s.profile.call_units, rows=rows)
    calls = max(4, s.profile.calls // 4)
    counts = torch.zeros(x.numel(), dtype=counter_dtype(calls), device=x.device)
    for _ in range(calls):
        add_mask(counts, s.kept(x).flatten())
    counts = counts.to(torch.int64)
    kept_per_block = torch.stack([b.sum() for b in counts.chunk(blocks)])
    total_per_block = torch.tensor([b.numel() * calls for b in counts.chunk(blocks)], device=kept_per_block.device)
    n = int(total_per_block.sum())
    t = s.record("blocks", stats.homogeneity_test(kept_per_block, total_per_block), n,
                 s.chi2_mde("blocks", n, len(total_per_block) - 1), "Cohen's w")
    t.detail["keep_rate_grid"] = keep_rate_grid(counts, calls)  # for the reports' heat map
    return f"{len(total_per_block)} blocks × {calls} calls"


def counter_dtype(calls: int) -> torch.dtype:
    """The narrowest integer dtype that counts up to `calls` kept calls per unit: uint8 (adding a
    bool mask to it is 5x faster than to int32: 5 µs against 27 µs for 131072 units) for up to 255
    calls."""
    return torch.uint8 if calls <= 255 else torch.int32


def add_mask(counts: torch.Tensor, mask: torch.Tensor) -> None:
    """counts += mask, in place (a uint8 count adds the mask's bytes as they are)."""
    counts.add_(mask.view(torch.uint8) if counts.dtype == torch.uint8 else mask)


def keep_rate_grid(counts: torch.Tensor, calls: int, side: int = 32) -> list[list[float]]:
    """Per-position keep rates downsampled to at most side × side block means (row-major over the
    flattened units), rounded to 4 digits: small enough for a JSON report, fine enough to see a
    stripe or a tiled mask in a heat map."""
    side = max(1, min(side, math.isqrt(counts.numel())))
    per = counts.numel() // (side * side)
    means = counts[: per * side * side].double().view(side * side, per).mean(1) / calls
    return [[round(v, 4) for v in row] for row in means.view(side, side).tolist()]


def indep_positions(s: Sampler) -> str:
    rows = 8
    x = s.input(4 * s.profile.call_units, rows=rows)
    kept = s.kept(x)
    mask = kept.flatten()
    n = mask.numel()
    s.record("markov", independence.markov_test(mask), n, s.chi2_mde("markov", n, 1), "Cohen's w")
    note = ""
    if s.planned("periodogram"):
        s.record("periodogram", independence.periodogram_test(mask, s.q), n,
                 power.periodic_mde(n, s.p, s.alpha("periodogram"), POWER), "amplitude of a periodic keep-rate modulation")
    else:  # too few drops for its tail (TEST_MIN_EXPECTED_DROPS); the exact lag tests still run
        note = "; no periodogram at this p (it needs N ≫ 150/p)"
    # Short lags (clumps, vector widths), the row stride, and a quarter and half of the sample: a mask
    # tiled with a period of N/4 or N/2 repeats too few times for the periodogram to see.
    lags = sorted({lag for lag in (1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, kept.shape[-1], n // 4) if lag < n // 2}
                  | ({n // 2} if n % 2 == 0 else set()))
    s.record("stride-lags", independence.lag_test(mask, lags, s.q), n, power.correlation_mde(n, s.alpha("stride-lags") / len(lags), POWER), "correlation")
    return f"{n} units in one call; lags {lags[0]}..{lags[-1]}{note}"


def indep_rows(s: Sampler) -> str:
    rows = s.profile.rows
    x = s.input(s.profile.call_units, rows=rows)
    # Two calls: on x, and on the same values laid out column-major, since an implementation may take
    # another path for non-contiguous inputs. The pairs of rows within each call are tested together:
    # a mask shared by the rows of either call fails.
    strided = x.transpose(0, 1).contiguous().transpose(0, 1)
    first = s.kept(x)
    mask = torch.cat([first, s.kept(strided)])
    calls = [0] * first.shape[0] + [1] * (mask.shape[0] - first.shape[0])  # pairs within a call only
    F = mask.shape[1]
    s.record("row-correlation", independence.row_correlation_test(mask, s.q, groups=calls), mask.numel(),
             power.correlation_mde(F, s.alpha("row-correlation"), POWER), "correlation between two rows")
    return f"2 calls (one input contiguous, one column-major) × {rows} rows × {F} units"


def indep_calls(s: Sampler) -> str:
    K = s.profile.calls
    x = s.input(s.profile.call_units)
    # Streamed, one call at a time: per-position keep counts, per-call keep counts and the
    # kept-at-t-and-t+1 counts stay on the device, and only the first two masks are kept (for the
    # shift test). Memory is one mask, not K of them, and nothing reaches the host per call.
    counts = torch.zeros(x.numel(), dtype=counter_dtype(K), device=x.device)  # one element per unit
    first = second = prev = None
    kept_per_call, both_per_pair = [], []
    for k in range(K):
        mask = s.kept(x).flatten()
        add_mask(counts, mask)
        kept_per_call.append(stats.count_true(mask))
        if prev is not None:
            both_per_pair.append(stats.count_true(prev & mask))
        if k == 0:
            first = mask
        elif k == 1:
            second = mask
        prev = mask
    N = counts.numel()
    counts = counts.to(torch.int64)
    kept = torch.stack(kept_per_call).cpu().tolist()
    both = int(torch.stack(both_per_pair).sum())
    # All K-1 consecutive pairs pooled into one 2×2 table: kept at t (calls 0..K-2) × kept at t+1.
    s.record("consecutive", independence.consecutive_counts_test(both, sum(kept[:-1]), sum(kept[1:]), (K - 1) * N),
             (K - 1) * N, power.correlation_mde((K - 1) * N, s.alpha("consecutive"), POWER), "correlation")
    s.record("cross-correlation", independence.cross_correlation_test(first, second, s.q), N,
             power.correlation_mde(N, s.alpha("cross-correlation") / N, POWER), "correlation at one shift")
    drops = torch.tensor([N - k for k in kept])
    dispersion = independence.dispersion_test(drops, N, s.p)
    s.record("dispersion", dispersion, K, power.dispersion_mde(dispersion.detail["scaled_df"], s.alpha("dispersion"), POWER),
             "variance ratio of per-call drop counts, binomial = 1")
    s.record("position-counts", independence.position_count_test(counts, K, s.q), N * K,
             s.chi2_mde("position-counts", N, min(K, 20)), "Cohen's w")
    return f"{K} calls × {N} units"


def indep_input(s: Sampler, bins: int = 8) -> str:
    units = 4 * s.profile.call_units
    shape = unit_input_shape(s.ctx, units)
    # Values over six decades and both signs, so a drop decision depending on sign or size shows;
    # the top decade is capped where x/(1-p) would overflow the dtype (float16 at p near 1).
    top = min(3.0, math.log10(0.25 * torch.finfo(s.ctx.sample_dtype).max * s.q))
    # One uniform draw for both: v ~ U(-1, 1) gives the sign, |v| ~ U(0, 1) the decade. The bins
    # (sign × magnitude range, `bins` // 2 ranges of equal probability) follow from v by
    # construction: equally likely, fixed before the implementation sees x, no quantiles to estimate.
    v = torch.rand(shape, generator=s.gen).mul_(2.0).sub_(1.0)
    # 16-bit keys of v (65536 equally likely levels) give both the bins, `bins` runs of levels (so
    # ranges of v: ± × `bins` // 2 magnitude ranges), and the order of the values, by radix sort.
    keys = v.flatten().add(1.0).mul_(32768.0).to(torch.int32).clamp_(max=65535).numpy().astype(np.uint16)
    bin_id = torch.from_numpy(keys.astype(np.int64) * bins >> 16)
    mag = torch.pow(10.0, v.abs().mul_(top + 3.0).sub_(3.0))
    if s.ctx.contract.values == "alpha":
        # Keep clear of α' ≈ -1.758, where a kept a·x+b reads as the dropped a·α'+b.
        mag = torch.where((mag - 1.758).abs() < 0.3, mag * 0.5, mag)
    x = torch.copysign(mag, v).to(device=s.ctx.device, dtype=s.ctx.sample_dtype)
    kept = s.kept(x).flatten()
    n = kept.numel()
    s.record("input-bins", independence.binned_dependence_test(bin_id.to(kept.device), kept, bins), n,
             s.chi2_mde("input-bins", n, bins - 1), "Cohen's w")
    # A quarter of the mask in the order of its inputs' values (x rises with v): a rate that changes
    # with x in stripes too narrow for the bins makes neighbours alike, which the runs test sees. The
    # order depends on the inputs alone, so under H0 the reordered mask is as exchangeable as the
    # mask. (Ties, ~8 units a level, keep their positions' order, which puts no neighbours side by
    # side. A quarter, since the sort and the test cost 11 ms a p on the whole, 3 on a quarter.)
    m = n // 4
    order = torch.from_numpy(np.argsort(keys[:m], kind="stable"))
    s.record("value-runs", independence.markov_test(kept[:m][order.to(kept.device)]), m, s.chi2_mde("value-runs", m, 1),
             "Cohen's w")
    return (f"{n} units, inputs ±10^U(-3,{top:.3g}) in {bins} bins (sign × {bins // 2} equally likely magnitude ranges), "
            f"{m} of them also in the order of their values")


# The properties that draw their sample in one or two implementation calls: their cost is
# dropcheck's own analysis, so the runner puts them in the lane beside the implementation's many
# calls (dropcheck.lanes). tests/test_lanes.py counts the calls.
FEW_CALLS = frozenset({"INDEP-POSITIONS", "INDEP-ROWS", "INDEP-INPUT"})
# The properties that call the implementation once per input (RATE-EDGES: each call on its own
# stretch of a buffer), so an in-place implementation has no later call's input to spoil.
ONE_CALL_PER_INPUT = FEW_CALLS | {"RATE-EDGES"}
# The lane beside the implementation's many calls takes the few-call properties and RATE-EDGES,
# whose calls are on at most 2048 units (half its time is dropcheck's own). Measured on 2 cores
# (30 runs of the bench's lanes child each way, alternating with the code before RATE-EDGES):
# `default` overhead median 25.0% against 23.9% with it in this lane, 26.1% against 23.8% in the other.
SECOND_LANE = FEW_CALLS | {"RATE-EDGES"}

STATISTICAL_CHECKS: dict[str, Callable[[Sampler], str]] = {
    "DROP-RATE": drop_rate,
    "EXPECTATION": expectation,
    "RATE-HOMOGENEITY": rate_homogeneity,
    "INDEP-POSITIONS": indep_positions,
    "INDEP-ROWS": indep_rows,
    "INDEP-CALLS": indep_calls,
    "INDEP-INPUT": indep_input,
    "RATE-EDGES": rate_edges,
}


# Units in one call of each property's sample (in one input bin, for INDEP-INPUT). DROP-RATE is not
# here: its binomial and sequential tests are exact at any p.
CALL_UNITS: dict[str, Callable[[Profile], int]] = {
    "EXPECTATION": lambda prof: prof.call_units,
    "RATE-HOMOGENEITY": lambda prof: prof.call_units,
    "INDEP-POSITIONS": lambda prof: 4 * prof.call_units,
    "INDEP-ROWS": lambda prof: prof.call_units,
    "INDEP-CALLS": lambda prof: prof.call_units,
    "INDEP-INPUT": lambda prof: 4 * prof.call_units // 8,  # one of its 8 input bins: the G-test's cells
}
# Expected drops (and keeps) per call below which a property's tests are not valid in the far tail
# their alphas reach (~1e-8). At p = 1e-6 most calls drop nothing: the dispersion test took that for
# an exact-count sampler, and EXPECTATION's z reached 1e143 at p = 1e-300 from float rounding. 100 is
# where the calibration tests (tests/test_stats_calibration.py) start. (The battery's rare-drop tests,
# runs, hypergeometric and max-pair, are exact at any p; the floor is for the others.)
MIN_EXPECTED_DROPS = 100.0
# Single tests that need more: the periodogram needs N >> 150/p (independence.periodogram_test).
# Below their floor the property is judged without them.
TEST_MIN_EXPECTED_DROPS: dict[tuple[str, str], float] = {("INDEP-POSITIONS", "periodogram"): 1500.0}


def supported_ps(property_id: str, profile: Profile, test: str | None = None) -> tuple[float, float]:
    """The p range over which `property_id`'s tests (or its one `test`) are valid with `profile`'s
    sample; all of (0, 1) for DROP-RATE.

    >>> from dropcheck.ledger import get_profile
    >>> lo, hi = supported_ps("INDEP-CALLS", get_profile("default")); round(lo, 6), round(hi, 6)
    (0.000763, 0.999237)
    >>> round(supported_ps("INDEP-POSITIONS", get_profile("default"), "periodogram")[0], 5)
    0.00286
    """
    if property_id not in CALL_UNITS:
        return 0.0, 1.0
    need = TEST_MIN_EXPECTED_DROPS.get((property_id, test), MIN_EXPECTED_DROPS) if test else MIN_EXPECTED_DROPS
    low = need / CALL_UNITS[property_id](profile)
    return low, 1.0 - low


def judges(property_id: str, p: float, profile: Profile, test: str | None = None) -> bool:
    """Whether `property_id` (or its one `test`) is judged at `p` with `profile`'s sample (see
    supported_ps)."""
    low, high = supported_ps(property_id, profile, test)
    return low <= p <= high


def run_statistical(ctx: CheckContext, profile: Profile, ledger: Ledger, property_id: str, p: float) -> Verdict:
    """Run one statistical property at one p and return its verdict with every test's evidence."""
    start = time.perf_counter()
    dtype = str(ctx.sample_dtype).removeprefix("torch.")
    common = {"device": ctx.device, "p": p, "seed": ctx.seed, "replay": ctx.replay(property_id, p),
                  "dtype": None if dtype == "float32" else dtype}
    if p in (0.0, 1.0):
        return Verdict(property_id, Status.SKIP, f"p={p:g} is deterministic: see P-ZERO / P-ONE", **common)
    if not judges(property_id, p, profile):
        low, high = supported_ps(property_id, profile)
        units = CALL_UNITS[property_id](profile)
        return Verdict(property_id, Status.INCONCLUSIVE,
                       f"not judged: its tests need {units * low:.0f} expected drops and keeps in each group of "
                       f"{units} units ({'an input bin' if property_id == 'INDEP-INPUT' else 'a call'}), so profile "
                       f"{profile.name} judges p in [{low:.3g}, {high:.3g}]; p={p:g} expects "
                       f"{units * min(p, 1 - p):.2g} (a larger profile widens the range)", **common)
    try:
        with seeded(derive_seed(ctx.seed, property_id, p, ctx.device)):
            sampler = Sampler(ctx, profile, ledger, property_id, p)
            try:
                described = STATISTICAL_CHECKS[property_id](sampler)
            except Exception:
                sampler.outputs.verify()  # a NaN/Inf output, if any, is what broke the statistics
                raise
            sampler.outputs.verify()
    except PropertyViolation as e:
        return Verdict(property_id, Status.FAIL, str(e), duration_s=time.perf_counter() - start, **common)
    except Exception as e:
        return Verdict(property_id, Status.ERROR, f"implementation raised {type(e).__name__}: {e}",
                       duration_s=time.perf_counter() - start, **common)
    if property_id not in ONE_CALL_PER_INPUT and not sampler.inputs_untouched():
        return Verdict(property_id, Status.INCONCLUSIVE,
                       f"{described}; but the implementation changed its input in place during the sample, so it "
                       "says nothing (see INPUT-UNTOUCHED)", duration_s=time.perf_counter() - start, **common)
    tests = sampler.tests
    rejected = [t for t in tests if t.rejected]
    shown = rejected[0] if rejected else min(tests, key=lambda t: t.pvalue / t.alpha)
    evidence = f"{shown.name} p-value {shown.pvalue:.3g} {'≤' if shown.rejected else '>'} alpha {shown.alpha:.2g}"
    if shown.mde is not None and not rejected:
        evidence += f", MDE {shown.mde:.2g} ({shown.mde_unit})"
    status = Status.FAIL if rejected else Status.PASS
    return Verdict(property_id, status, f"{described}; {evidence}", tests=tests,
                   duration_s=time.perf_counter() - start, **common)
