"""CUDA paths: run on the GPU when there is one; otherwise say so, never crash."""
import warnings

import pytest
import torch

from dropcheck.cli import main
from dropcheck.runner import run_check
from dropcheck.verdict import Status
from reference_impls import CATALOGUE
from tests.conftest import requires_cuda


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the skip path cannot be shown")
def test_cuda_without_a_gpu_skips_every_property_with_the_reason(capsys):
    assert main(["check", "torch.nn:Dropout", "--device", "cuda", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert "SKIP" in out and "CUDA not available" in out, out
    result = run_check("torch.nn:Dropout", device="all", profile="quick", only=["EVAL-IDENTITY"])
    by_device = {v.device: v.status for v in result.verdicts}
    assert by_device == {"cpu": Status.PASS, "cuda": Status.SKIP}, by_device


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("target,contract", CATALOGUE, ids=[t.split(":")[1] for t, _ in CATALOGUE])
def test_reference_passes_on_cuda(target, contract):
    result = run_check(target, contract=contract, device="cuda", profile="quick")
    assert result.ok, result.summary()


@pytest.mark.cuda
@requires_cuda
def test_broken_batch_shared_mask_fails_on_cuda():
    result = run_check("tests.broken_impls:batch_shared_mask", device="cuda", only=["INDEP-ROWS"], ps=[0.1])
    assert not result.ok, result.summary()


def _host_syncs(property_id: str, profile: str) -> int:
    """How often one statistical property on CUDA made the device wait for the host (torch's sync
    debug mode warns at each synchronising call; the check runs in this process on CUDA)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = run_check("torch.nn:Dropout", device="cuda", profile=profile, only=[property_id], ps=[0.3])
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert result.ok, result.summary()
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("property_id", ["EXPECTATION", "INDEP-CALLS", "RATE-HOMOGENEITY"])
def test_samples_stay_on_the_device_whatever_their_number_of_calls(property_id):
    # quick makes 32 calls (8 for RATE-HOMOGENEITY), default 64 (16): a per-call read-back would add
    # at least that many synchronisations; the analyses at the end make the same few either way.
    quick, default = _host_syncs(property_id, "quick"), _host_syncs(property_id, "default")
    assert default - quick < 4, (
        f"{property_id} on CUDA: {quick} host synchronisations at quick, {default} at default; expected "
        "the same few (none per call)")
