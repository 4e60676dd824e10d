"""Classic dropout (Srivastava et al. 2014), scaled at test time.

train: keep each element independently with probability 1-p, no scaling;
eval:  multiply by 1-p, the expected value of the train-time mask.
"""
import torch
from torch import nn

from reference_impls._validate import check_p


def classic_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    p = check_p(p)
    if not training:
        return x * (1.0 - p)
    keep = torch.rand(x.shape, device=x.device) >= p
    return x * keep.to(x.dtype)


class ClassicDropout(nn.Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = check_p(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return classic_dropout(x, self.p, self.training)
