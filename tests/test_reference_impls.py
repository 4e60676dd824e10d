"""Every reference implementation passes every property of its contract, in both TARGET forms."""
import pytest

from dropcheck.runner import run_check
from reference_impls import CATALOGUE


@pytest.mark.parametrize("target,contract", CATALOGUE, ids=[t.split(":")[1] for t, _ in CATALOGUE])
def test_reference_passes_every_property(target, contract):
    result = run_check(target, contract=contract, profile="quick")
    assert result.ok, result.summary()
    ran = {v.property_id for v in result.verdicts if v.status.value == "pass"}
    assert "DROP-RATE" in ran and "EVAL-IDENTITY" in ran, f"expected the core properties to run, ran {sorted(ran)}"


def test_inverted_reference_passes_the_default_profile():
    result = run_check("reference_impls.inverted:InvertedDropout", profile="default")
    assert result.ok, result.summary()
