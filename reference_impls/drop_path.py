"""Drop-path (stochastic depth, Huang et al. 2016): drop whole samples of a residual branch.

train: keep each sample (index along dim 0) with probability 1-p, scale survivors by 1/(1-p);
eval:  return the input unchanged.
"""
import torch
from torch import nn

from reference_impls._validate import check_p


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    p = check_p(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    # One draw per sample, broadcast over every other dimension.
    keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= p
    return x * keep.to(x.dtype) * torch.tensor(1.0 / (1.0 - p), dtype=x.dtype, device=x.device)


class DropPath(nn.Module):
    def __init__(self, p: float = 0.1):
        super().__init__()
        self.p = check_p(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)
