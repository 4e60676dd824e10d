"""The exact properties' inputs (dropcheck.exact): drawn once per run and shared by the properties,
each property on its own copy. A failing fixed input is reported as it is; a failing drawn input
is shrunk (the draws run again with the property's check in them), and a failure that does not come
again is still reported, on the drawn input.

The runs here are in-process (guard mechanism "none"), so that the draws they leave in
exact._DRAWN can be looked at."""
from __future__ import annotations

import re

import pytest
import torch

from dropcheck import exact, guard, registry
from dropcheck import strategies as dst
from dropcheck.context import CheckContext
from dropcheck.contracts import get_contract
from dropcheck.runner import run_check
from dropcheck.targets import resolve_dropout
from dropcheck.verdict import Status

EXACT_IDS = [p.id for p in registry.for_contract("inverted", "exact")]


@pytest.fixture(autouse=True)
def in_process(monkeypatch):
    monkeypatch.setattr(guard, "choose_mechanism", lambda device="cpu": "none")
    monkeypatch.setattr(exact, "_DRAWN", {})


def draws() -> dict[bool, list]:
    """What exact._DRAWN holds: big (True) or small (False) → the drawn inputs."""
    return {key[0]: drawn for key, drawn in exact._DRAWN.items()}


def test_one_draw_of_each_kind_serves_every_property_and_only_draws_the_same():
    result = run_check("reference_impls.inverted:InvertedDropout", profile="quick", only=EXACT_IDS)
    assert result.ok, result.summary()
    full = draws()
    assert len(exact._DRAWN) == 2 and set(full) == {False, True}, \
        f"expected one draw of small and one of big inputs for {len(EXACT_IDS)} properties: {list(exact._DRAWN)}"
    assert [len(d) for d in full.values()] == [20, 20], f"quick draws 20 inputs: {[len(d) for d in full.values()]}"
    assert len(set(full[False])) >= 18, f"the small inputs should hardly repeat: {len(set(full[False]))} of 20 distinct"
    searched = [v for v in result.verdicts if v.property_id != "P-INVALID"]
    # 2 large inputs, a batch of one (not for the big-input properties), 20 drawn
    want = {v.property_id: 22 if v.property_id in exact.BIG_CASE_PROPERTIES else 23 for v in searched}
    assert {v.property_id: v.evidence["examples"] for v in searched} == want, [v.summary for v in searched]
    exact._DRAWN.clear()
    run_check("reference_impls.inverted:InvertedDropout", profile="quick", only=["P-ONE"])
    assert draws() == {False: full[False]}, "--only one property must see the inputs of the full run"
    exact._DRAWN.clear()
    run_check("reference_impls.inverted:InvertedDropout", profile="quick", only=["SEED-REPLAY"])
    assert draws() == {True: full[True]}, "--only one property must see the inputs of the full run"
    exact._DRAWN.clear()
    run_check("reference_impls.inverted:InvertedDropout", profile="quick", only=["P-ONE"], seed=7)
    assert draws()[False] != full[False], "another seed must draw other inputs"


def test_each_property_gets_its_own_copy_of_each_drawn_input():
    ctx = CheckContext(resolve_dropout("reference_impls.inverted:InvertedDropout"), get_contract("inverted"),
                       seed=3, max_examples=20)
    drawn = exact.drawn_inputs(ctx, big=False)
    a = [exact._own_copy(ctx, "SUPPORT-SCALE", d) for d in drawn]
    b = [exact._own_copy(ctx, "MASK-UNIT", d) for d in drawn]
    assert len(a) == len(b) == 20, (len(a), len(b))
    for d, one, other in zip(drawn, a, b):
        # As drawn: make_input of the drawn shape, dtype, seed and layout (its strides included).
        want = dst.make_input(d.shape, d.dtype, d.seed, d.layout)
        assert torch.equal(one.x, want) and one.x.stride() == want.stride() and one.layout == d.layout, (d, one)
        assert torch.equal(one.x, other.x) and one.x.stride() == other.x.stride(), f"same input expected: {one!r} vs {other!r}"
        assert one.x.numel() == 0 or one.x.data_ptr() != other.x.data_ptr(), f"{one!r} shares its storage"
    # p clipped into each property's range (exact.P_RANGE).
    assert all(0.05 <= c.p <= 0.95 for c in b), [c.p for c in b]
    assert all(c.p <= 1 - 1e-3 for c in a), [c.p for c in a]
    assert [c.p for c in a] == [min(d.p, 1 - 1e-3) for d in drawn]


def eval_doubles_float64(x, p, training):
    """Eval is x·2 for float64 inputs only: the fixed inputs (float32) miss it, the draws do not."""
    if not training:
        return x * 2 if x.dtype == torch.float64 else x
    return torch.nn.functional.dropout(x, p, True)


def test_a_failing_drawn_input_is_reported_shrunk():
    result = run_check(eval_doubles_float64, profile="quick", only=["EVAL-IDENTITY"])
    v = result.verdicts[0]
    assert v.status is Status.FAIL, f"expected a FAIL (the seed's 20 quick draws include float64 inputs): {v.summary}"
    case = v.evidence["failing_case"]
    # Shrunk: the smallest shape, the first layout, seed 0; float64 stays, as the bug needs it.
    assert re.search(r"shape=\(\), dtype=float64, layout=contiguous, p=0\.0, seed=0\)", case), case


def eval_doubles_everything(x, p, training):
    return x * 2 if not training else torch.nn.functional.dropout(x, p, True)


def test_a_failing_fixed_input_is_reported_as_it_is():
    v = run_check(eval_doubles_everything, profile="quick", only=["EVAL-IDENTITY"]).verdicts[0]
    assert v.status is Status.FAIL and v.evidence["examples"] == 1, f"expected a FAIL on the first input: {v.summary}"
    assert "shape=(512, 128), dtype=float32" in v.evidence["failing_case"], v.evidence["failing_case"]  # 65536 units


FLOAT64_EVAL_CALLS = [0]
WRONG_FOR = [1]  # how many float64 eval calls are wrong, from the first


def first_float64_evals_wrong(x, p, training):
    """Eval is wrong on the first WRONG_FOR[0] float64 inputs of its process and right ever after."""
    if training:
        return torch.nn.functional.dropout(x, p, True)
    if x.dtype == torch.float64:
        FLOAT64_EVAL_CALLS[0] += 1
        return x + 1 if FLOAT64_EVAL_CALLS[0] <= WRONG_FOR[0] else x
    return x


@pytest.mark.parametrize("wrong_for", [1, 2, 3])
def test_a_failure_that_does_not_come_again_every_time_is_reported_on_the_drawn_input(wrong_for):
    """1: the shrinking draw never fails; 2, 3: it fails, but not when Hypothesis replays the failure
    (its FlakyFailure), which must not turn the FAIL into an ERROR."""
    FLOAT64_EVAL_CALLS[0], WRONG_FOR[0] = 0, wrong_for
    v = run_check(first_float64_evals_wrong, profile="quick", only=["EVAL-IDENTITY"]).verdicts[0]
    assert v.status is Status.FAIL and v.evidence["examples"] > 3, f"expected a FAIL on a drawn input: {v.summary}"
    assert "dtype=float64" in v.evidence["failing_case"] and "eval output differs" in v.summary, v.summary
    assert FLOAT64_EVAL_CALLS[0] > wrong_for, "the draw must have run again, to shrink"
