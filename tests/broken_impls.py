"""Deliberately broken dropouts: each breaks one property, and a test proves dropcheck catches it.

A property that no broken implementation fails is untested, so `BROKEN` below maps every property
ID to at least one implementation here. All are plain functions f(x, p, training) unless the bug
lives in module state (mode switching), in which case they are nn.Module classes built as NAME(p).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _keep(x: torch.Tensor, p: float) -> torch.Tensor:
    return torch.rand(x.shape, device=x.device) >= p


def _scale(p: float) -> float:
    return 0.0 if p == 1 else 1.0 / (1.0 - p)


def _deterministic(x: torch.Tensor, p: float, training: bool) -> torch.Tensor | None:
    """The one right answer in eval mode, at p = 0 and at p = 1 (None otherwise). The statistical
    bugs below return it there, so that each fails only the statistical property it is aimed at."""
    if not training or p == 0:
        return x
    return torch.zeros_like(x) if p == 1 else None


def _validated(p: float) -> float:
    if math.isnan(p) or not 0 <= p <= 1:
        raise ValueError(f"p={p}")
    return p


# ---- exact-property bugs --------------------------------------------------------------------------
def no_scaling(x, p, training):
    """Inverted dropout that forgets 1/(1-p): survivors keep x (SUPPORT-SCALE, EXPECTATION)."""
    _validated(p)
    return x * _keep(x, p).to(x.dtype) if training else x


def scale_in_eval_too(x, p, training):
    """Scales by 1/(1-p) in eval as well (EVAL-IDENTITY)."""
    _validated(p)
    if not training:
        return x * _scale(p) if p < 1 else torch.zeros_like(x)
    return x * _keep(x, p).to(x.dtype) * _scale(p)


def keep_drop_swapped(x, p, training):
    """Keeps with probability p instead of 1-p: invisible at p=0.5 (DROP-RATE, P-ZERO)."""
    _validated(p)
    if not training or p == 1:
        return x if not training else torch.zeros_like(x)
    return x * (torch.rand(x.shape, device=x.device) < p).to(x.dtype) * _scale(p)


def active_in_eval(x, p, training):
    """`F.dropout(x, p)`: `training` defaults to True, so eval drops too (EVAL-IDENTITY)."""
    return F.dropout(x, p)


def p_one_gives_nan(x, p, training):
    """x·mask/(1-p) with no special case: 0·inf = NaN at p=1 (P-ONE)."""
    _validated(p)
    if not training:
        return x
    with torch.no_grad():
        scale = torch.tensor(1.0, dtype=x.dtype) / (1.0 - torch.tensor(p, dtype=x.dtype))
    return x * _keep(x, p).to(x.dtype) * scale


def no_p_validation(x, p, training):
    """Accepts any p: p=1.5 'works' and returns garbage (P-INVALID)."""
    if not training:
        return x
    return x * (torch.rand(x.shape, device=x.device) >= p).to(x.dtype) * (0.0 if p == 1 else 1.0 / (1.0 - p))


def in_place(x, p, training):
    """Writes the result into the caller's tensor (INPUT-UNTOUCHED)."""
    _validated(p)
    if not training:
        return x
    with torch.no_grad():
        return x.mul_(_keep(x, p).to(x.dtype) * _scale(p))


def upcasts_dtype(x, p, training):
    """Computes in float32 and forgets to cast back (KEEPS-META)."""
    _validated(p)
    x32 = x.float()
    return x32 * _keep(x, p).float() * _scale(p) if training else x32


def grad_not_masked(x, p, training):
    """Forward is right, but the mask is hidden from autograd: grad = 1 everywhere (GRAD-MASK)."""
    _validated(p)
    if not training:
        return x
    y = x * _keep(x, p).to(x.dtype) * _scale(p)
    return x + (y - x).detach()


def backward_fresh_mask(x, p, training):
    """Backward draws its own mask instead of reusing the forward's (GRAD-MASK)."""
    _validated(p)
    if not training:
        return x
    return _FreshMaskDropout.apply(x, p)


class _FreshMaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        ctx.p = p
        return x * _keep(x, p).to(x.dtype) * _scale(p)

    @staticmethod
    def backward(ctx, grad):
        return grad * _keep(grad, ctx.p).to(grad.dtype) * _scale(ctx.p), None


def p_zero_not_identity(x, p, training):
    """Divides by (1 - p + 1e-6) 'for stability': p=0 is no longer the identity (P-ZERO)."""
    _validated(p)
    if not training:
        return x
    return x * _keep(x, p).to(x.dtype) / (1.0 - p + 1e-6)


