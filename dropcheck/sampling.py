"""Sampling: calling the implementation in train mode and reading back which units it kept.

Masks are read only from inputs that can never read as "dropped" by accident: values are ±U(1, 2)
(or ±10^U(-3, 3) for the input-dependence test), in float32, so a 0 output means dropped. Everything
stays on the implementation's device; only counts and small summaries reach the host.
Large samples are drawn in chunks so memory stays bounded whatever the profile.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from dropcheck.context import CheckContext, PropertyViolation, require_tensor
from dropcheck.targets import DropoutUnderTest

MAX_CHUNK_UNITS = 1 << 20  # ~4 MB of float32 input per call: bounded memory on any profile
FRESH_INPUT_UNITS = 1 << 16  # distinct input values per statistical sample (see signed_uniform)


def unit_input_shape(ctx: CheckContext, units: int, rows: int = 1) -> tuple[int, ...]:
    """A shape with `units` drop units in `rows` rows, one element per unit.

    Channel and drop-path inputs get spatial/feature sizes of 1, so each unit is one element and
    unit indicators are read directly (MASK-UNIT checks the whole-unit structure exactly).
    """
    per_row = max(1, units // rows)
    if ctx.contract.unit == "element":
        return (rows, per_row)
    if ctx.contract.unit == "channel":
        return (rows, per_row, *([1] * ctx.spatial_rank))
    return (units, 1)


def signed_uniform(shape: tuple[int, ...], device: str, gen: torch.Generator,
                   dtype: torch.dtype = torch.float32, high: float = 2.0, fresh: int | None = None) -> torch.Tensor:
    """±U(1, high): never 0, subnormal or near overflow, in any float dtype.

    One uniform draw gives both: v ~ U(-1, 1), x = copysign(1 + (high-1)·|v|, v) (copysign keeps
    the sign of v = ±0.0 too, so no element is ever 0). With `fresh`, only that many values are
    drawn and then repeated to fill the shape: a correct implementation's mask does not depend on
    the values, and one that does fails INDEP-INPUT, so the statistical samples need not pay for
    millions of fresh inputs (drawing them cost a third of dropcheck's own sampling time)."""
    n = math.prod(shape)
    m = n if fresh is None else max(1, min(n, fresh))
    x = signed_from_uniform(torch.empty(m).uniform_(-1.0, 1.0, generator=gen), high)
    if m < n:
        x = x.repeat(-(-n // m))[:n]
    return x.view(shape).to(device=device, dtype=dtype)


def signed_from_uniform(v: torch.Tensor, high: float) -> torch.Tensor:
    """copysign(1 + (high-1)·|v|, v) for v ~ U(-1, 1): ±U(1, high), never 0 (v = -0.0 gives -1)."""
    return torch.copysign(v.abs().mul_(high - 1.0).add_(1.0), v)


def safe_high_magnitude(values: str, p: float, dtype: torch.dtype) -> float:
    """The largest input magnitude (above 1) whose outputs can be read without ambiguity.

    - Inverted scaling: x/(1-p) must stay finite (float16 at p=0.99 overflows past 6.5e2).
    - Alpha: a kept a·x+b must not be mistaken for the dropped a·α'+b, which happens within a few
      roundings of x = α' ≈ -1.758 (±0.1 in bfloat16), so magnitudes stay below 1.5.
    """
    high = 2.0
    if values == "alpha":
        high = 1.5
    if values == "inverted" and p < 1.0:
        high = min(high, 0.25 * torch.finfo(dtype).max * (1.0 - p))
    return max(high, 1.0)


def checked_train_output(x: torch.Tensor, y: object) -> torch.Tensor:
    """`y` if it is a finite tensor shaped and placed like `x`; otherwise a PropertyViolation saying
    what came back. Without this a lying implementation would make the statistics raise, or worse,
    turn into NaN p-values that no test rejects."""
    y = require_tensor(y, x, "train call")
    if not _all_finite(y):  # the inputs are finite, so NaN/Inf is never a kept or dropped value
        finite = torch.isfinite(y)
        idx = tuple(int(i) for i in (~finite).nonzero()[0])
        raise PropertyViolation(f"train output has {int((~finite).sum())} NaN/Inf element(s) for a finite input; "
                                f"first at {idx}: {y[idx].item()}")
    return y


def _all_finite(y: torch.Tensor) -> bool:
    """True when every element of `y` is finite.

    A sum is finite exactly when no element is NaN or ±Inf, unless finite elements overflow it;
    so the sum (one read, no temporary: 15x cheaper than `isfinite(y).all()`, which cost a third
    of the implementation's own time) decides, and only a non-finite sum pays for the exact look."""
    if not y.is_floating_point():
        return True
    total = y.sum(dtype=torch.float64 if y.dtype == torch.float64 else torch.float32)
    return math.isfinite(total.item()) or bool(torch.isfinite(y).all())


def defers_output_checks(device: str) -> bool:
    """Whether a sample on `device` checks its outputs once, at the end (see `OutputCheck`)."""
    return torch.device(device).type != "cpu"


class OutputCheck:
    """`checked_train_output` for every call of one sample, without making a device wait.

    On the CPU each output is checked as it comes (`checked_train_output`: a sum, and a violation
    that names the element). On other devices reading anything back per call would stall the
    device on the host once per call, so each output's NaN/Inf count is added up on the device
    and `verify` reads the total once, when the sample is drawn: before its statistics are
    trusted, and also when they raised (a NaN/Inf output explains that better)."""

    def __init__(self, device: str):
        self.device = device
        self.deferred = defers_output_checks(device)
        self.calls = 0
        self._nonfinite: torch.Tensor | None = None  # a 0-d count on the device

    def __call__(self, x: torch.Tensor, y: object) -> torch.Tensor:
        if not self.deferred:
            return checked_train_output(x, y)
        y = require_tensor(y, x, "train call")
        self.calls += 1
        if y.is_floating_point():
            bad = torch.isfinite(y).logical_not_().sum()
            self._nonfinite = bad if self._nonfinite is None else self._nonfinite.add_(bad)
        return y

    def verify(self) -> None:
        """A PropertyViolation if any deferred output had a NaN/Inf element (one read from the device)."""
        if self._nonfinite is None:
            return
        count = int(self._nonfinite.item())
        if count:
            raise PropertyViolation(f"train output has {count} NaN/Inf element(s) for a finite input, over "
                                    f"{self.calls} calls (on {self.device} counted on the device and read once "
                                    "per sample, so no position is given)")


def kept_units(ctx: CheckContext, dut: DropoutUnderTest, x: torch.Tensor, p: float,
               check: Callable[[torch.Tensor, object], torch.Tensor] = checked_train_output) -> torch.Tensor:
    """One train call; the bool indicator of kept units, shaped like the unit grid (rows, units).
    `check` vets the output (a sample's `OutputCheck`)."""
    y = check(x, dut.train(x))
    c = ctx.contract
    if c.values == "alpha":
        kept = (y.double() - c.dropped(p)).abs() > c.dropped_tolerance(p, x.dtype)
    else:
        kept = y.bool()  # y != 0 (-0.0 included), and 10x faster than the comparison on CPU
    if c.unit == "sample":
        return kept.reshape(1, -1)
    return kept.reshape(kept.shape[0], -1)


def chunked(total_units: int, first: int = 64, growth: int = 4, largest: int = MAX_CHUNK_UNITS) -> Iterator[int]:
    """Chunk sizes that start small (gross bugs stop the sequential test within a few hundred
    units) and grow geometrically to `largest` (so the per-call overhead stays small)."""
    done, size = 0, first
    while done < total_units:
        n = min(size, largest, total_units - done)
        yield n
        done += n
        size *= growth
