"""The shortcuts taken for speed (issue 3's overhead budget) give the answers the slow way gives.

Each fast path here replaced a slower, obviously-correct one; each test compares the two, or
checks the property the shortcut must keep, on the inputs where they could differ.
"""
from __future__ import annotations

import json
import math
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import special
from scipy.stats import norm

from dropcheck import allocator, guard, independence, power, statistical, stats
from dropcheck.context import PropertyViolation
from dropcheck.sampling import OutputCheck, _all_finite, checked_train_output, signed_from_uniform, signed_uniform

EXACT_ONLY = ["--only", "EVAL-IDENTITY,SUPPORT-SCALE", "--profile", "quick"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["plain", "nan", "inf", "-inf", "inf and -inf", "overflowing sum", "empty"])
def test_all_finite_agrees_with_isfinite_all(dtype: torch.dtype, case: str) -> None:
    fi = torch.finfo(dtype)
    y = torch.linspace(-2, 2, 1001, dtype=torch.float64).to(dtype)
    if case == "nan":
        y[500] = math.nan
    elif case == "inf":
        y[3] = math.inf
    elif case == "-inf":
        y[-1] = -math.inf
    elif case == "inf and -inf":  # their sum is NaN, not inf: still caught
        y[1], y[2] = math.inf, -math.inf
    elif case == "overflowing sum":  # every element finite, the sum is not: the exact look decides
        y = torch.full((64,), fi.max, dtype=dtype)
    elif case == "empty":
        y = y[:0]
    expected = bool(torch.isfinite(y).all())
    assert _all_finite(y) == expected, f"{case} in {dtype}: expected all-finite = {expected}"


def test_all_finite_accepts_integer_outputs() -> None:
    assert _all_finite(torch.arange(10))


def test_a_nan_output_is_still_a_violation_with_its_position() -> None:
    x = torch.ones(4, 5)
    y = x.clone()
    y[2, 3] = math.nan
    with pytest.raises(PropertyViolation, match=r"1 NaN/Inf element\(s\) for a finite input; first at \(2, 3\)"):
        checked_train_output(x, y)


def test_deferred_output_check_counts_what_the_immediate_one_rejects() -> None:
    """The device path (count NaN/Inf on the device, read once) rejects exactly the samples the
    CPU path (check every output at once) rejects, and lets integer outputs through."""
    x = torch.ones(4, 5)
    clean, dirty = x.clone(), x.clone()
    dirty[1, 2], dirty[3, 4] = math.nan, -math.inf
    deferred = OutputCheck("cpu")
    deferred.deferred = True
    for y in (clean, clean, torch.arange(20).reshape(4, 5)):
        assert deferred(x, y) is y
    deferred.verify()  # nothing to report
    deferred(x, dirty)
    deferred(x, dirty)
    with pytest.raises(PropertyViolation, match=r"4 NaN/Inf element\(s\) for a finite input, over 5 calls"):
        deferred.verify()
    immediate = OutputCheck("cpu")
    assert not immediate.deferred and immediate(x, clean) is clean
    with pytest.raises(PropertyViolation, match=r"2 NaN/Inf element\(s\) for a finite input; first at \(1, 2\)"):
        immediate(x, dirty)


@pytest.mark.parametrize("high", [2.0, 1.5, 1.0])
@pytest.mark.parametrize("fresh", [None, 1000])
def test_signed_uniform_is_never_zero_and_within_its_range(high: float, fresh: int | None) -> None:
    x = signed_uniform((7, 3001), "cpu", torch.Generator().manual_seed(1), high=high, fresh=fresh)
    mag = x.abs()
    assert x.shape == (7, 3001)
    assert bool((mag >= 1.0).all() and (mag <= high).all()), f"|x| outside [1, {high}]: {mag.min()}..{mag.max()}"
    negative = float((x < 0).double().mean())
    assert 0.4 < negative < 0.6, f"share of negative inputs {negative}, expected about 1/2"


def test_signed_uniform_maps_a_zero_draw_to_a_nonzero_input() -> None:
    # The one value the shortcut could get wrong: v = ±0.0 must not give x = 0 ("dropped").
    for high in (2.0, 1.5):
        x = signed_from_uniform(torch.tensor([0.0, -0.0, 1.0, -1.0]), high)
        assert x.tolist() == [1.0, -1.0, high, -high], f"high={high}: {x.tolist()}"


def test_signed_uniform_with_fresh_repeats_a_block_of_fresh_values() -> None:
    x = signed_uniform((4, 250), "cpu", torch.Generator().manual_seed(2), fresh=300).flatten()
    assert torch.equal(x[:300], x[300:600]) and torch.equal(x[:100], x[900:])
    assert x[:300].unique().numel() == 300, "the fresh block must hold distinct draws"


