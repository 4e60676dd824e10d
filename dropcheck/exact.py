"""Exact properties: statements that must hold for every input, checked with Hypothesis.

No alpha is needed here: one counterexample is a proof. Each check is a function of one drawn
`DropoutCase` that raises `PropertyViolation` with a message saying what was expected, what came
and where. `run_exact` checks one property on the run's inputs, drawn by Hypothesis once for all the
properties (`drawn_inputs`, seeded from the run's seed, so a failure replays); where a property fails
on one, the same draws run again with its check in them, so that its `Verdict` names the shrunk,
minimal failing case.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable

import torch
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from dropcheck import strategies as dst
from dropcheck.context import CheckContext, PropertyViolation, differs, first_index, require_tensor
from dropcheck.contracts import rounding_tolerance
from dropcheck.seeding import derive_seed, preserved_rngs, reseed, rng_fingerprint, seeded
from dropcheck.verdict import Status, Verdict

Check = Callable[[CheckContext, dst.DropoutCase], None]


# ---- helpers ------------------------------------------------------------------------------------
def _describe_at(t: torch.Tensor, idx: tuple[int, ...]) -> str:
    return f"{t[idx].item():.9g}" if t.dim() else f"{t.item():.9g}"


def classify(ctx: CheckContext, x: torch.Tensor, y: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a train output into (kept, dropped) element masks; elements in neither are violations.

    For alpha an element whose input is within rounding of α' matches both (a·x+b ≈ a·α'+b): it is
    in both masks, and checks that need the decision (GRAD-MASK, MASK-UNIT) leave it out."""
    c = ctx.contract
    y64 = y.double()
    kept_val = c.kept(x, p)
    kept = (y64 - kept_val).abs() <= c.kept_tolerance(x, p)
    # Dropped is exactly 0 (-0.0 included) for inverted and classic; alpha's constant is rounded.
    dropped = (y64 - c.dropped(p)).abs() <= c.dropped_tolerance(p, x.dtype)
    return kept, dropped


# ---- the checks ----------------------------------------------------------------------------------
def eval_identity(ctx: CheckContext, case: dst.DropoutCase) -> None:
    x = case.x
    y = require_tensor(ctx.target.build(case.p, ctx.device).eval(x), x, "eval call")
    if ctx.contract.eval_is_identity:
        if not torch.equal(y, x) or y.dtype != x.dtype:
            bad = y.double() != x.double()
            idx = first_index(bad)
            raise PropertyViolation(
                f"eval output differs from the input at {sum(bad.flatten().tolist()) if bad.numel() < 10**6 else 'many'} "
                f"element(s); first at {idx}: got {_describe_at(y, idx)}, expected {_describe_at(x, idx)} (bitwise identity)"
            )
        return
    expected = ctx.contract.eval_expected(x, case.p)
    # One rounding of the product, plus the rounding of 1-p itself to the dtype (an implementation
    # may compute x·(1-p) with 1-p already in x's dtype; near p = 1 that is subnormal in float16),
    # plus the dtype's smallest subnormal for products that underflow.
    fi = torch.finfo(x.dtype)
    q_ulp = max(fi.eps * (1.0 - case.p), fi.smallest_normal * fi.eps)
    tol = rounding_tolerance(expected, x.dtype) + x.double().abs() * q_ulp + fi.smallest_normal * fi.eps
    bad = (y.double() - expected).abs() > tol
    if bad.any():
        idx = first_index(bad)
        raise PropertyViolation(
            f"eval output at {idx} is {_describe_at(y, idx)}, expected (1-p)·x = {_describe_at(expected, idx)} "
            f"within one rounding of {x.dtype}"
        )