def eval_draws_random(x, p, training):
    """Eval returns x but draws a random number first, shifting the user's RNG stream (EVAL-RNG-UNTOUCHED)."""
    _validated(p)
    if not training:
        torch.rand(1)
        return x
    return x * _keep(x, p).to(x.dtype) * _scale(p)


_private_generator = torch.Generator().manual_seed(12345)


def private_unseeded_generator(x, p, training):
    """Draws from its own generator, so torch.manual_seed does not replay it (SEED-REPLAY)."""
    _validated(p)
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape, generator=_private_generator) >= p
    return x * keep.to(device=x.device, dtype=x.dtype) * _scale(p)


class StickyEval(nn.Module):
    """Once switched to eval, never drops again: .train() after .eval() is ignored (MODE-ROUNDTRIP)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = _validated(p)
        self.disabled = False

    def train(self, mode: bool = True):
        if not mode:
            self.disabled = True
        return super().train(mode)

    def forward(self, x):
        if not self.training or self.disabled:
            return x
        return x * _keep(x, self.p).to(x.dtype) * _scale(self.p)


def elementwise_under_channel(x, p, training):
    """Claims channel dropout but drops single elements (MASK-UNIT)."""
    return F.dropout(x, _validated(p), training)


# ---- statistical bugs -------------------------------------------------------------------------------
def batch_shared_mask(x, p, training):
    """One mask for the whole batch: every row drops the same positions (INDEP-ROWS)."""
    _validated(p)
    if not training or x.dim() == 0 or p in (0, 1):
        return x if not training or p == 0 else torch.zeros_like(x)
    keep = torch.rand((1, *x.shape[1:]), device=x.device) >= p
    return x * keep.to(x.dtype) * _scale(p)


_mask_cache: dict = {}


def cached_mask(x, p, training):
    """Draws a mask once per (shape, p) and reuses it on every call (INDEP-CALLS, SEED-REPLAY)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    key = (tuple(x.shape), p, x.device.type)
    if key not in _mask_cache:
        _mask_cache[key] = _keep(x, p)
    return x * _mask_cache[key].to(x.dtype) * _scale(p)


