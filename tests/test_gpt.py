"""The built-in GPT: shapes, its two attention paths, its KV cache, and where its dropout lives."""
import pytest
import torch
from torch import nn

from dropcheck.gpt import GPTConfig, GPTModel, KVCache, generate_greedy, generate_greedy_cached, zero_dropout
from dropcheck.seeding import seeded

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA not available: torch.cuda.is_available() is False on this machine"
)


def _pair(seed: int = 0) -> tuple[GPTModel, GPTModel]:
    """An explicit-softmax GPT and an SDPA GPT with the same (copied) weights, both in eval mode."""
    with seeded(seed):
        explicit = GPTModel(GPTConfig(use_sdpa=False))
    sdpa = GPTModel(GPTConfig(use_sdpa=True))
    sdpa.load_state_dict(explicit.state_dict())
    return explicit.eval(), sdpa.eval()


def _prompts(b: int = 3, t: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (b, t), generator=torch.Generator().manual_seed(seed))


def test_forward_maps_ids_to_logits():
    model = GPTModel().eval()
    logits = model(_prompts(2, 7))
    assert logits.shape == (2, 7, 256), f"logits shape: expected (B, T, V) = (2, 7, 256), got {tuple(logits.shape)}"


def test_explicit_and_sdpa_attention_agree_in_eval():
    explicit, sdpa = _pair()
    x = _prompts()
    a, b = explicit(x), sdpa(x)
    err = (a - b).abs().max().item()
    # Same maths, different kernels: float32 rounding only (measured ~6e-7 on logits of size ~1).
    assert err < 1e-5, f"explicit vs SDPA eval logits: expected max |Δ| < 1e-5, got {err:.3g} [_pair(seed=0)]"


@pytest.mark.parametrize("use_sdpa", [False, True], ids=["explicit", "sdpa"])
def test_cache_decoding_matches_recomputation(use_sdpa):
    with seeded(3):
        model = GPTModel(GPTConfig(use_sdpa=use_sdpa)).eval()
    x = _prompts(3, 8)
    full = generate_greedy(model, x, max_new_tokens=20, context_size=64)
    cached = generate_greedy(model, x, max_new_tokens=20, context_size=64, use_cache=True)
    assert torch.equal(full, cached), f"use_sdpa={use_sdpa}: expected cached tokens == recomputed, got\n{full}\nvs\n{cached}"


@pytest.mark.parametrize("use_sdpa", [False, True], ids=["explicit", "sdpa"])
def test_cache_logits_match_recomputation(use_sdpa):
    with seeded(4):
        model = GPTModel(GPTConfig(use_sdpa=use_sdpa)).eval()
    x = _prompts(2, 12)
    cache = KVCache()
    first = model(x[:, :5], cache=cache)  # prompt, then token by token
    rest = [model(x[:, i : i + 1], cache=cache) for i in range(5, 12)]
    stepped = torch.cat([first, *rest], dim=1)
    err = (stepped - model(x)).abs().max().item()
    assert cache.pos == 12, f"cache.pos: expected 12 after 12 tokens, got {cache.pos}"
    assert err < 1e-5, f"use_sdpa={use_sdpa}: cached vs full logits, expected max |Δ| < 1e-5, got {err:.3g}"


def test_greedy_crops_the_context():
    model = GPTModel(GPTConfig(context_length=16)).eval()
    out = generate_greedy(model, _prompts(1, 14), max_new_tokens=6, context_size=16)  # 20 > 16 positions
    assert out.shape == (1, 20), f"expected (1, 20) tokens, got {tuple(out.shape)}"
    with pytest.raises(ValueError, match="exceeds context_size"):
        generate_greedy_cached(model, _prompts(1, 14), max_new_tokens=6, context_size=16)


def test_dropout_sits_in_three_places_as_modules():
    cfg = GPTConfig()
    model = GPTModel(cfg)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    # One after the embeddings, and per block one on attention weights and one before the residual adds.
    expected = 1 + 2 * cfg.n_layers
    assert len(drops) == expected, f"nn.Dropout modules: expected {expected}, got {len(drops)}"
    assert {m.p for m in drops} == {0.1}, f"dropout p: expected all 0.1, got {sorted({m.p for m in drops})}"


@pytest.mark.parametrize("use_sdpa", [False, True], ids=["explicit", "sdpa"])
def test_train_mode_drops_and_eval_mode_does_not(use_sdpa):
    model = GPTModel(GPTConfig(use_sdpa=use_sdpa))
    x = _prompts()
    with seeded(5):
        model.train()
        t1, t2 = model(x), model(x)
        model.eval()
        e1, e2 = model(x), model(x)
    assert not torch.equal(t1, t2), f"use_sdpa={use_sdpa}: expected two train calls to differ, got equal logits"
    assert torch.equal(e1, e2), f"use_sdpa={use_sdpa}: expected eval calls bitwise equal, got max |Δ| {(e1 - e2).abs().max():.3g}"


@pytest.mark.parametrize("use_sdpa", [False, True], ids=["explicit", "sdpa"])
def test_zero_dropout_makes_train_equal_eval(use_sdpa):
    model = zero_dropout(GPTModel(GPTConfig(use_sdpa=use_sdpa)))
    x = _prompts()
    with seeded(6):
        train = model.train()(x)
    evals = model.eval()(x)
    assert torch.equal(train, evals), f"use_sdpa={use_sdpa}: with every p = 0, expected train == eval bitwise"


def test_eval_forward_draws_no_random_numbers():
    model = GPTModel(GPTConfig(use_sdpa=True)).eval()
    before = torch.get_rng_state()
    model(_prompts())
    assert torch.equal(before, torch.get_rng_state()), "an eval forward advanced torch's CPU RNG (expected untouched)"


@pytest.mark.cuda
@requires_cuda
def test_explicit_and_sdpa_agree_on_cuda():
    explicit, sdpa = _pair()
    x = _prompts().cuda()
    a, b = explicit.cuda()(x), sdpa.cuda()(x)
    err = (a - b).abs().max().item()
    assert err < 1e-4, f"explicit vs SDPA eval logits on CUDA: expected max |Δ| < 1e-4, got {err:.3g}"


@pytest.mark.cuda
@requires_cuda
def test_cache_decoding_matches_recomputation_on_cuda():
    from dropcheck.models import compare_tie_aware, greedy  # tie-aware: CUDA kernels differ by shape
    from dropcheck.verdict import Status

    x = _prompts().cuda()
    for model in (m.cuda() for m in _pair()):
        status, summary, _ = compare_tie_aware(greedy(model, x, 10), greedy(model, x, 10, use_cache=True), "cuda")
        assert status is Status.PASS, f"use_sdpa={model.cfg.use_sdpa} on CUDA: expected cached == recomputed, got {summary}"
