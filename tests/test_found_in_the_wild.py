"""Bugs dropcheck found in real implementations, kept as regression tests of dropcheck itself."""
import torch

from dropcheck.runner import run_check
from dropcheck.verdict import Status


def test_raw_native_dropout_breaks_autograd_on_empty_inputs():
    # torch 2.13: torch.native_dropout(x, p, True) on an empty leaf returns x itself with a grad_fn
    # attached, so backward raises "leaf variable has been moved into the graph interior".
    result = run_check("reference_impls.torch_builtins:raw_native_dropout", only=["GRAD-MASK"], profile="quick")
    (verdict,) = result.verdicts
    assert verdict.status in (Status.ERROR, Status.FAIL), f"expected GRAD-MASK to catch it, got {verdict.status}: {verdict.summary}"
    assert "shape=(0" in verdict.summary, f"expected the shrunk case to be an empty tensor: {verdict.summary}"
    x = torch.ones(0, requires_grad=True)
    assert torch.native_dropout(x, 0.5, True)[0] is x, "torch no longer aliases: drop the workaround in reference_impls"