def positional_bias(x, p, training):
    """Drops more in the first half of the positions than in the second; the overall rate is p
    (RATE-HOMOGENEITY)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    flat = torch.rand(x.numel(), device=x.device)
    rate = torch.full_like(flat, p)
    half = x.numel() // 2
    shift = 0.1 * min(p, 1 - p)
    rate[:half] += shift
    rate[half:2 * half] -= shift
    keep = (flat >= rate).reshape(x.shape)
    return x * keep.to(x.dtype) * _scale(p)


def tiled_mask(x, p, training, period: int = 64):
    """Draws `period` decisions and tiles them over the tensor (INDEP-POSITIONS)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    tile = torch.rand(period, device=x.device) >= p
    keep = tile.repeat(x.numel() // period + 1)[: x.numel()].reshape(x.shape)
    return x * keep.to(x.dtype) * _scale(p)


def value_dependent(x, p, training):
    """Drops negative inputs more often than positive ones; overall rate p (INDEP-INPUT)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    shift = 0.1 * min(p, 1 - p)
    rate = torch.where(x < 0, p + shift, p - shift)
    keep = torch.rand(x.shape, device=x.device) >= rate
    return x * keep.to(x.dtype) * _scale(p)


# property ID → (implementation, contract): each must fail that property.
# ---- bugs on one calling path only (found by an adversarial review) ------------------------------------
_path_cache: dict = {}


def _inverted(x: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    return x * keep.to(x.dtype) * _scale(p)


def _mask_cached_when(cached: bool, path: str, x, p, training):
    """Inverted dropout that reuses one mask per shape on `path` whenever `cached` holds."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    if not cached:
        return _inverted(x, _keep(x, p), p)
    return _inverted(x, _path_cache.setdefault((path, tuple(x.shape), p), _keep(x, p)), p)


def cached_mask_when_grad(x, p, training):
    """Reuses one mask per shape whenever the input requires grad (SEED-REPLAY)."""
    return _mask_cached_when(x.requires_grad, "grad", x, p, training)


def cached_mask_under_no_grad(x, p, training):
    """Reuses one mask per shape under torch.no_grad(), as a Monte Carlo inference path might (SEED-REPLAY)."""
    return _mask_cached_when(not torch.is_grad_enabled(), "no_grad", x, p, training)


def biased_when_grad(x, p, training):
    """Drops at p + 0.005 when the input requires grad (DROP-RATE)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    q = min(1.0, p + 0.005) if x.requires_grad else p
    return _inverted(x, torch.rand(x.shape, device=x.device) >= q, p)


def rows_share_mask_when_strided(x, p, training):
    """One mask for all rows when the input is not contiguous (INDEP-ROWS)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    if x.is_contiguous() or x.dim() < 2:
        return _inverted(x, _keep(x, p), p)
    return _inverted(x, torch.rand((1, *x.shape[1:]), device=x.device) >= p, p)


def biased_after_first_row(x, p, training):
    """Rows after the first drop at p + 0.1·min(p, q): the first row is handled apart (RATE-HOMOGENEITY)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    rate = torch.full(x.shape, p, device=x.device)
    if x.dim() >= 2:
        rate[1:] += 0.1 * min(p, 1 - p)
    return _inverted(x, torch.rand(x.shape, device=x.device) >= rate, p)


def eval_drops_large_inputs(x, p, training):
    """Eval mode drops as train mode does once the input has more than 4096 elements (EVAL-IDENTITY)."""
    _validated(p)
    if (not training and x.numel() <= 4096) or p == 0:
        return x
    return torch.zeros_like(x) if p == 1 else _inverted(x, _keep(x, p), p)


def in_place_on_large_inputs(x, p, training):
    """Writes the result into the caller's tensor once it has more than 4096 elements (INPUT-UNTOUCHED)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    if x.numel() <= 4096:
        return _inverted(x, _keep(x, p), p)
    with torch.no_grad():
        return x.mul_(_keep(x, p).to(x.dtype) * _scale(p))



def tail_loop_biased(x, p, training, width: int = 8):
    """A vectorised kernel's scalar tail loop, the last numel % 8 units, drops at p/2 (RATE-EDGES)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    rate = torch.full((x.numel(),), p, device=x.device)
    rate[x.numel() // width * width:] = p / 2
    return _inverted(x, torch.rand(x.shape, device=x.device) >= rate.view(x.shape), p)


def head_loop_never_drops(x, p, training, width: int = 8):
    """The units peeled off before a vectorised loop, the first numel % 8, are never dropped (RATE-EDGES)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    keep = _keep(x, p).flatten()
    keep[: x.numel() % width] = True
    return _inverted(x, keep.view(x.shape), p)


def counter_wraps_at_2_18(x, p, training, period: int = 1 << 18):
    """A counter-based generator whose counter wraps every 2^18 units, so the mask repeats with that
    period (INDEP-POSITIONS): twice in default's one-call sample of 2^19 units, too few repeats for
    its periodogram, and never within the other samples' calls of 2^17."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    n = x.numel()
    tile = torch.rand(min(n, period), device=x.device) >= p
    return _inverted(x, tile.repeat(-(-n // period))[:n].view(x.shape), p)


def value_striped_rate(x, p, training):
    """Drops at p ± min(p, q)/2 in alternating stripes 0.05 decades wide in |x|, except for |x| in
    [1, 2], where the other samples' inputs lie (INDEP-INPUT): each input bin, a sign and a range of
    1.5 decades, still averages p; only neighbouring values agree."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    a = x.detach().abs().double()
    stripe = torch.where(torch.floor(a.clamp_min(1e-30).log10() * 20) % 2 == 0, 1.0, -1.0)
    rate = (p + 0.5 * min(p, 1 - p) * stripe * ((a < 1) | (a > 2))).to(torch.float32)
    return _inverted(x, torch.rand(x.shape, device=x.device) >= rate, p)


def batch_of_one_never_dropped(x, p, training):
    """Drop path that returns a batch of one sample unchanged, as an inference shortcut would
    (SUPPORT-SCALE: neither kept, x/(1-p), nor dropped)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    if x.dim() and x.shape[0] == 1:
        return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= p
    return x * keep.to(x.dtype) * _scale(p)


def channel_dropout_elementwise_on_3d(x, p, training):
    """Channel dropout, right for (N, C, H, W) and (N, C, D, H, W), that drops single elements of an
    (N, C, L) input (MASK-UNIT: the probe picks the highest rank, so only a fixed input at the
    other ranks the target takes shows it)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    mask_shape = x.shape if x.dim() == 3 else (*x.shape[:2], *([1] * (x.dim() - 2)))
    return x * (torch.rand(mask_shape, device=x.device) >= p).to(x.dtype) * _scale(p)


def int_p_as_percent(x, p, training):
    """Reads an int p as a percentage, so `nn.Dropout(1)` drops 1% (P-ONE)."""
    if isinstance(p, int) and not isinstance(p, bool):
        p = p / 100
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    return x * _keep(x, p).to(x.dtype) * _scale(p)


BROKEN: dict[str, list[tuple[object, str]]] = {
    "EVAL-IDENTITY": [(scale_in_eval_too, "inverted"), (active_in_eval, "inverted"), (eval_drops_large_inputs, "inverted")],
    "SUPPORT-SCALE": [(no_scaling, "inverted"), (batch_of_one_never_dropped, "droppath")],
    "MASK-UNIT": [(elementwise_under_channel, "channel"), (channel_dropout_elementwise_on_3d, "channel")],
    "P-ZERO": [(p_zero_not_identity, "inverted"), (keep_drop_swapped, "inverted")],
    "P-ONE": [(p_one_gives_nan, "inverted"), (int_p_as_percent, "inverted")],
    "P-INVALID": [(no_p_validation, "inverted")],
    "KEEPS-META": [(upcasts_dtype, "inverted")],
    "INPUT-UNTOUCHED": [(in_place, "inverted"), (in_place_on_large_inputs, "inverted")],
    "GRAD-MASK": [(grad_not_masked, "inverted"), (backward_fresh_mask, "inverted")],
    "SEED-REPLAY": [(private_unseeded_generator, "inverted"), (cached_mask, "inverted"),
                    (cached_mask_when_grad, "inverted"), (cached_mask_under_no_grad, "inverted")],
    "MODE-ROUNDTRIP": [(StickyEval, "inverted")],
    "EVAL-RNG-UNTOUCHED": [(eval_draws_random, "inverted")],
    "DROP-RATE": [(keep_drop_swapped, "inverted"), (biased_when_grad, "inverted")],
    "EXPECTATION": [(no_scaling, "inverted")],
    "RATE-HOMOGENEITY": [(positional_bias, "inverted"), (biased_after_first_row, "inverted")],
    "RATE-EDGES": [(tail_loop_biased, "inverted"), (head_loop_never_drops, "inverted")],
    "INDEP-POSITIONS": [(tiled_mask, "inverted"), (counter_wraps_at_2_18, "inverted")],
    "INDEP-ROWS": [(batch_shared_mask, "inverted"), (rows_share_mask_when_strided, "inverted")],
    "INDEP-CALLS": [(cached_mask, "inverted")],
    "INDEP-INPUT": [(value_dependent, "inverted"), (value_striped_rate, "inverted")],
}


# ---- subtle bugs: the power catalogue (tests/test_power_catalogue.py) -------------------------------
def quantized_8bit(x, p, training):
    """Decides keep on 8-bit random numbers, as fused GPU kernels do: the drop rate becomes
    floor(256·p)/256 (0.09766 at p=0.1) (DROP-RATE)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    r = torch.randint(0, 256, x.shape, device=x.device)
    keep = r >= math.floor(256 * p)
    return x * keep.to(x.dtype) * _scale(p)


def rate_off_by_0004(x, p, training):
    """Drops with probability p + 0.004 (DROP-RATE)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    return x * (torch.rand(x.shape, device=x.device) >= min(1.0, p + 0.004)).to(x.dtype) * _scale(p)


_last_mask: dict = {}


def shifted_reuse(x, p, training):
    """Each call reuses the previous call's mask shifted by one position (INDEP-CALLS)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    key = (tuple(x.shape), p, x.device.type)
    prev = _last_mask.get(key)
    keep = _keep(x, p) if prev is None else prev.flatten().roll(1).reshape(x.shape)
    _last_mask[key] = keep
    return x * keep.to(x.dtype) * _scale(p)


def exact_count(x, p, training):
    """Drops exactly round(p·N) elements every call: right rate, no binomial spread (INDEP-CALLS)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    n = x.numel()
    keep = torch.ones(n, dtype=torch.bool, device=x.device)
    keep[torch.randperm(n, device=x.device)[: round(p * n)]] = False
    return x * keep.reshape(x.shape).to(x.dtype) * _scale(p)


def jittered_survivors(x, p, training):
    """Survivors scaled by 1/(1-p) times a ±1% jitter (SUPPORT-SCALE)."""
    _validated(p)
    if (y := _deterministic(x, p, training)) is not None:
        return y
    jitter = 1.0 + 0.01 * (2 * torch.rand(x.shape, device=x.device) - 1)
    return x * _keep(x, p).to(x.dtype) * (_scale(p) * jitter).to(x.dtype)


# (implementation, the property expected to catch it, contract): each must fail the default profile
# for every seed in the catalogue test.
POWER_CATALOGUE: list[tuple[object, str, str]] = [
    (quantized_8bit, "DROP-RATE", "inverted"),
    (rate_off_by_0004, "DROP-RATE", "inverted"),
    (tiled_mask, "INDEP-POSITIONS", "inverted"),
    (shifted_reuse, "INDEP-CALLS", "inverted"),
    (exact_count, "INDEP-CALLS", "inverted"),
    (jittered_survivors, "SUPPORT-SCALE", "inverted"),
    (value_dependent, "INDEP-INPUT", "inverted"),
    (backward_fresh_mask, "GRAD-MASK", "inverted"),
]
