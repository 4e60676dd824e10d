"""A compact GPT to check decoding against: dropout at the three places a GPT has it.

This is the built-in model of `dropcheck decode`, in the spirit of rasbt/LLMs-from-scratch's
`GPTModel`: small enough to read top to bottom, real enough that a dropout leaking into eval mode
changes its greedy tokens. Dropout sits after the embeddings, on the attention weights (explicit
softmax path, or `scaled_dot_product_attention`'s `dropout_p`) and before each residual add.

Every dropout is an `nn.Dropout` module, plus the SDPA path's `drop_p` attribute on
`MultiHeadAttention`: `zero_dropout` finds them by type, never by attribute name.

>>> model = GPTModel(GPTConfig()).eval()
>>> idx = torch.zeros(1, 4, dtype=torch.long)
>>> model(idx).shape                      # (B, T) -> (B, T, vocab_size)
torch.Size([1, 4, 256])
>>> generate_greedy(model, idx, max_new_tokens=3, context_size=64).shape
torch.Size([1, 7])
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass
class GPTConfig:
    """Sizes of the built-in GPT: tiny, so that a whole `dropcheck decode` run takes a second."""

    vocab_size: int = 256  # byte-level tokens: any byte string is a valid prompt
    context_length: int = 64  # positions the position embedding knows; prompts + new tokens fit in it
    emb_dim: int = 64  # width of the residual stream
    n_heads: int = 4  # emb_dim must divide by n_heads (head_dim = 16)
    n_layers: int = 2  # transformer blocks
    drop_emb: float = 0.1  # dropout after token + position embeddings
    drop_attn: float = 0.1  # dropout on the attention weights (after softmax)
    drop_resid: float = 0.1  # dropout on each sub-layer's output, before the residual add
    qkv_bias: bool = False  # GPT-2 has biases here; LLMs-from-scratch's default does not
    use_sdpa: bool = False  # attention through F.scaled_dot_product_attention instead of explicit softmax


class KVCache:
    """Keys and values of the positions seen so far, one (k, v) pair per layer.

    `pos` is how many positions the cache holds: the next token's absolute position, which the
    position embedding and the causal mask both need.
    """

    def __init__(self) -> None:
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.pos = 0


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention with dropout on the attention weights."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        assert cfg.emb_dim % cfg.n_heads == 0, f"emb_dim={cfg.emb_dim} must divide by n_heads={cfg.n_heads}"
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.emb_dim // cfg.n_heads
        self.use_sdpa = cfg.use_sdpa
        self.W_query = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.W_key = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.W_value = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(cfg.emb_dim, cfg.emb_dim)
        self.dropout = nn.Dropout(cfg.drop_attn)  # explicit path
        self.drop_p = cfg.drop_attn  # SDPA path: a float, since SDPA does its own dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, t, d = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B,T,D) -> (B,H,T,hd)

        q, k, v = heads(self.W_query(x)), heads(self.W_key(x)), heads(self.W_value(x))
        if cache is not None:
            if layer in cache.layers:
                past_k, past_v = cache.layers[layer]
                k = torch.cat([past_k, k], dim=2)  # (B,H,P,hd) + (B,H,T,hd) -> (B,H,P+T,hd)
                v = torch.cat([past_v, v], dim=2)
            cache.layers[layer] = (k, v)
        # Query i sits at absolute position offset+i and may see keys 0..offset+i.
        t_k = k.shape[2]
        offset = t_k - t
        future = torch.ones(t, t_k, dtype=torch.bool, device=x.device).triu(diagonal=1 + offset)  # (T,T_k)

        if self.use_sdpa:
            # SDPA applies dropout whenever dropout_p > 0, so the mode check is ours to make.
            ctx = F.scaled_dot_product_attention(
                q, k, v, attn_mask=~future, dropout_p=self.drop_p if self.training else 0.0
            )  # (B,H,T,hd)
        else:
            scores = q @ k.transpose(2, 3) / self.head_dim**0.5  # (B,H,T,hd) @ (B,H,hd,T_k) -> (B,H,T,T_k)
            scores = scores.masked_fill(future, float("-inf"))
            weights = self.dropout(torch.softmax(scores, dim=-1))  # (B,H,T,T_k)
            ctx = weights @ v  # (B,H,T,T_k) @ (B,H,T_k,hd) -> (B,H,T,hd)
        ctx = ctx.transpose(1, 2).reshape(b, t, d)  # (B,H,T,hd) -> (B,T,H,hd) -> (B,T,D)
        return self.out_proj(ctx)


class FeedForward(nn.Module):
    """The MLP of a block: widen 4x, GELU, narrow back."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim), nn.GELU(), nn.Linear(4 * cfg.emb_dim, cfg.emb_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + drop(attn(norm(x))), then x + drop(mlp(norm(x)))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.emb_dim)
        self.att = MultiHeadAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.emb_dim)
        self.ff = FeedForward(cfg)
        self.drop_resid = nn.Dropout(cfg.drop_resid)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.drop_resid(self.att(self.norm1(x), cache, layer))
        x = x + self.drop_resid(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab_size).

    With `cache=KVCache()` the call sees only the new tokens and remembers keys and values for
    the next call; without one it recomputes every position.
    """

    def __init__(self, cfg: GPTConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else GPTConfig()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_emb)
        # A ModuleList, not nn.Sequential: each block needs the cache and its own index.
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        _b, t = idx.shape
        start = cache.pos if cache is not None else 0
        if start + t > self.cfg.context_length:
            raise ValueError(f"{start + t} positions, but context_length is {self.cfg.context_length}")
        pos = torch.arange(start, start + t, device=idx.device)  # (T,)
        x = self.drop_emb(self.tok_emb(idx) + self.pos_emb(pos))  # (B,T,D) + (T,D) -> (B,T,D)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.pos += t
        return self.out_head(self.final_norm(x))  # (B,T,D) -> (B,T,V)


def zero_dropout(model: nn.Module) -> nn.Module:
    """Set every dropout probability of `model` to 0, in place: nn.Dropout modules and SDPA's `drop_p`.

    >>> m = zero_dropout(GPTModel())
    >>> {x.p for x in m.modules() if isinstance(x, nn.Dropout)}
    {0.0}
    """
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(m, MultiHeadAttention):
            m.drop_p = 0.0
    return model


@torch.no_grad()
def generate_greedy(
    model: nn.Module, idx: torch.Tensor, max_new_tokens: int, context_size: int, use_cache: bool = False
) -> torch.Tensor:
    """Append `max_new_tokens` argmax tokens to `idx` (B, T); returns (B, T + max_new_tokens).

    Without a cache each step re-reads the last `context_size` tokens. With `use_cache=True` it
    calls `generate_greedy_cached`, which needs the whole sequence to fit in `context_size`.

    >>> model = GPTModel().eval()
    >>> idx = torch.tensor([[1, 2, 3]])
    >>> torch.equal(generate_greedy(model, idx, 5, 64), generate_greedy(model, idx, 5, 64, use_cache=True))
    True
    """
    if use_cache:
        return generate_greedy_cached(model, idx, max_new_tokens, context_size)
    for _ in range(max_new_tokens):
        logits = model(idx[:, -context_size:])  # (B,T,V), T <= context_size
        next_tok = logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B,V) -> (B,1)
        idx = torch.cat([idx, next_tok], dim=1)  # (B,T) -> (B,T+1)
    return idx


@torch.no_grad()
def generate_greedy_cached(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, context_size: int) -> torch.Tensor:
    """Greedy decoding with a `KVCache`: the prompt once, then one new token per call."""
    if idx.shape[1] + max_new_tokens > context_size:
        # Cropping would shift every cached position; a sliding window is not worth it here.
        raise ValueError(
            f"prompt ({idx.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds context_size ({context_size})"
        )
    cache = KVCache()
    logits = model(idx, cache=cache)  # (B,T,V)
    for step in range(max_new_tokens):
        next_tok = logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B,V) -> (B,1)
        idx = torch.cat([idx, next_tok], dim=1)  # (B,T) -> (B,T+1)
        if step + 1 < max_new_tokens:
            logits = model(next_tok, cache=cache)  # (B,1) -> (B,1,V)
    return idx
