"""Sampling: calling the implementation in train mode and reading back which units it kept.

Masks are read only from inputs that can never read as "dropped" by accident: values are ±U(1, 2)
(or ±10^U(-3, 3) for the input-dependence test), in float32, so a 0 output means dropped. Everything
stays on the implementation's device; only counts and small summaries reach the host.
Large samples are drawn in chunks so memory stays bounded whatever the profile.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from dropcheck.context import CheckContext, PropertyViolation, require_tensor
from dropcheck.targets import DropoutUnderTest

MAX_CHUNK_UNITS = 1 << 20  # ~4 MB of float32 input per call: bounded memory on any profile


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
                   dtype: torch.dtype = torch.float32, high: float = 2.0) -> torch.Tensor:
    """±U(1, high): never 0, subnormal or near overflow, in any float dtype."""
    mag = 1.0 + (high - 1.0) * torch.rand(shape, generator=gen)
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
    return (mag * sign).to(device=device, dtype=dtype)


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
    finite = torch.isfinite(y)
    if not bool(finite.all()):  # the inputs are finite, so NaN/Inf is never a kept or dropped value
        idx = tuple(int(i) for i in (~finite).nonzero()[0])
        raise PropertyViolation(f"train output has {int((~finite).sum())} NaN/Inf element(s) for a finite input; "
                                f"first at {idx}: {y[idx].item()}")
    return y


def kept_units(ctx: CheckContext, dut: DropoutUnderTest, x: torch.Tensor, p: float) -> torch.Tensor:
    """One train call; the bool indicator of kept units, shaped like the unit grid (rows, units)."""
    y = checked_train_output(x, dut.train(x))
    c = ctx.contract
    if c.values == "alpha":
        kept = (y.double() - c.dropped(p)).abs() > c.dropped_tolerance(p, x.dtype)
    else:
        kept = y != 0
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