def test_reading_the_mask_with_bool_counts_negative_zero_as_dropped() -> None:
    y = torch.tensor([0.0, -0.0, 1e-30, -2.0, 3.0])
    assert torch.equal(y.bool(), y != 0)


def test_pooled_consecutive_counts_equal_the_test_on_stacked_masks() -> None:
    gen = torch.Generator().manual_seed(3)
    masks = torch.rand(6, 5000, generator=gen) < 0.7
    stacked = independence.consecutive_calls_test(masks[:-1].flatten(), masks[1:].flatten())
    kept = masks.sum(dim=1).tolist()
    both = int((masks[:-1] & masks[1:]).sum())
    streamed = independence.consecutive_counts_test(both, sum(kept[:-1]), sum(kept[1:]), 5 * 5000)
    assert streamed.pvalue == stacked.pvalue and streamed.statistic == stacked.statistic


def test_binned_dependence_test_rejects_sign_dependent_drops_and_accepts_independent_ones() -> None:
    gen = torch.Generator().manual_seed(4)
    n = 1 << 16
    v = torch.rand(n, generator=gen) * 2 - 1
    bins = (v.abs() * 4).long().clamp(max=3) * 2 + (v < 0)
    fair = torch.rand(n, generator=gen) >= 0.5
    biased = torch.rand(n, generator=gen) >= torch.where(v < 0, 0.53, 0.5)
    assert independence.binned_dependence_test(bins, fair, 8).pvalue > 1e-8
    assert independence.binned_dependence_test(bins, biased, 8).pvalue < 1e-8


def test_input_dependence_test_still_reports_its_quantile_edges() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4096, generator=gen)
    out = independence.input_dependence_test(x, torch.rand(4096, generator=gen) < 0.5)
    assert len(out.detail["bin_edges"]) == 7 and len(out.detail["keep_rate_by_bin"]) == 8


@pytest.mark.parametrize("terms", [
    [0.0], [1.0, 2.0, 3.0], [-1e300, 5.0], [700.0, 710.0, 720.0], [-math.inf, -math.inf],
    [-math.inf, 2.0], [math.inf, 1.0], [-745.0, -746.0, -800.0],
])
def test_log_mean_exp_matches_scipy_logsumexp(terms: list[float]) -> None:
    t = np.asarray(terms)
    with np.errstate(divide="ignore"):
        want = special.logsumexp(t) - math.log(t.size)
    got = float(stats.log_mean_exp(t))
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12) or (math.isinf(want) and got == want), f"{terms}"


def test_log_mean_exp_works_row_by_row() -> None:
    t = np.array([[0.0, 1.0], [5.0, -math.inf]])
    assert np.allclose(stats.log_mean_exp(t), special.logsumexp(t, axis=-1) - math.log(2))


@pytest.mark.parametrize("n", [7, 8, 1 << 12])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_cpu_fft_matches_torchs(n: int, dtype: torch.dtype) -> None:
    """stats.rfft/irfft hand CPU tensors to scipy.fft (3x faster): same transform as torch.fft."""
    x = torch.rand(n, generator=torch.Generator().manual_seed(n), dtype=dtype)
    X = stats.rfft(x)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert X.dtype == torch.fft.rfft(x).dtype and torch.allclose(X, torch.fft.rfft(x), atol=tol * n)
    assert torch.allclose(stats.irfft(X, n), torch.fft.irfft(X, n=n), atol=tol)
    # As the cross-correlation calls it: a product with a lazily conjugated factor.
    product = torch.conj(X) * X.flip(0)
    assert torch.allclose(stats.irfft(product, n), torch.fft.irfft(product, n=n), atol=tol * n)
    assert torch.allclose(stats.irfft(torch.conj(X), n), torch.fft.irfft(torch.conj(X), n=n), atol=tol * n)
    # A non-contiguous input (a strided view) is transformed as its values, not its storage.
    y = torch.rand(2 * n, dtype=dtype)[::2]
    assert torch.allclose(stats.rfft(y), torch.fft.rfft(y), atol=tol * n)


def test_the_fft_of_a_tensor_off_the_cpu_stays_with_torch() -> None:
    """Only CPU tensors go through numpy: a CUDA sample must never leave its device. The meta
    device stands in for CUDA here (numpy cannot take it, torch.fft can)."""
    x = torch.empty(16, device="meta")
    assert stats.rfft(x).device.type == "meta"
    assert stats.irfft(torch.empty(9, dtype=torch.complex64, device="meta"), 16).device.type == "meta"


def test_the_normal_quantile_shortcut_matches_scipy_stats() -> None:
    for tail in (1e-300, 1e-15, 5e-10, 1e-3, 0.2, 0.5, 0.999, 1 - 1e-12):
        assert power._z(tail) == pytest.approx(float(norm.isf(tail)), rel=1e-12, abs=1e-15)


