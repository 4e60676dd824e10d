"""Gross violations fail within a few hundred units through the anytime-valid sequential test."""
import re

import pytest

from dropcheck.runner import run_check
from dropcheck.verdict import Status
from tests.broken_impls import keep_drop_swapped


def _all_dropped(x, p, training):
    return x * 0 if training else x


@pytest.mark.parametrize("impl,limit", [(keep_drop_swapped, 500), (_all_dropped, 500)])
def test_gross_rate_violation_stops_within_a_few_hundred_units(impl, limit):
    result = run_check(impl, profile="default", ps=[0.1], only=["DROP-RATE"])
    (verdict,) = result.verdicts
    assert verdict.status == Status.FAIL, verdict.summary
    found = re.search(r"stopped early after (\d+) units", verdict.summary)
    assert found and int(found.group(1)) <= limit, (
        f"expected the sequential test to stop within {limit} units, got: {verdict.summary}"
    )
    assert verdict.tests[0].name == "sequential" and verdict.tests[0].rejected, verdict.tests
