"""Models under test for `dropcheck decode`: resolving a model TARGET, reading its logits, finding
its dropout, and greedy decoding with or without a KV cache, plus the tie-aware comparison of two
decodes. The DECODE-* properties themselves are in dropcheck/decoding.py.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dropcheck.context import differs
from dropcheck.gpt import GPTModel, KVCache
from dropcheck.seeding import seeded
from dropcheck.targets import TargetError, describe_object, load_object
from dropcheck.verdict import Status

# A disagreement between two different computations is a near-tie when the reference's margin
# between the two tokens is at most rtol·max(1, max|logit|): a few ulps of the logits' scale,
# the size of a reordered float reduction (float32's ulp is 1.2e-7; half types' 1e-3).
TIE_RTOL: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 1e-2,
}

# --- the model under test --------------------------------------------------------------------


@dataclasses.dataclass
class ModelTarget:
    """A resolved model TARGET: `build(seed, device)` makes a fresh model with reproducible weights."""

    spec: str  # as the user wrote it, for replay lines; "" for the built-in GPT
    make: Callable[[], Any]

    def build(self, seed: int, device: str) -> nn.Module:
        with seeded(seed):
            model = self.make()
        if not isinstance(model, nn.Module):
            raise TargetError(f"TARGET {self.spec!r} built a {type(model).__name__}, not an nn.Module")
        return model.to(device)


def resolve_model(target: str | Any | None) -> ModelTarget:
    """Resolve a model TARGET: None (the built-in GPT), `pkg.mod:NAME`, `file.py:NAME`, or the object.

    NAME is an nn.Module subclass built with no arguments, a zero-argument factory, or a module
    instance (deep-copied for each check, so the checks cannot disturb it or each other).

    >>> resolve_model(None).build(0, "cpu").__class__.__name__
    'GPTModel'
    >>> resolve_model("torch.nn:Linear")
    Traceback (most recent call last):
    ...
    dropcheck.targets.TargetError: TARGET 'torch.nn:Linear' is an nn.Module subclass that needs constructor arguments (in_features, out_features); give a zero-argument factory instead
    """
    if target is None:
        return ModelTarget("", GPTModel)
    spec = target if isinstance(target, str) else describe_model(target)
    obj = load_object(target) if isinstance(target, str) else target
    if isinstance(obj, nn.Module):
        return ModelTarget(spec, lambda: copy.deepcopy(obj))
    if inspect.isclass(obj) and not issubclass(obj, nn.Module):
        raise TargetError(f"TARGET {spec!r} is a class but not an nn.Module subclass")
    if not callable(obj):
        raise TargetError(
            f"TARGET {spec!r} is of type {type(obj).__name__}: expected an nn.Module subclass or a zero-argument factory"
        )
    missing = _required_params(obj)
    if missing:
        what = "an nn.Module subclass" if inspect.isclass(obj) else "a function"
        raise TargetError(
            f"TARGET {spec!r} is {what} that needs constructor arguments ({', '.join(missing)}); "
            "give a zero-argument factory instead"
        )
    return ModelTarget(spec, obj)


def _required_params(obj: Callable) -> list[str]:
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: give them the benefit of the doubt
        return []
    return [
        p.name
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def describe_model(obj: Any) -> str:
    if isinstance(obj, nn.Module):  # its weights are not in any file: say so rather than name the class
        return f"<{describe_object(type(obj))} instance>"
    return describe_object(obj)


class NotLogitsError(ValueError):
    """A forward pass returned something other than logits (B, T, V): the TARGET is not a language
    model (a dropout layer, an encoder), which `dropcheck decode` reports as exit 2, not as errors."""


def logits_of(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """One forward pass, (B, T) -> (B, T, V): a plain tensor, or `.logits` (Hugging Face outputs)."""
    with torch.no_grad():
        return _unwrap(model(idx), idx)


def _unwrap(out: Any, idx: torch.Tensor) -> torch.Tensor:
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise NotLogitsError(f"model returned {type(out).__name__}; expected logits (B, T, V) or an object with .logits")
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(idx.shape):
        hint = " (a dropout layer is checked with `dropcheck check`, not `decode`)" if logits.shape == idx.shape else ""
        raise NotLogitsError(
            f"model output has shape {tuple(logits.shape)}; expected (B, T, V) with (B, T) = {tuple(idx.shape)}{hint}"
        )
    return logits


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """Dropout modules found by type: torch's dropout classes, and leaf modules whose class is named *Dropout*.

    Only leaves match by name: a model called `NoDropoutLM` or `GPTWithDropout` is not a dropout layer.
    """
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.dropout._DropoutNd) or ("Dropout" in type(m).__name__ and not any(m.children()))
    ]


def active_dropout(model: nn.Module) -> list[nn.Module]:
    """Dropout modules with p > 0, or whose p dropcheck cannot read (then assumed active)."""
    active = []
    for m in dropout_modules(model):
        p = getattr(m, "p", None)
        if not isinstance(p, (int, float)) or p > 0:
            active.append(m)
    return active


# --- greedy decoding, with or without a cache -------------------------------------------------


@dataclasses.dataclass
class Decode:
    """The result of greedy decoding: new tokens (B, N) and the logits each was chosen from (B, N, V)."""

    tokens: torch.Tensor
    logits: torch.Tensor

    @staticmethod
    def cat(parts: list[Decode]) -> Decode:
        return Decode(torch.cat([p.tokens for p in parts]), torch.cat([p.logits for p in parts]))


def cache_kind(model: nn.Module) -> str | None:
    """How dropcheck can drive the model's KV cache: "builtin", "hf", or None (it cannot)."""
    if isinstance(model, GPTModel):
        return "builtin"
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    if "use_cache" in params and ("cache" in params or "past_key_values" in params):
        return "hf"
    return None