def _mmapped_blocks_for_an_8_mib_malloc() -> int:
    """In the calling process: how many mmapped blocks one 8 MiB malloc adds (glibc's mallinfo2)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    before = libc.mallinfo2().hblks
    block = libc.malloc(8 << 20)
    after = libc.mallinfo2().hblks
    libc.free(block)
    return after - before


def test_only_the_forked_worker_keeps_freed_memory() -> None:
    """The allocator setting takes effect in dropcheck's own disposable worker (an 8 MiB block comes
    from the heap, not from a fresh mmap), and never in the caller's process."""
    if guard.choose_mechanism("cpu") != "fork" or platform.libc_ver()[0] != "glibc":
        pytest.skip("needs glibc and the forked worker (Linux, CUDA not initialised): nothing is applied elsewhere")
    outcome = guard.run_limited(lambda: (allocator.applied, _mmapped_blocks_for_an_8_mib_malloc()), timeout=30)
    assert outcome.status == "ok" and outcome.value == (True, 0), outcome
    assert allocator.applied is False, "keep_freed_memory() leaked into the calling process"


@pytest.mark.parametrize("make", [
    lambda g: torch.rand(1000, generator=g) < 0.3,
    lambda g: (torch.rand(40, 50, generator=g) < 0.7).t(),  # a non-contiguous view
    lambda g: (torch.rand(64, generator=g) < 0.5)[::3],  # a strided one
    lambda g: torch.ones(17, dtype=torch.bool),
    lambda g: torch.zeros(0, dtype=torch.bool),
])
def test_count_true_counts_what_count_nonzero_counts(make) -> None:
    mask = make(torch.Generator().manual_seed(3))
    assert int(stats.count_true(mask)) == int(torch.count_nonzero(mask))


def test_the_lag_counts_from_slices_equal_the_circular_shift_counts() -> None:
    """lag_test counts pairs (i, i+L mod N) from two slices instead of a rolled copy."""
    mask = torch.rand(997, generator=torch.Generator().manual_seed(4)) < 0.8
    dropped = ~mask
    for lag in (1, 2, 5, 64, 498, 996):
        expected = int(torch.count_nonzero(dropped & torch.roll(dropped, -lag)))
        got = independence.lag_test(mask, [lag], 0.8).detail["coincident_drops"]
        assert got == expected, (lag, got, expected)


