"""Inverted dropout: the definition used by every modern framework.

train: keep each element independently with probability 1-p and scale survivors by 1/(1-p),
       so the expected output equals the input;
eval:  return the input unchanged.
"""
import torch
from torch import nn

from reference_impls._validate import check_p


def inverted_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    p = check_p(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)  # 1/(1-p) would be inf, and 0·inf is NaN
    keep = torch.rand(x.shape, device=x.device) >= p  # P(keep) = 1 - p
    # The scale is rounded to x's dtype first, as torch does; the product is then one rounding.
    return x * keep.to(x.dtype) * torch.tensor(1.0 / (1.0 - p), dtype=x.dtype, device=x.device)


class InvertedDropout(nn.Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = check_p(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return inverted_dropout(x, self.p, self.training)