def support_scale(ctx: CheckContext, case: dst.DropoutCase) -> None:
    # Judged against the input as it was: an in-place implementation has changed case.x by now
    # (INPUT-UNTOUCHED's bug), and its output compared with that would read as neither kept nor dropped.
    x = case.x.clone()
    reseed(case.seed)
    y = require_tensor(ctx.target.build(case.p, ctx.device).train(case.x), x, "train call")
    kept, dropped = classify(ctx, x, y, case.p)
    bad = ~(kept | dropped)
    if bad.any():
        idx = first_index(bad)
        kept_val = ctx.contract.kept(x, case.p)
        raise PropertyViolation(
            f"train output at {idx} is {_describe_at(y, idx)}: neither dropped ({ctx.contract.dropped(case.p):.9g}) "
            f"nor kept ({_describe_at(kept_val, idx)} = {_kept_formula(ctx)}, within one rounding of {x.dtype}); "
            f"{int(bad.sum())} of {bad.numel()} elements are off"
        )


def _kept_formula(ctx: CheckContext) -> str:
    return {"inverted": "x/(1-p)", "classic": "x", "alpha": "a·x+b"}[ctx.contract.values]


def mask_unit(ctx: CheckContext, case: dst.DropoutCase) -> None:
    x = case.x.clone()  # as it was (see support_scale)
    reseed(case.seed)
    y = require_tensor(ctx.target.build(case.p, ctx.device).train(case.x), x, "train call")
    kept, dropped = classify(ctx, x, y, case.p)
    start = 2 if ctx.contract.unit == "channel" else 1

    def per_unit(m: torch.Tensor) -> torch.Tensor:
        return m.flatten(start) if m.dim() > start else m.unsqueeze(-1)

    surely_kept, surely_dropped = per_unit(kept & ~dropped), per_unit(dropped & ~kept)
    units = per_unit(kept)
    mixed = surely_kept.any(-1) & surely_dropped.any(-1)
    if mixed.any():
        idx = first_index(mixed)
        unit = "channel (n, c)" if ctx.contract.unit == "channel" else "sample"
        raise PropertyViolation(
            f"{unit} {idx} is partly dropped: {int(units[idx].sum())} of {units.shape[-1]} elements kept; "
            f"a {ctx.contract.unit} unit must be kept or dropped whole"
        )


# P-ZERO and P-ONE build with p = 0.0 and 1.0, or with the int 0 or 1 where the input carries it (one
# of their fixed inputs, `_fixed_inputs`): `nn.Dropout(1)` is valid, and an int p read as a percentage
# is a bug of its own.
def p_zero(ctx: CheckContext, case: dst.DropoutCase) -> None:
    x = case.x
    p = case.p if case.p == 0 else 0.0
    reseed(case.seed)
    y = require_tensor(ctx.target.build(p, ctx.device).train(x), x, f"train call with p={p!r}")
    if not torch.equal(y, x):
        idx = first_index(y.double() != x.double())
        raise PropertyViolation(
            f"p={p!r} train output differs from the input at {idx}: got {_describe_at(y, idx)}, expected {_describe_at(x, idx)}"
        )


def p_one(ctx: CheckContext, case: dst.DropoutCase) -> None:
    x = case.x
    p = case.p if case.p == 1 else 1.0
    reseed(case.seed)
    y = require_tensor(ctx.target.build(p, ctx.device).train(x), x, f"train call with p={p!r}")
    bad = ~torch.isfinite(y) | (y != 0)
    if bad.any():
        idx = first_index(bad)
        raise PropertyViolation(f"p={p!r} train output at {idx} is {_describe_at(y, idx)}, expected 0 (no NaN/Inf)")


def keeps_meta(ctx: CheckContext, case: dst.DropoutCase) -> None:
    x = case.x
    dut = ctx.target.build(case.p, ctx.device)
    for mode in ("train", "eval"):
        reseed(case.seed)
        y = getattr(dut, mode)(x)
        if not isinstance(y, torch.Tensor):
            raise PropertyViolation(f"{mode} call returned {type(y).__name__}, expected a torch.Tensor")
        got = (tuple(y.shape), y.dtype, y.device.type)
        want = (tuple(x.shape), x.dtype, x.device.type)
        if got != want:
            raise PropertyViolation(f"{mode} output has (shape, dtype, device) {got}, expected {want}")


