"""Deliberately broken dropout-using models: each must fail the DECODE-* property it targets.

Each is the built-in GPT with one real-world wiring bug, marked `# BUG:`. `BROKEN` maps each
property ID to the models built to fail it; tests/test_decoding.py asserts that verdict is FAIL.
All are zero-argument classes, so they also work as `tests/broken_models.py:NAME` TARGETs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dropcheck.gpt import GPTConfig, GPTModel, KVCache, MultiHeadAttention, zero_dropout


class _FunctionalDrop(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p)  # BUG: no training=self.training, and F.dropout defaults to True


class FunctionalDropoutGPT(GPTModel):
    """Embedding dropout written as `F.dropout(x, p)`: it drops in eval mode too."""

    def __init__(self) -> None:
        super().__init__()
        self.drop_emb = _FunctionalDrop(self.cfg.drop_emb)


class _SDPAAlwaysDrop(MultiHeadAttention):
    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            w(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B,T,D) -> (B,H,T,hd)
            for w in (self.W_query, self.W_key, self.W_value)
        )
        # BUG: dropout_p is not gated on self.training, and SDPA drops whenever dropout_p > 0
        ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.drop_p)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, t, d))  # (B,H,T,hd) -> (B,T,D)


class SDPAUnconditionalGPT(GPTModel):
    """SDPA attention whose `dropout_p` is passed whatever the mode (it also ignores the KV cache)."""

    def __init__(self) -> None:
        cfg = GPTConfig(use_sdpa=True)
        super().__init__(cfg)
        for block in self.blocks:
            block.att = _SDPAAlwaysDrop(cfg)


class _FlagGatedDropout(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self._drop_on = True  # BUG: a private switch that .train()/.eval() never touch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=self._drop_on)


class PrivateFlagGPT(GPTModel):
    """Residual dropout gated by `self._drop_on` instead of `self.training`: on in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        for block in self.blocks:
            block.drop_resid = _FlagGatedDropout(self.cfg.drop_resid)


class NeverAppliedGPT(GPTModel):
    """nn.Dropout(0.1) modules are built, but the rewritten forward never calls them."""

    def __init__(self) -> None:
        super().__init__(GPTConfig(drop_attn=0.0))  # keep attention (called below) free of dropout

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = cache.pos if cache is not None else 0
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)  # (T,)
        x = self.tok_emb(idx) + self.pos_emb(pos)  # BUG: self.drop_emb is never applied
        for i, block in enumerate(self.blocks):
            x = x + block.att(block.norm1(x), cache, i)  # BUG: nor block.drop_resid
            x = x + block.ff(block.norm2(x))
        if cache is not None:
            cache.pos += idx.shape[1]
        return self.out_head(self.final_norm(x))  # (B,T,D) -> (B,T,V)


class _BatchMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.5 * x.mean(dim=0, keepdim=True)  # BUG: every row sees the batch: (B,T,D) + (1,T,D)


class BatchMixingGPT(GPTModel):
    """Mixes the batch mean into the embeddings: a prompt decodes differently alone and in a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.drop_emb = nn.Sequential(self.drop_emb, _BatchMean())


class StaleCachePositionGPT(GPTModel):
    """With a KV cache every new token gets position 0 again: cached decoding drifts from recomputation."""

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        if cache is None:
            return super().forward(idx)
        seen = cache.pos
        cache.pos = 0  # BUG: the position embedding restarts at 0 for every cached call
        logits = super().forward(idx, cache)
        cache.pos = seen + idx.shape[1]
        return logits


class _DropoutMadeInForward(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Dropout(self.p)(x)  # BUG: a fresh module is in training mode, and .eval() never reaches it


class FreshDropoutGPT(GPTModel):
    """Embedding dropout built inside `forward` as `nn.Dropout(p)(x)`: it drops in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.drop_emb = _DropoutMadeInForward(self.cfg.drop_emb)


class EvalZeroesPGPT(GPTModel):
    """`.eval()` "switches dropout off" by setting every p to 0, and `.train()` never restores it."""

    def train(self, mode: bool = True) -> EvalZeroesPGPT:
        if not mode:
            zero_dropout(self)  # BUG: p is configuration, not mode; after this, train mode drops nothing
        return super().train(mode)


# property ID -> the models built to fail it (each may fail others too), as in tests/broken_impls.py.
BROKEN: dict[str, list[type[GPTModel]]] = {
    "DECODE-REPEAT": [FunctionalDropoutGPT, PrivateFlagGPT],
    "DECODE-RNG-FREE": [SDPAUnconditionalGPT, FreshDropoutGPT],
    "DECODE-TRAIN-ACTIVE": [NeverAppliedGPT],
    "DECODE-BATCH-INVARIANT": [BatchMixingGPT],
    "DECODE-KV-CACHE": [StaleCachePositionGPT],
    "DECODE-MODE-ROUNDTRIP": [EvalZeroesPGPT],
}
