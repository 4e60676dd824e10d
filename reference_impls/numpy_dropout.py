"""Inverted dropout computed in numpy, with numpy's global RNG, behind torch's interface.

The mask and the scaling happen in numpy; a small autograd Function carries the same mask into
the backward pass, as a hand-written framework op would.
"""
import numpy as np
import torch

from reference_impls._validate import check_p


class _NumpyDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = np.asarray(np.random.random_sample(tuple(x.shape)) >= p)  # 0-d stays an array
        # numpy has no bfloat16: compute in float32 (exact for fp16/bf16 inputs), round once.
        work_dtype = np.float64 if x.dtype == torch.float64 else np.float32
        scale = np.asarray(1.0 / (1.0 - p), dtype=work_dtype)
        xs = x.detach().cpu().to(torch.float64 if work_dtype == np.float64 else torch.float32).numpy()
        y = xs * keep * scale
        ctx.save_for_backward(torch.from_numpy(keep).to(x.device))
        ctx.scale = float(scale)
        return torch.from_numpy(np.asarray(y)).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad * keep.to(grad.dtype) * ctx.scale, None


def numpy_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    p = check_p(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    return _NumpyDropout.apply(x, p)
