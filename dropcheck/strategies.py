"""Hypothesis strategies for dropout inputs: shapes, layouts, dtypes, drop probabilities, seeds.

Safe and bounded: values are ±U(1, 2), never 0, subnormal or near overflow, so a zero output can
only mean "dropped" (even in float16 at p close to 1: 2/(1e-3) is far below 65504).

>>> from hypothesis import given
>>> @given(dropout_inputs())
... def test_mine(case):
...     assert case.x.shape == case.shape
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools

import torch
from hypothesis import strategies as st

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# p values where bugs live: the edges, just inside them, and the usual values (0.5 hides a
# keep/drop swap, so 0.1 and 0.9 are here too). 1 - 1e-3 keeps float16 scales finite.
EDGE_PS: tuple[float, ...] = (0.0, 1e-6, 0.1, 0.5, 0.9, 1 - 1e-3, 1.0)


@dataclasses.dataclass
class DropoutCase:
    """One drawn input: the tensor, the drop probability and the seed for torch/numpy/random."""

    x: torch.Tensor
    p: float
    seed: int
    layout: str
    # How the implementation is called: "plain", on an input that requires grad, or under
    # torch.no_grad() (as Monte Carlo dropout at inference is): a mask cached or biased only on one
    # of these paths is a bug the others cannot show.
    autograd: str = "plain"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape)

    def calling(self) -> contextlib.AbstractContextManager:
        """The grad mode to make the calls under."""
        return torch.no_grad() if self.autograd == "no_grad" else contextlib.nullcontext()

    def __repr__(self) -> str:  # what Hypothesis prints as the falsifying example
        grad = "" if self.autograd == "plain" else f", autograd={self.autograd}"
        return (
            f"DropoutCase(shape={self.shape}, dtype={str(self.x.dtype).removeprefix('torch.')}, "
            f"layout={self.layout}, p={self.p!r}, seed={self.seed}{grad})"
        )


AUTOGRAD_MODES = ("plain", "requires_grad", "no_grad")


def with_autograd(x: torch.Tensor, mode: str) -> torch.Tensor:
    """`x` itself, or for "requires_grad" a leaf sharing its storage and strides that requires grad."""
    return x.detach().requires_grad_(True) if mode == "requires_grad" and x.is_floating_point() else x


# Strategies are built once per argument set and reused (functools.cache): building and validating a
# fresh strategy inside every draw cost more than the draw itself (a third of an exact check's time).
@functools.cache
def drop_probabilities(extra: tuple[float, ...] = (), low: float = 0.0, high: float = 1.0) -> st.SearchStrategy[float]:
    """p in [low, high], with the edge values and `extra` drawn often."""
    edges = sorted({p for p in EDGE_PS + tuple(extra) if low <= p <= high})
    return st.one_of(st.sampled_from(edges), st.floats(low, high, allow_nan=False))


@functools.cache
def seeds() -> st.SearchStrategy[int]:
    """Seeds for torch/numpy/random: Hypothesis does not manage torch's RNG, so we seed it ourselves."""
    return st.integers(0, 2**32 - 1)


@functools.cache
def shapes(unit: str = "element", spatial_rank: int = 1) -> st.SearchStrategy[tuple[int, ...]]:
    """Shapes for a unit: any (0-d, empty, up to 4-d) for elements; (N, C, *spatial) for channels;
    (N, *) for samples."""
    if unit == "element":
        return st.one_of(st.just(()), st.lists(st.integers(0, 6), min_size=1, max_size=4).map(tuple))
    if unit == "channel":
        return st.tuples(
            st.integers(1, 4), st.integers(1, 6), *[st.integers(1, 4) for _ in range(spatial_rank)]
        )
    return st.tuples(st.integers(1, 12), st.lists(st.integers(1, 4), max_size=3).map(tuple)).map(
        lambda t: (t[0], *t[1])
    )


def make_input(shape: tuple[int, ...], dtype: torch.dtype, seed: int, layout: str = "contiguous", device: str = "cpu") -> torch.Tensor:
    """±U(1, 2) values of `shape` in the given memory layout, reproducible from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    if layout == "transposed" and len(shape) >= 2:
        base_shape = (*shape[:-2], shape[-1], shape[-2])
    elif layout == "strided":
        base_shape = (*shape[:-1], 2 * shape[-1]) if shape else shape
    else:
        base_shape = shape
    mag = 1.0 + torch.rand(base_shape, generator=gen, dtype=torch.float64)
    sign = torch.where(torch.rand(base_shape, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    x = (mag * sign).to(dtype)
    if layout == "transposed" and len(shape) >= 2:
        x = x.transpose(-1, -2)  # non-contiguous view with the requested shape
    elif layout == "strided" and shape:
        x = x[..., ::2]
    x = x.to(device)
    if layout == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@functools.cache
def one_of_these(options: tuple) -> st.SearchStrategy:
    return st.sampled_from(options)


def layouts_for(shape: tuple[int, ...]) -> list[str]:
    out = ["contiguous"]
    if len(shape) >= 1 and all(shape):
        out.append("strided")
    if len(shape) >= 2:
        out.append("transposed")
    if len(shape) == 4:
        out.append("channels_last")
    return out


@st.composite
def dropout_inputs(
    draw: st.DrawFn,
    unit: str = "element",
    spatial_rank: int = 1,
    dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES,
    ps: st.SearchStrategy[float] | None = None,
    device: str = "cpu",
) -> DropoutCase:
    """A full dropout input: shape, layout, dtype, p and seed, drawn together."""
    shape = draw(shapes(unit, spatial_rank), label="shape")
    layout = draw(one_of_these(tuple(layouts_for(shape))), label="layout")
    dtype = draw(one_of_these(tuple(dtypes)), label="dtype")
    p = draw(ps if ps is not None else drop_probabilities(), label="p")
    seed = draw(seeds(), label="seed")
    return DropoutCase(make_input(shape, dtype, seed, layout, device), p, seed, layout)
