"""Contracts: what an implementation claims to be, and so what its outputs must look like.

A contract has two parts: the *values* (what a kept and a dropped element become, and what eval
returns) and the *unit* (what is dropped together: one element, a whole channel, a whole sample).

| contract       | values   | unit    | example                          |
|----------------|----------|---------|----------------------------------|
| inverted       | inverted | element | nn.Dropout, F.dropout            |
| classic        | classic  | element | original 2014 dropout            |
| channel        | inverted | channel | nn.Dropout1d/2d/3d               |
| alpha          | alpha    | element | nn.AlphaDropout                  |
| feature-alpha  | alpha    | channel | nn.FeatureAlphaDropout           |
| droppath       | inverted | sample  | stochastic depth                 |
"""
from __future__ import annotations

import dataclasses
import math

import torch

# SELU's fixed point constants (Klambauer et al. 2017); AlphaDropout sets dropped units to
# -scale*alpha, the value SELU saturates to. torch/nn/functional.py uses the same numbers.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
ALPHA_PRIME = -SELU_ALPHA * SELU_SCALE


@dataclasses.dataclass(frozen=True)
class Contract:
    name: str
    values: str  # "inverted" | "classic" | "alpha"
    unit: str  # "element" | "channel" | "sample"
    description: str

    # ---- values -------------------------------------------------------------------------------
    def kept(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """What a kept element becomes, in float64 (compared with a dtype-rounding tolerance)."""
        x64 = x.double()
        q = 1.0 - p
        if self.values == "inverted":
            return x64 / q
        if self.values == "classic":
            return x64
        a, b = alpha_affine(p)
        return a * x64 + b

    def dropped(self, p: float) -> float:
        """What a dropped element becomes."""
        if self.values == "alpha":
            a, b = alpha_affine(p)
            return a * ALPHA_PRIME + b
        return 0.0

    def kept_tolerance(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """How far a kept value may be from `kept(x, p)`: one rounding of x's dtype (2·eps, room for
        the scale being rounded to the dtype first, as torch's CPU kernels do). Alpha computes
        a·x+b with a few roundings in the dtype, near cancellation: 4·eps·(|a·x|+|b|)."""
        if self.values == "alpha":
            a, b = alpha_affine(p)
            return 4 * torch.finfo(x.dtype).eps * (a * x.double().abs() + abs(b))
        return rounding_tolerance(self.kept(x, p), x.dtype)

    def dropped_tolerance(self, p: float, dtype: torch.dtype) -> float:
        """Dropped values are exactly 0, or for alpha a·α'+b up to a few roundings."""
        if self.values != "alpha":
            return 0.0
        a, b = alpha_affine(p)
        return 4 * torch.finfo(dtype).eps * (abs(a * ALPHA_PRIME) + abs(b))

    def eval_expected(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """The eval-mode output, in float64 (classic scales by 1-p; the others are the identity)."""
        return x.double() * (1.0 - p) if self.values == "classic" else x.double()

    @property
    def eval_is_identity(self) -> bool:
        return self.values != "classic"

    def train_mean(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """E[train output | x] in float64: what EXPECTATION compares the sample mean with."""
        q = 1.0 - p
        return q * self.kept(x, p) + p * self.dropped(p)

    def train_var(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Var[train output | x] in float64 (Bernoulli mixture of the kept and dropped values)."""
        q = 1.0 - p
        return p * q * (self.kept(x, p) - self.dropped(p)) ** 2

    # ---- units --------------------------------------------------------------------------------
    def unit_mask(self, elem_kept: torch.Tensor) -> torch.Tensor:
        """Reduce an element mask of an (N, C, *) or (N, *) input to one indicator per unit."""
        if self.unit == "element":
            return elem_kept
        if self.unit == "channel":
            return elem_kept.flatten(2)[..., 0] if elem_kept.dim() > 2 else elem_kept[..., 0]
        return elem_kept.flatten(1)[:, 0]


def rounding_tolerance(expected: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One rounding of `dtype` at the size of `expected` (float64), with room for the scale being
    rounded to the dtype first, as torch's CPU kernels do: 2·eps·|expected|."""
    return 2.0 * torch.finfo(dtype).eps * expected.abs()


def alpha_affine(p: float) -> tuple[float, float]:
    """AlphaDropout's a and b: kept = a·x + b, dropped = a·α' + b, keeping mean 0 and variance 1
    for a standard normal input (Klambauer et al. 2017, eq. 9)."""
    q = 1.0 - p
    a = 1.0 / math.sqrt(q * (1.0 + p * ALPHA_PRIME**2))
    b = -a * ALPHA_PRIME * p
    return a, b


CONTRACTS: dict[str, Contract] = {
    c.name: c
    for c in [
        Contract("inverted", "inverted", "element", "train: keep with prob 1-p, scale by 1/(1-p); eval: identity"),
        Contract("classic", "classic", "element", "train: keep with prob 1-p, no scaling; eval: multiply by 1-p"),
        Contract("channel", "inverted", "channel", "input (N, C, *): whole channels dropped, inverted scaling"),
        Contract("alpha", "alpha", "element", "AlphaDropout: kept a·x+b, dropped a·α'+b; N(0,1) keeps mean 0, var 1"),
        Contract("feature-alpha", "alpha", "channel", "FeatureAlphaDropout: alpha values, whole channels"),
        Contract("droppath", "inverted", "sample", "stochastic depth: whole samples (dim 0) dropped, inverted scaling"),
    ]
}


def get_contract(name: str) -> Contract:
    try:
        return CONTRACTS[name]
    except KeyError:
        raise ValueError(f"unknown contract {name!r}; choose one of {', '.join(CONTRACTS)}") from None
