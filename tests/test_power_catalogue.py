"""Power: subtly broken implementations fail the default profile for every seed tried.

`--only ID` replays the full run's verdict exactly (same seed, same sample, same alpha share, see
runner.run_check), so running just the property aimed at a bug is the full run's verdict on it.
The seeds are 1..N in order, fixed before the test was first run: never picked to pass.
"""
import pytest

from dropcheck.runner import run_check
from dropcheck.verdict import Status
from tests.broken_impls import POWER_CATALOGUE

IDS = [impl.__name__ for impl, _, _ in POWER_CATALOGUE]


def _fails(impl, property_id, contract, seed):
    result = run_check(impl, contract=contract, profile="default", seed=seed, only=[property_id])
    return any(v.status == Status.FAIL for v in result.verdicts), result


@pytest.mark.parametrize("impl,property_id,contract", POWER_CATALOGUE, ids=IDS)
def test_caught_with_the_first_seed(impl, property_id, contract):
    failed, result = _fails(impl, property_id, contract, seed=1)
    assert failed, f"{property_id} should catch {impl.__name__} under the default profile, seed 1:\n{result.summary()}"


@pytest.mark.slow
@pytest.mark.parametrize("impl,property_id,contract", POWER_CATALOGUE, ids=IDS)
def test_caught_for_every_one_of_20_seeds(impl, property_id, contract):
    missed = [seed for seed in range(1, 21) if not _fails(impl, property_id, contract, seed)[0]]
    assert not missed, f"{property_id} missed {impl.__name__} for seeds {missed} of 1..20 (default profile)"