def _stepper(model: nn.Module, use_cache: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from the whole sequence so far (B, T) to the next-token logits (B, V)."""
    if not use_cache:
        return lambda idx: logits_of(model, idx)[:, -1, :]
    kind = cache_kind(model)
    if kind is None:
        raise TypeError(f"dropcheck cannot drive a KV cache of {type(model).__name__}")
    # transformers 5 renamed past_key_values to cache; older releases only know the old name.
    hf_key = "cache" if kind == "hf" and "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    state: dict[str, Any] = {"cache": KVCache() if kind == "builtin" else None, "seen": 0}

    def step(idx: torch.Tensor) -> torch.Tensor:
        new = idx[:, state["seen"] :]  # only the tokens the cache has not seen: (B, T) -> (B, T_new)
        state["seen"] = idx.shape[1]
        if kind == "builtin":
            return _unwrap(model(new, cache=state["cache"]), new)[:, -1, :]
        out = model(new, use_cache=True, **({} if state["cache"] is None else {hf_key: state["cache"]}))
        state["cache"] = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
        if state["cache"] is None:
            raise TypeError(f"{type(model).__name__} was called with use_cache=True but returned no cache")
        return _unwrap(out, new)[:, -1, :]

    return step


def greedy(model: nn.Module, prompts: torch.Tensor, n_new: int, use_cache: bool = False) -> Decode:
    """Greedy decoding of `n_new` tokens after `prompts` (B, T), keeping each step's logits (on CPU).

    >>> m = GPTModel().eval()
    >>> greedy(m, torch.tensor([[1, 2]]), 3).tokens.shape
    torch.Size([1, 3])
    """
    step = _stepper(model, use_cache)
    idx, tokens, logits = prompts, [], []
    with torch.no_grad():
        for _ in range(n_new):
            last = step(idx)  # (B, V)
            nxt = last.argmax(dim=-1)  # (B,)
            tokens.append(nxt.cpu())
            logits.append(last.detach().cpu())
            idx = torch.cat([idx, nxt[:, None]], dim=1)  # (B, T) -> (B, T+1)
    return Decode(torch.stack(tokens, dim=1), torch.stack(logits, dim=1))  # (B, N), (B, N, V)


# --- comparisons ------------------------------------------------------------------------------


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (NaN equals NaN with the same bits; -0.0 differs from 0.0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        ints = {8: torch.int64, 4: torch.int32, 2: torch.int16}[a.element_size()]
        return torch.equal(a.contiguous().view(ints), b.contiguous().view(ints))
    return torch.equal(a, b)


def diff_summary(a: torch.Tensor, b: torch.Tensor) -> str:
    a, b = a.double().cpu(), b.double().cpu()
    differ = differs(a, b)
    delta = (a - b).abs().nan_to_num(nan=float("inf"))
    return f"{int(differ.sum())} of {a.numel()} logits differ, max |Δ| {float(delta.max()):.3g}"


def first_token_diff(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(prompt, step, token in a, token in b) of the first difference, prompt by prompt."""
    for row in range(a.shape[0]):
        diff = (a[row] != b[row]).nonzero()
        if len(diff):
            s = int(diff[0])
            return row, s, int(a[row, s]), int(b[row, s])
    return None


def compare_tie_aware(ref: Decode, other: Decode, what: str) -> tuple[Status, str, dict[str, Any]]:
    """Compare two different computations' tokens; a disagreement where `ref` was unsure is a near-tie.

    After the first disagreement of a prompt the two sequences have different contexts, so only
    the steps up to it are compared.
    """
    rtol = TIE_RTOL.get(ref.logits.dtype, 1e-4)
    n_prompts, n_steps = ref.tokens.shape
    compared, mismatches, near_ties = 0, [], []
    for row in range(n_prompts):
        diff = (ref.tokens[row] != other.tokens[row]).nonzero()
        if not len(diff):
            compared += n_steps
            continue
        s = int(diff[0])
        compared += s + 1
        step_logits = ref.logits[row, s].double()
        a, b = int(ref.tokens[row, s]), int(other.tokens[row, s])
        margin = float(step_logits[a] - step_logits[b])
        tol = rtol * max(1.0, float(step_logits.abs().max()))
        entry = {"prompt": row, "step": s, "ref_token": a, "other_token": b, "margin": margin, "tolerance": tol}
        (near_ties if margin <= tol else mismatches).append(entry)
    evidence: dict[str, Any] = {
        "prompts": n_prompts,
        "steps": n_steps,
        "compared_steps": compared,
        "mismatches": len(mismatches),
        "near_ties": len(near_ties),
        "tie_rtol": rtol,
        "near_tie_details": near_ties[:5],
    }
    ties = f"; {len(near_ties)} near-tie(s) not counted" if near_ties else ""
    if mismatches:
        m = mismatches[0]
        evidence["first_mismatch"] = m
        return Status.FAIL, (
            f"tokens differ at step {m['step']} of prompt {m['prompt']}: {m['ref_token']} vs {m['other_token']} "
            f"({what}; reference margin {m['margin']:.3g} > tolerance {m['tolerance']:.2g}); "
            f"{len(mismatches)} of {n_prompts} prompts disagree{ties}"
        ), evidence
    return Status.PASS, f"{what}: {n_prompts} prompts × {n_steps} steps give the same tokens{ties}", evidence
