"""Every property catches the broken implementation aimed at it (tests/broken_impls.py)."""
import pytest

from dropcheck.runner import run_check
from dropcheck.verdict import Status
from tests.broken_impls import BROKEN

CASES = [(pid, impl, contract) for pid, impls in BROKEN.items() for impl, contract in impls]


@pytest.mark.parametrize("property_id,impl,contract", CASES, ids=[f"{pid}-{i.__name__}" for pid, i, _ in CASES])
def test_property_catches_its_broken_implementation(property_id, impl, contract):
    result = run_check(impl, contract=contract, profile="default", only=[property_id], ps=[0.1, 0.9])
    statuses = [v.status for v in result.verdicts if v.property_id == property_id]
    assert Status.FAIL in statuses, (
        f"{property_id} should fail {impl.__name__} under contract {contract}, but got "
        f"{[s.value for s in statuses]}:\n{result.summary()}"
    )
