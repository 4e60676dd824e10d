"""No false alarms: full default-profile runs over the correct reference implementations never fail.

The family-wise alpha of one run is 1e-6 (dropcheck/ledger.py), so 100 runs should fail with
probability ≤ 1e-4; a single failure here means the statistics are wrong, not unlucky. Seeds are
1..100 in order, fixed before the first run. Slow (~10 min on 2 cores): run with `pytest -m slow`.
"""
import pytest

from dropcheck.runner import run_check
from reference_impls import CATALOGUE

RUNS = 100


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, RUNS + 1))
def test_full_default_run_of_a_reference_never_fails(seed):
    target, contract = CATALOGUE[seed % len(CATALOGUE)]
    result = run_check(target, contract=contract, profile="default", seed=seed)
    assert result.ok, f"false alarm on a correct implementation (seed {seed}):\n{result.summary()}"