def input_untouched(ctx: CheckContext, case: dst.DropoutCase) -> None:
    x = case.x
    before = x.clone()
    dut = ctx.target.build(case.p, ctx.device)
    for mode in ("train", "eval"):
        reseed(case.seed)
        getattr(dut, mode)(x)
        if not torch.equal(x, before):
            idx = first_index(x.double() != before.double())
            raise PropertyViolation(
                f"the {mode} call modified its input in place: element {idx} was {_describe_at(before, idx)}, "
                f"is now {_describe_at(x, idx)}"
            )


def grad_mask(ctx: CheckContext, case: dst.DropoutCase) -> None:
    x = case.x.detach().clone().requires_grad_(True)
    reseed(case.seed)
    y = require_tensor(ctx.target.build(case.p, ctx.device).train(x), x, "train call")
    if not y.requires_grad:
        raise PropertyViolation("the train output does not require grad: no gradient can reach the input")
    y.sum().backward()
    if x.grad is None:
        raise PropertyViolation("backward left x.grad as None: the output is detached from the input")
    kept, dropped = classify(ctx, x.detach(), y.detach(), case.p)
    ambiguous = kept & dropped
    c = ctx.contract
    # d(kept value)/dx: 1/(1-p) inverted, 1 classic, a alpha; 0 where dropped.
    slope = c.kept(torch.ones((), dtype=torch.float64), case.p) - c.kept(torch.zeros((), dtype=torch.float64), case.p) if case.p < 1 else torch.tensor(0.0)
    want = torch.where(kept, slope.to(kept.device), torch.zeros((), dtype=torch.float64, device=kept.device))
    bad = ((x.grad.double() - want).abs() > rounding_tolerance(want, x.dtype)) & ~ambiguous
    if bad.any():
        idx = first_index(bad)
        state = "kept" if bool(kept[idx]) else "dropped" if bool(dropped[idx]) else "neither kept nor dropped (see SUPPORT-SCALE)"
        raise PropertyViolation(
            f"x.grad at {idx} is {_describe_at(x.grad, idx)} but that element was {state} in the forward, so the "
            f"gradient must be {_describe_at(want, idx)} (mask·s): backward does not use the forward's mask"
        )


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal element for element, NaN matching NaN: a NaN output is SUPPORT-SCALE's to report, not a
    sign that the output is not determined by the seed."""
    return a.shape == b.shape and not bool(differs(a, b).any())


def seed_replay(ctx: CheckContext, case: dst.DropoutCase) -> None:
    x = case.x
    dut = ctx.target.build(case.p, ctx.device)
    with case.calling():  # plain, or under no_grad (the input may require grad: _big_case_strategy)
        reseed(case.seed)
        returned = require_tensor(dut.train(x), x, "train call")
        first = [returned.clone(), require_tensor(dut.train(x), x, "train call").clone()]
        # The first output must not have changed since it was returned (one output buffer, reused and
        # overwritten by every call, would change it).
        changed = differs(returned, first[0])
        if changed.any():
            idx = first_index(changed)
            raise PropertyViolation(
                f"the output of a train call changed after it was returned, when the implementation was called "
                f"again: element {idx} was {_describe_at(first[0], idx)}, is now {_describe_at(returned, idx)}"
            )
        reseed(case.seed)
        again = [require_tensor(dut.train(x), x, "train call").clone() for _ in range(2)]
        for k, (a, b) in enumerate(zip(first, again)):
            if not _same(a, b):
                idx = first_index(differs(a, b))
                raise PropertyViolation(
                    f"call {k + 1} after seeding with {case.seed} gave {_describe_at(a, idx)} at {idx} the first time "
                    f"and {_describe_at(b, idx)} after reseeding: the output is not determined by the seed"
                )
        if torch.equal(first[0], first[1]):  # NaN ≠ NaN here: an all-NaN output is not a reused mask
            raise PropertyViolation(
                f"two consecutive train calls gave identical outputs over {x.numel()} elements at p={case.p:g} "
                "(chance (p²+q²)^units, nil here): the mask is reused across calls"
            )


def mode_roundtrip(ctx: CheckContext, case: dst.DropoutCase) -> None:
    x = case.x
    dut = ctx.target.build(case.p, ctx.device)
    expected_eval = ctx.contract.eval_expected(x, case.p)
    tol = rounding_tolerance(expected_eval, x.dtype)

    def is_eval_output(y: torch.Tensor) -> bool:
        return bool(((y.double() - expected_eval).abs() <= tol).all())

    with case.calling():  # plain, or under no_grad (the input may require grad: _big_case_strategy)
        reseed(case.seed)
        for sequence in (("train", "eval", "train"), ("eval", "train", "eval")):
            for step, mode in enumerate(sequence):
                y = require_tensor(getattr(dut, mode)(x), x, f"{mode} call")
                if mode == "eval" and not is_eval_output(y):
                    raise PropertyViolation(f"after {'→'.join(sequence[:step + 1])} the eval call is not eval behaviour (output differs from the eval output)")
                if mode == "train" and is_eval_output(y):
                    raise PropertyViolation(
                        f"after {'→'.join(sequence[:step + 1])} the train call returned the eval output for all {x.numel()} elements at p={case.p:g}: dropout is not active"
                    )


def eval_rng_untouched(ctx: CheckContext, case: dst.DropoutCase) -> None:
    dut = ctx.target.build(case.p, ctx.device)
    reseed(case.seed)
    before = rng_fingerprint()
    dut.eval(case.x)
    if rng_fingerprint() != before:
        raise PropertyViolation("an eval call advanced a global RNG (torch, numpy or random): eval must draw nothing")


P_INVALID_VALUES = (-0.1, -1e-9, 1.0 + 1e-9, 1.5, math.nan)


def p_invalid(ctx: CheckContext) -> Verdict:
    """Not a Hypothesis property: a fixed list of invalid p, each must raise before any output."""
    x = dst.make_input(ctx.unit_shape(256), torch.float32, 0, device=ctx.device)
    # First a valid p (built at 0.5, one eval call, which no hang in train mode can stop): an
    # implementation that raises whatever it gets would otherwise "reject" every invalid p.
    try:
        with seeded(ctx.seed):
            ctx.target.build(0.5, ctx.device).eval(x)
    except Exception as e:
        return Verdict("P-INVALID", Status.ERROR,
                       f"implementation raised {type(e).__name__}: {e} for the valid p=0.5 too, so its raising for "
                       "invalid p says nothing", device=ctx.device, seed=ctx.seed, replay=ctx.replay("P-INVALID"))
    raised: dict[str, str] = {}
    for bad in P_INVALID_VALUES:
        try:
            with seeded(ctx.seed):
                out = ctx.target.build(bad, ctx.device).train(x)
        except Exception as e:  # any exception rejects p; ValueError is the recommended type
            raised[repr(bad)] = type(e).__name__
            continue
        return Verdict(
            "P-INVALID", Status.FAIL,
            f"p={bad!r} was accepted and returned a {type(out).__name__}; expected ValueError",
            device=ctx.device, seed=ctx.seed, replay=ctx.replay("P-INVALID"), evidence={"accepted_p": repr(bad), "raised": raised},
        )
    others = sorted({t for t in raised.values() if t != "ValueError"})
    note = f" (raised {', '.join(others)} for some; ValueError is recommended)" if others else ""
    return Verdict(
        "P-INVALID", Status.PASS, f"rejected all of p={', '.join(raised)}{note}",
        device=ctx.device, seed=ctx.seed, replay=ctx.replay("P-INVALID"), evidence={"raised": raised},
    )


# ---- the driver ------------------------------------------------------------------------------------
def _big_case_strategy(ctx: CheckContext) -> st.SearchStrategy[dst.DropoutCase]:
    """Inputs with ~2048 units and p in [0.05, 0.95]: two identical masks are then impossible in
    practice ((p²+q²)^2048 < 1e-40), so 'calls differ' and 'train is not eval' are exact checks.
    Any memory layout, and calls plain, on an input that requires grad, or under no_grad."""
    shape = ctx.unit_shape(2048)

    @st.composite
    def draw(d: st.DrawFn) -> dst.DropoutCase:
        dtype = d(dst.one_of_these(dst.FLOAT_DTYPES), label="dtype")
        p = d(dst.drop_probabilities(low=0.05, high=0.95), label="p")
        seed = d(dst.seeds(), label="seed")
        layout = d(dst.one_of_these(tuple(dst.layouts_for(shape))), label="layout")
        autograd = d(dst.one_of_these(dst.AUTOGRAD_MODES), label="autograd")
        x = dst.with_autograd(dst.make_input(shape, dtype, seed, layout, device=ctx.device), autograd)
        return dst.DropoutCase(x, p, seed, layout, autograd)

    return draw()


# The p each property takes, where not all of [0, 1] (a drawn p outside is clipped into it, `_own_copy`):
# checks that two masks differ need p away from 0 and 1 (see _big_case_strategy), and the scale
# 1/(1-p) is checked where it is finite.
P_RANGE: dict[str, tuple[float, float]] = {
    "SEED-REPLAY": (0.05, 0.95),
    "MODE-ROUNDTRIP": (0.05, 0.95),
    "MASK-UNIT": (0.05, 0.95),
    "SUPPORT-SCALE": (0.0, 1 - 1e-3),
    "GRAD-MASK": (0.0, 1 - 1e-3),
}
BIG_CASE_PROPERTIES = frozenset({"SEED-REPLAY", "MODE-ROUNDTRIP"})  # they take _big_case_strategy's inputs


# Each check seeds the global RNGs for its input with `reseed` (cheap) and leaves them seeded:
# `run_exact` runs them inside `preserved_rngs`, which restores the caller's states.
EXACT_CHECKS: dict[str, Check] = {
    "EVAL-IDENTITY": eval_identity,
    "SUPPORT-SCALE": support_scale,
    "MASK-UNIT": mask_unit,
    "P-ZERO": p_zero,
    "P-ONE": p_one,
    "KEEPS-META": keeps_meta,
    "INPUT-UNTOUCHED": input_untouched,
    "GRAD-MASK": grad_mask,
    "SEED-REPLAY": seed_replay,
    "MODE-ROUNDTRIP": mode_roundtrip,
    "EVAL-RNG-UNTOUCHED": eval_rng_untouched,
}


# Eval behaviour, dtype/shape/device, the backward, and writes into the input: what the train-mode
# samples never see or cannot name (a sample whose input was overwritten is only INCONCLUSIVE).
LARGE_INPUT_PROPERTIES = frozenset({"EVAL-IDENTITY", "KEEPS-META", "GRAD-MASK", "INPUT-UNTOUCHED"})


def _fixed_inputs(ctx: CheckContext, property_id: str) -> list[dst.DropoutCase]:
    """Besides the drawn inputs, always try fixed ones. First two large float32 ones (~2048 units at
    p=0.5 and at a run p in [0.05, 0.95], else 0.1): a bug that shows only on some mask draws (a
    backward with its own mask) then shows with probability 1 - (p²+q²)^2048, i.e. always, instead
    of depending on the draws. (At a run p of 1e-5 it would not, and two masks would often be the same, which
    the checks that masks differ would take for a reused mask.)

    For the properties in LARGE_INPUT_PROPERTIES the first is 65536 units: an implementation that
    goes wrong only past some size (a kernel of its own for large inputs) passes every small input,
    and the statistical samples, large as they are, only make train calls and read their values.

    Then a batch of one (one row of the 2048-unit input's shape; for drop path one sample) at p=0.5:
    a path of its own for single-sample batches (inference-style) is a bug the draws reach only
    by chance (for P-ZERO and P-ONE with p the int 0 or 1, as in `nn.Dropout(1)`). And for channel dropout, 2048 channels at p=0.5 at each other spatial rank the target
    takes cleanly (ctx.clean_ranks): the draws have the run's rank only, and a rank can have a code
    path of its own (channels dropped right for (N, C, H, W), elements for (N, C, L)). Neither for
    the BIG_CASE_PROPERTIES, whose checks need many units (two masks of one unit are often the
    same) and whose inputs have the run's rank."""
    fixed_p = {"P-ZERO": 0.0, "P-ONE": 1.0}.get(property_id)
    first_units = 65536 if property_id in LARGE_INPUT_PROPERTIES else 2048
    cases = []
    for k, p in enumerate((0.5, next((q for q in ctx.ps if 0.05 <= q <= 0.95 and q != 0.5), 0.1))):
        x = dst.make_input(ctx.unit_shape(first_units if k == 0 else 2048), torch.float32, k, device=ctx.device)
        cases.append(dst.DropoutCase(x, fixed_p if fixed_p is not None else p, k, "contiguous"))
    if property_id not in BIG_CASE_PROPERTIES:
        x = dst.make_input((1, *ctx.unit_shape(2048)[1:]), torch.float32, 2, device=ctx.device)
        cases.append(dst.DropoutCase(x, int(fixed_p) if fixed_p is not None else 0.5, 2, "contiguous"))
        for rank in (r for r in ctx.clean_ranks if r != ctx.spatial_rank):  # only the channel probe sets more than one
            x = dst.make_input(ctx.unit_shape(2048, rank), torch.float32, 3 + rank, device=ctx.device)
            cases.append(dst.DropoutCase(x, fixed_p if fixed_p is not None else 0.5, 3 + rank, "contiguous"))
    return cases


# Hypothesis spends about 1 ms drawing each example, several times what a check costs on its tiny
# inputs: eleven searches of 25 examples were 0.3 s of a 0.4 s exact phase. So the inputs are drawn
# once per run (per worker process) by Hypothesis runs that only draw, and each property is checked
# on them in a check of its own (its own time limit and verdict). Only a property that fails is
# searched again (`_shrink`): the same draw with its check in it, so that Hypothesis shrinks what it
# failed on.
_DRAWN: dict[tuple, list[Drawn]] = {}
_DRAWN_KEPT = 8  # runs' draws kept per process (the pytest plugin checks one run's properties one by one)


@dataclasses.dataclass(frozen=True)
class Drawn:
    """What a drawn input is made from (its tensor is made again for each property, `_own_copy`)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    seed: int
    layout: str
    p: float
    autograd: str

    @classmethod
    def of(cls, case: dst.DropoutCase) -> Drawn:
        return cls(case.shape, case.x.dtype, case.seed, case.layout, case.p, case.autograd)


def _draw(ctx: CheckContext, big: bool, body: Callable[[dst.DropoutCase], None]) -> None:
    """Hypothesis' run over the run's `ctx.max_examples` small inputs (any shape, dtype, layout and
    p) or big ones (`_big_case_strategy`, for the BIG_CASE_PROPERTIES), seeded from the run's seed.
    Until `body` first raises, every run draws the same inputs, as long as Hypothesis sees the same
    modules (it also draws constants it finds in their source)."""
    strategy = _big_case_strategy(ctx) if big else dst.dropout_inputs(
        unit=ctx.contract.unit, spatial_rank=ctx.spatial_rank, ps=dst.drop_probabilities(tuple(ctx.ps)),
        device=ctx.device)

    @settings(max_examples=ctx.max_examples, deadline=None, database=None, verbosity=Verbosity.quiet,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False, print_blob=False)
    @hypothesis_seed(derive_seed(ctx.seed, "exact inputs", "big" if big else "small", ctx.device))
    @given(strategy)
    def run(case: dst.DropoutCase) -> None:
        body(case)

    with preserved_rngs():  # the checks reseed per example and restore nothing themselves
        run()


def drawn_inputs(ctx: CheckContext, big: bool) -> list[Drawn]:
    """The run's drawn inputs (`_draw`), drawn once per process: the same whichever properties run,
    so that `--only ID` checks ID on the inputs of the full run."""
    # Per target too: Hypothesis also draws constants from the source of the modules loaded (the
    # target's among them), so a target checked later in this process gets a draw of its own.
    key = (big, ctx.target.spec, ctx.seed, ctx.device, ctx.contract.unit, ctx.spatial_rank, tuple(ctx.ps),
           ctx.max_examples)
    if key not in _DRAWN:
        drawn: list[Drawn] = []
        _draw(ctx, big, lambda case: drawn.append(Drawn.of(case)))
        while len(_DRAWN) >= _DRAWN_KEPT:
            del _DRAWN[next(iter(_DRAWN))]
        _DRAWN[key] = drawn
    return _DRAWN[key]


def _own_copy(ctx: CheckContext, property_id: str, drawn: Drawn) -> dst.DropoutCase:
    """A drawn input remade for one property: a check that writes into its input (INPUT-UNTOUCHED's
    bug) must not change what the next property sees. Its p is clipped into the property's P_RANGE
    (so p = 0, 1e-6, 0.999 and 1 are 0.05 or 0.95 for the properties that need masks to differ)."""
    low, high = P_RANGE.get(property_id, (0.0, 1.0))
    x = dst.make_input(drawn.shape, drawn.dtype, drawn.seed, drawn.layout, device=ctx.device)
    return dst.DropoutCase(dst.with_autograd(x, drawn.autograd), min(max(drawn.p, low), high), drawn.seed,
                           drawn.layout, drawn.autograd)


def run_exact(ctx: CheckContext, property_id: str) -> Verdict:
    """Check one exact property on its fixed inputs (`_fixed_inputs`), then on the run's drawn
    inputs, up to the first input it fails on, and return its verdict. A fixed input is reported as
    it is; a drawn input is shrunk first (`_shrink`)."""
    start = time.perf_counter()
    if property_id == "P-INVALID":
        verdict = p_invalid(ctx)
        verdict.duration_s = time.perf_counter() - start
        return verdict
    check = EXACT_CHECKS[property_id]
    fixed = _fixed_inputs(ctx, property_id)
    big = property_id in BIG_CASE_PROPERTIES
    drawn = (_own_copy(ctx, property_id, d) for d in drawn_inputs(ctx, big))
    examples, failed = 0, None
    with preserved_rngs():  # the checks reseed per example and restore nothing themselves
        for case in itertools.chain(fixed, drawn):
            examples += 1
            try:
                check(ctx, case)
            except Exception as e:
                failed = (case, e)
                break
    if failed is not None and examples > len(fixed):
        # Should the failure not come again, or not every time (an implementation whose output depends
        # on more than its input, p and seed), the input it failed on here is the one reported.
        failed = _shrink(ctx, property_id, big) or failed
    case, error = failed or (None, None)
    return _verdict(ctx, property_id, case, error, examples, time.perf_counter() - start)


def _shrink(ctx: CheckContext, property_id: str, big: bool) -> tuple[dst.DropoutCase, Exception] | None:
    """The draw again, the property's check on each input: Hypothesis comes to the same failing
    input and shrinks it to a minimal one. (That input, the exception), or None if no failure came
    back, or came back only some of the times Hypothesis replayed it (its Flaky errors)."""
    check = EXACT_CHECKS[property_id]
    failing: list[dst.DropoutCase] = []

    def body(case: dst.DropoutCase) -> None:
        mine = _own_copy(ctx, property_id, Drawn.of(case))
        try:
            check(ctx, mine)
        except Exception:
            failing.append(mine)  # Hypothesis replays the shrunk example last
            raise

    try:
        _draw(ctx, big, body)
    except Flaky:
        return None
    except Exception as e:
        return (failing[-1], e) if failing else None
    return None


def _verdict(ctx: CheckContext, property_id: str, case: dst.DropoutCase | None, error: Exception | None,
             examples: int, duration_s: float) -> Verdict:
    """PASS when no input failed; FAIL for a broken statement (PropertyViolation), ERROR for anything
    else the implementation raised; the failing input in the summary and the evidence."""
    where = f" [{case!r}]" if case is not None else ""
    if error is None:
        status, summary = Status.PASS, f"held on {examples} drawn inputs"
    elif isinstance(error, PropertyViolation):
        status, summary = Status.FAIL, f"{error}{where}"
    else:
        status, summary = Status.ERROR, f"implementation raised {type(error).__name__}: {error}{where}"
    evidence = {"examples": examples}
    if case is not None:
        evidence["failing_case"] = repr(case)
    return Verdict(property_id, status, summary, duration_s=duration_s, evidence=evidence, device=ctx.device,
                   seed=ctx.seed, replay=ctx.replay(property_id), p=case.p if case is not None else None,
                   dtype=str(case.x.dtype).removeprefix("torch.") if case is not None else None)