@pytest.mark.parametrize("seed, rate", [(5, 0.8), (6, 0.5), (7, 0.02), (8, 0.98)])
def test_the_lag_test_p_value_is_the_smallest_over_every_lag(seed: int, rate: float) -> None:
    """lag_test asks scipy only about the largest and the smallest count; the answer must be the
    one that asking about every lag gives."""
    mask = torch.rand(4001, generator=torch.Generator().manual_seed(seed)) < rate
    lags = [1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    dropped, N = ~mask, mask.numel()
    D = int(torch.count_nonzero(dropped))
    every = min(stats._hyper_two_sided(int(torch.count_nonzero(dropped & torch.roll(dropped, -L))), N, D, D)
                for L in lags)
    got = independence.lag_test(mask, lags, rate)
    assert got.detail["p_single"] == every
    assert got.pvalue == min(1.0, len(lags) * every)


def test_float32_periodogram_matches_float64() -> None:
    gen = torch.Generator().manual_seed(6)
    mask = torch.rand(1 << 17, generator=gen) < 0.9
    fast = independence.periodogram_test(mask, 0.9)
    x = mask.double()
    I = torch.fft.rfft(x - x.mean()).abs().square() / (x.numel() * x.mean() * (1 - x.mean()))
    assert fast.statistic == pytest.approx(float(I[1:].max()), rel=1e-4)


@pytest.mark.parametrize("target, code", [("torch.nn:Dropout", 0), ("tests.broken_impls:no_scaling", 1)])
def test_the_fast_exit_keeps_exit_code_output_and_report(tmp_path, target: str, code: int) -> None:
    """`dropcheck` ends with os._exit (no interpreter teardown): nothing may be lost by it."""
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "dropcheck", "check", target, *EXACT_ONLY, "--json", str(report)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == code, proc.stdout + proc.stderr
    # The last line printed, after the summary, must have reached the pipe before the exit.
    assert proc.stdout.rstrip().splitlines()[-1] == f"wrote {report}", proc.stdout[-500:]
    assert len(json.loads(report.read_text())["verdicts"]) == 2


def test_uint8_counters_count_what_int32_counters_count() -> None:
    g = torch.Generator().manual_seed(5)
    masks = [torch.rand(1000, generator=g) < 0.8 for _ in range(255)]
    narrow = torch.zeros(1000, dtype=statistical.counter_dtype(255))
    wide = torch.zeros(1000, dtype=torch.int32)
    for m in masks:
        m[0] = True  # one unit kept on every call: the top of uint8's range
        statistical.add_mask(narrow, m)
        wide.add_(m)
    assert narrow.dtype == torch.uint8 and statistical.counter_dtype(256) == torch.int32, "uint8 only while it cannot wrap"
    assert torch.equal(narrow.to(torch.int32), wide) and int(wide[0]) == 255, "the counts, up to 255 calls"


@pytest.mark.parametrize("p", [0.01, 0.1, 0.9, 0.99])
def test_a_float32_sum_of_the_outputs_gives_the_float64_statistics(p: float) -> None:
    """EXPECTATION adds K outputs per position in float32 (statistical.expectation): at the largest
    K a profile uses (128), both of its tests see what a float64 sum gives, at a small p (where
    the rounding is largest against a position's standard deviation) and at a large scale."""
    g = torch.Generator().manual_seed(6)
    x = signed_uniform((1 << 16,), "cpu", g)
    K, q = 128, 1.0 - p
    total32, total64 = torch.zeros_like(x), torch.zeros_like(x, dtype=torch.float64)
    for _ in range(K):
        y = x * (torch.rand(x.shape, generator=g) >= p).to(x.dtype) * torch.tensor(1.0 / q)
        total32.add_(y)
        total64.add_(y)
    var = K * x.double() ** 2 * p / q
    d32, d64 = total32.double() - K * x.double(), total64 - K * x.double()
    sign = x.sign().double()
    z32 = stats.expectation_test(float((d32 * sign).sum()), float(var.sum())).statistic
    z64 = stats.expectation_test(float((d64 * sign).sum()), float(var.sum())).statistic
    kurt = stats.bernoulli_sum_kurtosis(p, K)
    c32 = stats.expectation_per_position_test(d32, var, kurtosis=kurt).statistic
    c64 = stats.expectation_per_position_test(d64, var, kurtosis=kurt).statistic
    assert abs(z32 - z64) < 1e-4, (z32, z64)
    assert abs(c32 - c64) <= 1e-6 * abs(c64), (c32, c64)


def test_per_position_test_without_indexing_matches_the_indexed_way() -> None:
    """With every variance positive the test skips boolean indexing; with one zero variance it
    indexes. Both must give what the plain formula gives, for a scalar and a per-position kurtosis,
    and sizes that do not match must raise rather than broadcast."""
    g = torch.Generator().manual_seed(7)
    dev, var = torch.randn(1000, generator=g, dtype=torch.float64), torch.rand(1000, generator=g, dtype=torch.float64) + 0.5
    kurt = torch.rand(1000, generator=g, dtype=torch.float64)
    for zero_at in (None, 17):
        v = var.clone()
        if zero_at is not None:
            v[zero_at] = 0.0
        ok = v > 0
        want = float((dev[ok] ** 2 / v[ok]).sum())
        for k in (None, 0.3, kurt):
            got = stats.expectation_per_position_test(dev, v, kurtosis=k)
            assert got.df_or_n == int(ok.sum()) and abs(got.statistic - want) <= 1e-12 * want, (zero_at, k, got, want)
    for bad_k in (torch.ones(999), None):
        with pytest.raises(ValueError, match="one value per position"):
            stats.expectation_per_position_test(dev, var[:999] if bad_k is None else var, kurtosis=bad_k)


def test_the_runs_pmf_from_shared_log_gammas_equals_the_direct_formula() -> None:
    """_runs_log_pmf computes six log-gamma arrays over the distinct k = R // 2, not twelve over R."""

    def direct(n1, n2, R):
        def log_c(n, k):
            with np.errstate(invalid="ignore"):
                out = special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
            return np.where((k >= 0) & (k <= n), out, -np.inf)
        k = R // 2
        even = np.log(2.0) + log_c(n1 - 1, k - 1) + log_c(n2 - 1, k - 1)
        odd = np.logaddexp(log_c(n1 - 1, k) + log_c(n2 - 1, k - 1), log_c(n1 - 1, k - 1) + log_c(n2 - 1, k))
        total = special.gammaln(n1 + n2 + 1) - special.gammaln(n1 + 1) - special.gammaln(n2 + 1)
        return np.where(R % 2 == 0, even, odd) - total

    for n1, n2 in [(1, 1), (1, 5), (2, 3), (100, 3), (1000, 1000), (524000, 288)]:
        for R in (np.arange(1, 2 * min(n1, n2) + 3), np.arange(2, 2 * min(n1, n2) + 1), np.array([3])):
            want, got = direct(n1, n2, R), independence._runs_log_pmf(n1, n2, R)
            finite = np.isfinite(want)
            assert (finite == np.isfinite(got)).all(), (n1, n2, R[finite != np.isfinite(got)])
            assert np.allclose(got[finite], want[finite], rtol=1e-12, atol=1e-9), (n1, n2)
