"""The catalogue itself: IDs are unique and shared, and every property has a broken implementation."""
from dropcheck import registry
from dropcheck.contracts import CONTRACTS
from dropcheck.exact import EXACT_CHECKS
from dropcheck.ledger import TESTS_BY_PROPERTY
from dropcheck.statistical import STATISTICAL_CHECKS
from tests.broken_impls import BROKEN


def test_contract_names_agree_between_registry_and_contracts():
    assert set(registry.CONTRACT_NAMES) == set(CONTRACTS), (
        f"registry.CONTRACT_NAMES={sorted(registry.CONTRACT_NAMES)}, but dropcheck.contracts defines {sorted(CONTRACTS)}"
    )


def test_every_check_property_has_a_broken_implementation_that_targets_it():
    check_ids = {p.id for p in registry.PROPERTIES.values() if p.kind in ("exact", "statistical")}
    missing = sorted(check_ids - set(BROKEN))
    assert not missing, f"properties with no broken implementation in tests/broken_impls.py: {missing}"


def test_every_property_has_code_behind_it():
    exact = {p.id for p in registry.PROPERTIES.values() if p.kind == "exact"}
    statistical = {p.id for p in registry.PROPERTIES.values() if p.kind == "statistical"}
    assert exact == set(EXACT_CHECKS) | {"P-INVALID"}, f"exact IDs {sorted(exact)} vs checks {sorted(EXACT_CHECKS)}"
    assert statistical == set(STATISTICAL_CHECKS) == set(TESTS_BY_PROPERTY), (
        f"statistical IDs {sorted(statistical)}, checks {sorted(STATISTICAL_CHECKS)}, ledger {sorted(TESTS_BY_PROPERTY)}"
    )
