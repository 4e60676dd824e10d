"""dtype awareness: low-precision dropouts are judged against the scale rounded to their dtype."""
import pytest
import torch

from dropcheck.contracts import get_contract
from dropcheck.runner import run_check
from dropcheck.statistical import dtype_rounded_mean_factor
from dropcheck.verdict import Status


def test_bfloat16_scale_rounding_is_the_documented_0_16_percent():
    # torch rounds 1/0.9 to bfloat16: 1.109375 (shared/STATISTICS.md), so the mean is 0.16% low.
    factor = dtype_rounded_mean_factor(get_contract("inverted"), 0.1, torch.bfloat16)
    assert factor == pytest.approx(0.9 * 1.109375), f"factor={factor}, expected 0.9·1.109375"
    assert float(torch.nn.functional.dropout(torch.ones(64, dtype=torch.bfloat16), 0.1).max()) == 1.109375


def test_torch_bfloat16_dropout_passes_expectation_with_the_bias_reported():
    result = run_check("torch.nn:Dropout", profile="default", ps=[0.1], only=["EXPECTATION"], dtype="bfloat16")
    (verdict,) = result.verdicts
    assert verdict.status == Status.PASS, verdict.summary
    overall = next(t for t in verdict.tests if t.name == "overall-z")
    assert overall.detail["dtype_induced_bias"] == pytest.approx(0.9 * 1.109375 - 1), overall.detail
    assert "dtype-induced bias -0.156%" in verdict.summary, verdict.summary


def _biased_mean(x, p, training):
    """Survivors scaled by 1.01/(1-p): a 1% biased mean that no dtype rounding explains."""
    if not training:
        return x
    keep = torch.rand(x.shape) >= p
    return x * keep.to(x.dtype) * torch.tensor(1.01 / (1 - p), dtype=x.dtype)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_a_biased_mean_still_fails_in_low_precision(dtype):
    result = run_check(_biased_mean, profile="default", ps=[0.1], only=["EXPECTATION"], dtype=dtype)
    (verdict,) = result.verdicts
    assert verdict.status == Status.FAIL, f"a 1% biased mean should fail EXPECTATION in {dtype}: {verdict.summary}"
