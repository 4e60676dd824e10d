"""Hugging Face GPT-2 (random weights, a tiny config, no download) passes `run_decode` on CPU.

This is the real-world check of the adapter: logits come as `.logits`, and the KV cache is driven
through `use_cache=True` and the returned cache (`cache` in transformers 5, `past_key_values` before).
"""
import warnings

import pytest
import torch

from dropcheck.decoding import run_decode
from dropcheck.verdict import Status

transformers = pytest.importorskip("transformers")


def tiny_gpt2(pdrop: float = 0.1) -> torch.nn.Module:
    """GPT-2 with 2 layers of width 64 over 256 tokens; bos/eos inside the vocabulary (no config warning)."""
    config = transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=64,
        bos_token_id=0, eos_token_id=0, embd_pdrop=pdrop, attn_pdrop=pdrop, resid_pdrop=pdrop,
    )
    return transformers.GPT2LMHeadModel(config)


def test_hf_gpt2_passes_every_applicable_property():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecation notices
        verdicts = run_decode(tiny_gpt2)
    # P-ZERO needs the built-in GPT; CPU-CUDA needs both devices.
    skips = {"DECODE-P-ZERO", "DECODE-CPU-CUDA"}
    for v in verdicts:
        expected = Status.SKIP if v.property_id in skips else Status.PASS
        assert v.status is expected, f"{v.label}: expected {expected.value}, got {v.status.value}: {v.summary}"
    kv = next(v for v in verdicts if v.property_id == "DECODE-KV-CACHE")
    assert kv.evidence.get("cache") == "hf", f"expected the Hugging Face cache to be driven, got {kv.evidence.get('cache')}"


def test_hf_gpt2_without_dropout_skips_train_active():
    (v,) = run_decode(lambda: tiny_gpt2(pdrop=0.0), only=["DECODE-TRAIN-ACTIVE"], max_positions=8)
    assert v.status is Status.SKIP and v.summary.startswith("model has no dropout"), (
        f"expected skip 'model has no dropout ...', got {v.status.value}: {v.summary}"
    )
