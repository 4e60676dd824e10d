"""torch's own dropouts, exposed through dropcheck's two TARGET forms.

Modules built as NAME(p) are torch's classes themselves; functions are wrapped only where torch's
signature differs from f(input, p, training).
"""
import torch
from torch import nn
from torch.nn import functional as F

Dropout = nn.Dropout
Dropout1d = nn.Dropout1d
Dropout2d = nn.Dropout2d
Dropout3d = nn.Dropout3d
AlphaDropout = nn.AlphaDropout
FeatureAlphaDropout = nn.FeatureAlphaDropout


def functional_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    return F.dropout(x, p, training)


def native_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    # torch 2.13's native_dropout returns the input object itself for an empty tensor and attaches
    # a grad_fn to it, which breaks backward through a leaf (dropcheck's GRAD-MASK finds this; see
    # raw_native_dropout and tests/test_found_in_the_wild.py). Empty inputs skip the op here.
    if x.numel() == 0:
        return x.clone()
    # native_dropout returns (output, mask); `train` is its name for `training`.
    return torch.native_dropout(x, p, training)[0]


def raw_native_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """torch.native_dropout with no workaround: fails GRAD-MASK on empty inputs (torch 2.13)."""
    return torch.native_dropout(x, p, training)[0]
