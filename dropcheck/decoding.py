"""Decoding properties: does a whole dropout-using model decode deterministically in eval mode?

A dropout layer can pass every layer-level check and still be wired wrongly inside a model:
`F.dropout(x, p)` without `training=`, SDPA's `dropout_p` left on in eval, a private "dropout on"
flag that `.eval()` never clears, a mixing step that lets batch rows see each other. Greedy
decoding makes such bugs visible as changed tokens. `run_decode` checks the eight DECODE-*
properties of the registry on one model and returns one `Verdict` per property and device.

Two kinds of comparison, on purpose:
- the same computation run twice (repeat, reseed, p set to 0) must agree bitwise;
- two different computations (one prompt vs a batch, KV cache vs recomputation, CPU vs CUDA) may
  round differently, so a disagreement is a failure only where the reference computation was sure:
  at a step where its logit for its own token beats its logit for the other's token by at most
  `TIE_RTOL[dtype] · max(1, max|logit|)` (1e-4 for float32) it is a near-tie, counted in the evidence.

>>> verdicts = run_decode(max_positions=12)          # the built-in GPT, on CPU
>>> sorted({v.status.value for v in verdicts})
['pass', 'skip']
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import random
import shlex
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from dropcheck import guard, registry
from dropcheck.gpt import GPTModel, zero_dropout
from dropcheck.models import (
    Decode,
    ModelTarget,
    NotLogitsError,
    active_dropout,
    cache_kind,
    compare_tie_aware,
    diff_summary,
    dropout_modules,
    first_token_diff,
    greedy,
    logits_of,
    resolve_model,
    same_bits,
)
from dropcheck.seeding import DEFAULT_SEED, derive_seed, rng_fingerprint, seeded
from dropcheck.targets import TargetError, no_replay, replayable
from dropcheck.verdict import Status, Verdict, gathering

N_PROMPTS = 3  # prompts per check: enough to see a leak, few enough for a one-second run
DEFAULT_MAX_POSITIONS = 32

# --- one check's setting ----------------------------------------------------------------------


@dataclasses.dataclass
class _Run:
    """What every property needs: the target, one device, the seeds, and the decoding sizes."""

    target: ModelTarget
    device: str
    seed: int
    model_seed: int  # shared by every property and device, so CPU and CUDA get the same weights
    vocab: int
    prompt_len: int
    n_new: int

    def model(self) -> nn.Module:
        return self.target.build(self.model_seed, self.device)

    def prompts(self, property_id: str, n: int = N_PROMPTS) -> torch.Tensor:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, property_id, self.device, "prompts"))
        return torch.randint(0, self.vocab, (n, self.prompt_len), generator=gen).to(self.device)

    def sizes(self) -> dict[str, Any]:
        return {"prompt_len": self.prompt_len, "new_tokens": self.n_new, "vocab": self.vocab}


Outcome = tuple[Status, str, dict[str, Any]]

# --- the properties ---------------------------------------------------------------------------


def check_repeat(run: _Run) -> Outcome:
    """DECODE-REPEAT: two greedy decodes in eval mode give identical tokens and bitwise-equal logits."""
    model, x = run.model().eval(), run.prompts("DECODE-REPEAT")
    a, b = greedy(model, x, run.n_new), greedy(model, x, run.n_new)
    ev = {**run.sizes(), "prompts": len(x), "logits_bitwise_equal": same_bits(a.logits, b.logits)}
    diff = first_token_diff(a.tokens, b.tokens)
    if diff:
        row, s, ta, tb = diff
        ev["first_difference"] = {"prompt": row, "step": s, "run1": ta, "run2": tb}
        return Status.FAIL, f"tokens differ at step {s} of prompt {row}: {ta} vs {tb} (eval run 1 vs run 2)", ev
    if not ev["logits_bitwise_equal"]:
        diff_text = diff_summary(a.logits, b.logits)
        return Status.FAIL, f"tokens agree but step logits do not ({diff_text}): eval decoding is not deterministic", ev
    summary = f"2 eval decodes of {len(x)} prompts × {run.n_new} steps: identical tokens, bitwise-equal logits"
    return Status.PASS, summary, ev


def check_rng_free(run: _Run) -> Outcome:
    """DECODE-RNG-FREE: eval logits ignore the RNG state, and an eval forward draws nothing."""
    model, x = run.model().eval(), run.prompts("DECODE-RNG-FREE")
    before = rng_fingerprint()
    first = logits_of(model, x)
    after = rng_fingerprint()
    # Move every global RNG on, then reseed elsewhere: an eval forward must not notice either.
    torch.rand(1000, device=run.device)
    np.random.random(10)
    random.random()
    drawn = logits_of(model, x)
    torch.manual_seed(derive_seed(run.seed, "DECODE-RNG-FREE", run.device, "reseed"))
    reseeded = logits_of(model, x)
    names = ("torch CPU", "torch CUDA", "numpy", "random")
    moved = [n for n, b, a in zip(names, before, after) if b != a]
    ev = {**run.sizes(), "prompts": len(x), "rng_states_advanced": moved}
    if moved:
        return Status.FAIL, f"an eval forward advanced the {', '.join(moved)} RNG state (eval must draw nothing)", ev
    for label, other in (("after drawing random numbers", drawn), ("after reseeding", reseeded)):
        if not same_bits(first, other):
            return Status.FAIL, f"eval logits depend on the RNG state: {label}, {diff_summary(first, other)}", ev
    return Status.PASS, "eval logits bitwise equal after drawing and after reseeding; no RNG state advanced", ev


def check_train_active(run: _Run) -> Outcome:
    """DECODE-TRAIN-ACTIVE: train outputs vary between calls and differ from eval (when there is dropout)."""
    model, x = run.model(), run.prompts("DECODE-TRAIN-ACTIVE")
    found, active = dropout_modules(model), active_dropout(model)  # read before any mode switch
    model.train()
    t1, t2 = logits_of(model, x), logits_of(model, x)
    model.eval()
    e = logits_of(model, x)
    varies, differs = not same_bits(t1, t2), not (same_bits(t1, e) and same_bits(t2, e))
    ev = {
        "dropout_modules": len(found),
        "dropout_modules_p_gt_0": len(active),
        "train_varies": varies,
        "train_differs_from_eval": differs,
    }
    if varies and differs:
        return Status.PASS, f"train outputs vary between calls ({diff_summary(t1, t2)}) and differ from eval", ev
    if varies:
        return Status.FAIL, "train outputs vary between calls but one equals eval bitwise", ev
    if not active:
        extra = f" ({len(found)} dropout module{'s' if len(found) != 1 else ''}, all with p=0)" if found else ""
        return Status.SKIP, f"model has no dropout{extra}", ev
    example = active[0]
    return Status.FAIL, (
        f"dropout configured but never applied: {len(active)} dropout module{'s' if len(active) != 1 else ''} with p>0 "
        f"(e.g. {type(example).__name__}(p={getattr(example, 'p', '?')})), "
        "yet two train-mode calls gave bitwise-equal logits"
    ), ev


def check_p_zero(run: _Run) -> Outcome:
    """DECODE-P-ZERO: eval output equals, bitwise, a copy of the weights with every dropout p set to 0."""
    model = run.model()
    if not isinstance(model, GPTModel):
        return Status.SKIP, (
            f"not the built-in GPT ({type(model).__name__}): dropcheck cannot find every dropout probability "
            "of a user model"
        ), {}
    zeroed = zero_dropout(copy.deepcopy(model)).eval()
    model.eval()
    x = run.prompts("DECODE-P-ZERO")
    # Different RNG states for the two: a dropout leaking into eval cannot hide behind equal masks.
    with seeded(derive_seed(run.seed, "DECODE-P-ZERO", run.device, "a")):
        full_a, dec_a = logits_of(model, x), greedy(model, x, run.n_new)
    with seeded(derive_seed(run.seed, "DECODE-P-ZERO", run.device, "b")):
        full_b, dec_b = logits_of(zeroed, x), greedy(zeroed, x, run.n_new)
    ev = {**run.sizes(), "prompts": len(x)}
    if not same_bits(full_a, full_b):
        return Status.FAIL, f"eval logits differ from the p=0 copy: {diff_summary(full_a, full_b)}", ev
    diff = first_token_diff(dec_a.tokens, dec_b.tokens)
    if diff:
        row, s, ta, tb = diff
        return Status.FAIL, f"tokens differ at step {s} of prompt {row}: {ta} vs {tb} (eval vs p=0 copy)", ev
    if not same_bits(dec_a.logits, dec_b.logits):
        return Status.FAIL, f"decoding logits differ from the p=0 copy: {diff_summary(dec_a.logits, dec_b.logits)}", ev
    return Status.PASS, f"eval logits and {run.n_new} greedy tokens bitwise equal to the p=0 copy", ev


def check_batch_invariant(run: _Run) -> Outcome:
    """DECODE-BATCH-INVARIANT: each prompt alone decodes as inside the batch (tie-aware)."""
    model, x = run.model().eval(), run.prompts("DECODE-BATCH-INVARIANT", n=N_PROMPTS + 1)
    alone = Decode.cat([greedy(model, x[i : i + 1], run.n_new) for i in range(len(x))])
    batch = greedy(model, x, run.n_new)
    status, summary, ev = compare_tie_aware(alone, batch, f"alone vs batch of {len(x)}")
    return status, summary, {**run.sizes(), **ev}


def check_kv_cache(run: _Run) -> Outcome:
    """DECODE-KV-CACHE: KV-cache decoding gives the tokens of full recomputation (tie-aware)."""
    model = run.model().eval()
    kind = cache_kind(model)
    if kind is None:
        return Status.SKIP, (
            f"{type(model).__name__} has no KV cache dropcheck can drive "
            "(the built-in GPT's cache=KVCache(), or Hugging Face use_cache=True)"
        ), {}
    x = run.prompts("DECODE-KV-CACHE")
    full = greedy(model, x, run.n_new)
    cached = greedy(model, x, run.n_new, use_cache=True)
    status, summary, ev = compare_tie_aware(full, cached, f"recomputation vs {kind} KV cache")
    return status, summary, {**run.sizes(), "cache": kind, **ev}


def check_cpu_cuda(run: _Run, cuda_device: str) -> Outcome:
    """DECODE-CPU-CUDA: CPU and CUDA greedy tokens agree (tie-aware), with the same weights."""
    cpu = run.model().eval()  # run.device is "cpu" here
    gpu = copy.deepcopy(cpu).to(cuda_device)
    x = run.prompts("DECODE-CPU-CUDA")
    ref = greedy(cpu, x, run.n_new)
    other = greedy(gpu, x.to(cuda_device), run.n_new)
    status, summary, ev = compare_tie_aware(ref, other, f"cpu vs {cuda_device}")
    return status, summary, {**run.sizes(), **ev}


def check_mode_roundtrip(run: _Run) -> Outcome:
    """DECODE-MODE-ROUNDTRIP: train→eval→train keeps dropout active; eval→train→eval turns it off."""
    model, x = run.model(), run.prompts("DECODE-MODE-ROUNDTRIP")
    active = active_dropout(model)
    model.train()
    base_varies = not same_bits(logits_of(model, x), logits_of(model, x))
    model.eval()
    e0 = logits_of(model, x)
    for mode in (True, False, True):  # train -> eval -> train
        model.train(mode)
    t1, t2 = logits_of(model, x), logits_of(model, x)
    for mode in (False, True, False):  # eval -> train -> eval
        model.train(mode)
    e1, e2 = logits_of(model, x), logits_of(model, x)
    after_varies = not same_bits(t1, t2)
    ev = {"train_varies_before": base_varies, "train_varies_after": after_varies}
    problems = []
    if base_varies and not after_varies:
        problems.append("after train→eval→train two train calls give bitwise-equal logits: dropout no longer active")
    for e in (e1, e2):
        if not same_bits(e0, e):
            problems.append(f"after eval→train→eval the output differs from the first eval ({diff_summary(e0, e)})")
            break
    if problems:
        return Status.FAIL, "; ".join(problems), ev
    if not base_varies and not active:
        return Status.SKIP, "model has no dropout", ev
    if not base_varies:
        return Status.PASS, "eval→train→eval restores eval bitwise; train half not checked: train outputs never vary", ev
    return Status.PASS, "train→eval→train keeps dropout active; eval→train→eval restores eval bitwise", ev


_CHECKS: dict[str, Callable[[_Run], Outcome]] = {
    "DECODE-REPEAT": check_repeat,
    "DECODE-RNG-FREE": check_rng_free,
    "DECODE-TRAIN-ACTIVE": check_train_active,
    "DECODE-P-ZERO": check_p_zero,
    "DECODE-BATCH-INVARIANT": check_batch_invariant,
    "DECODE-KV-CACHE": check_kv_cache,
    "DECODE-MODE-ROUNDTRIP": check_mode_roundtrip,
}

# --- the runner -------------------------------------------------------------------------------


@contextlib.contextmanager
def cuda_determinism() -> Iterator[None]:
    """Deterministic CUDA for the duration (deterministic kernels, no TF32); the caller's settings after.

    CUBLAS_WORKSPACE_CONFIG must be set before cuBLAS makes its first handle: when the caller has
    already used cuBLAS, PyTorch still checks the variable, but the workspace size may stay as it was.
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        det, warn_only, tf32_mm, tf32_cudnn, cudnn_det, cudnn_bench, cublas = saved
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cuda.matmul.allow_tf32 = tf32_mm
        torch.backends.cudnn.allow_tf32 = tf32_cudnn
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def replay_line(spec: str, seed: int, device: str, property_id: str, max_positions: int,
                limits: _Limits | None = None) -> str:
    """The command that reruns one decode check, in `dropcheck check`'s order (device "all": cpu and cuda).

    >>> replay_line("m.py:GPT", 1, "cpu", "DECODE-REPEAT", 32)
    'dropcheck decode m.py:GPT --device cpu --seed 1 --only DECODE-REPEAT'
    """
    if spec and not replayable(spec):
        return no_replay(spec, f"dropcheck.decode on it with only=[{property_id!r}], seed={seed}, device={device!r}")
    parts = ["dropcheck", "decode"] + ([shlex.quote(spec)] if spec else [])
    parts += ["--device", device, "--seed", str(seed)]
    if limits is not None:
        parts += guard.limit_options(limits.timeout_s, limits.memory_limit_mb)
    parts += ["--only", property_id]
    if max_positions != DEFAULT_MAX_POSITIONS:
        parts += ["--max-positions", str(max_positions)]
    return " ".join(parts)


def _is_cuda(device: str) -> bool:
    return device.split(":")[0] == "cuda"


def run_decode(
    target: str | Any | None = None,
    devices: Iterable[str] = ("cpu",),
    seed: int = DEFAULT_SEED,
    max_positions: int = DEFAULT_MAX_POSITIONS,
    *,
    only: Iterable[str] | None = None,
    timeout: float | None = guard.DEFAULT_TIMEOUT_S,
    memory_limit_mb: float | None = guard.DEFAULT_MEMORY_LIMIT_MB,
    on_verdict: Callable[[Verdict], None] | None = None,
) -> list[Verdict]:
    """Check the DECODE-* properties of a model; one Verdict per property and device.

    `target`: None (the built-in GPT), `pkg.mod:NAME` / `file.py:NAME`, a zero-argument factory,
    an nn.Module subclass, or a module instance. The model maps token ids (B, T) to logits
    (B, T, V) or to an object with `.logits`. Prompts plus new tokens use at most `max_positions`
    positions. `only` restricts the run to some property IDs. Raises `TargetError` for a TARGET
    that cannot be a model; a model that raises gives ERROR verdicts instead.

    Each check runs under `timeout` seconds and `memory_limit_mb` (None or 0: no limit), as
    `dropcheck check`'s do (dropcheck.guard): a model that hangs, crashes or runs out of memory
    gets a TIMEOUT or ERROR verdict for that check, and the run goes on. On the CPU the checks run
    in a forked worker on one torch thread (dropcheck.guard says why), unless CUDA is already
    initialised in this process: then in-process, under SIGALRM. The verdicts come device by device,
    in the order given (list cpu first, as `expand_devices` does, so that its checks are forked
    before the CUDA ones initialise CUDA), DECODE-CPU-CUDA last; `on_verdict` sees each as it comes.

    >>> [v.status.value for v in run_decode(max_positions=8, only=["DECODE-REPEAT"])]
    ['pass']
    """
    devices = (devices,) if isinstance(devices, str) else tuple(dict.fromkeys(devices))
    plan = decode_plan(devices, only)
    if max_positions < 2:
        raise ValueError(f"max_positions={max_positions}: need room for a prompt and one new token")
    subject = resolve_model(target)
    limits = _Limits(timeout or None, memory_limit_mb or None)
    model_seed = derive_seed(seed, "model")
    cuda_ok = torch.cuda.is_available()
    verdicts, emit = gathering(on_verdict)
    determinism = cuda_determinism() if cuda_ok and any(map(_is_cuda, devices)) else contextlib.nullcontext()
    with determinism:
        probe_error, vocab = _probe(subject, model_seed, max_positions, limits)
        prompt_len = max(1, max_positions // 4)
        for device in devices:
            run = _Run(subject, device, seed, model_seed, vocab, prompt_len, max_positions - prompt_len)
            unusable = (Status.SKIP, "CUDA not available", {}) if _is_cuda(device) and not cuda_ok else probe_error
            _run_on_device(run, [pid for pid, d in plan if d == device and pid != CPU_CUDA], unusable, limits, emit)
        if (CPU_CUDA, _cuda_of(devices)) in plan:
            emit(_cpu_cuda_verdict(subject, devices, seed, model_seed, vocab, prompt_len, max_positions, probe_error,
                                   limits))
    return verdicts


CPU_CUDA = "DECODE-CPU-CUDA"  # the one property that compares two devices: it runs after the others


def decode_plan(devices: Sequence[str], only: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(property ID, device) of each verdict `run_decode` gives, in its order: device by device,
    then DECODE-CPU-CUDA, reported on the first CUDA device. `only`: some property IDs.

    >>> decode_plan(["cpu"], only=["DECODE-REPEAT", "DECODE-CPU-CUDA"])
    [('DECODE-REPEAT', 'cpu'), ('DECODE-CPU-CUDA', 'cuda')]
    """
    wanted = [p.id for p in registry.for_contract("model", kind="decode")]
    if only is not None:
        only = [registry.get(pid).id for pid in only]  # KeyError naming the known IDs
        if not_decode := [pid for pid in only if pid not in wanted]:
            raise ValueError(f"{', '.join(not_decode)}: not {'a decode property' if len(not_decode) == 1 else 'decode properties'}; "
                             f"those are {', '.join(wanted)}")
        wanted = [pid for pid in wanted if pid in only]
    plan = [(pid, device) for device in devices for pid in wanted if pid != CPU_CUDA]
    return plan + ([(CPU_CUDA, _cuda_of(devices))] if CPU_CUDA in wanted else [])


def _cuda_of(devices: Sequence[str]) -> str:
    return next((d for d in devices if _is_cuda(d)), "cuda")


@dataclasses.dataclass(frozen=True)
class _Limits:
    timeout_s: float | None
    memory_limit_mb: float | None


def _run_on_device(run: _Run, pids: list[str], unusable: Outcome | None, limits: _Limits,
                   emit: Callable[[Verdict], None]) -> None:
    """The checks `pids` on `run.device`, one after another under the limits (a forked worker on
    the CPU); each verdict is emitted as soon as its check ends. `unusable`: why none can run."""
    max_positions = run.prompt_len + run.n_new

    def verdict(index: int, outcome: Outcome, duration_s: float) -> Verdict:
        pid = pids[index]
        return _verdict(pid, outcome, run.device, run.seed, replay_line(run.target.spec, run.seed, run.device, pid,
                                                                        max_positions, limits), duration_s)

    if unusable is not None:
        status, summary, evidence = unusable
        for index in range(len(pids)):
            emit(verdict(index, (status, summary, dict(evidence)), 0.0))
        return
    checks = [functools.partial(_guarded, functools.partial(_CHECKS[pid], run), derive_seed(run.seed, pid, run.device))
              for pid in pids]
    guard.run_sequence(checks, limits.timeout_s, device=run.device, memory_limit_mb=limits.memory_limit_mb,
                       on_outcome=lambda i, o: emit(verdict(i, _ended(o, limits), o.elapsed)),
                       fresh_worker_after=_out_of_memory)


def _ended(outcome: guard.Outcome, limits: _Limits) -> Outcome:
    """A check's Outcome from how its limited call ended (a hang, a crash, an allocation failure)."""
    if outcome.status == "ok":
        status, summary, evidence = outcome.value
        if _out_of_memory(outcome.value):
            summary = guard.out_of_memory_summary(summary, limits.memory_limit_mb, outcome.mechanism)
            evidence = {**evidence, "out_of_memory": True}
        return status, summary, evidence
    timed_out, summary, evidence = guard.describe_unfinished(outcome, limits.timeout_s, "the model")
    return Status.TIMEOUT if timed_out else Status.ERROR, summary, evidence


def _out_of_memory(value: Any) -> bool:
    """Called in the worker: after an allocation failure the next check gets a fresh worker."""
    return isinstance(value, tuple) and value[0] is Status.ERROR and guard.is_out_of_memory(value[1])


def _probe(subject: ModelTarget, model_seed: int, max_positions: int, limits: _Limits) -> tuple[Outcome | None, int]:
    """Build once on CPU, under the limits, to read V (and the context length where known).
    (None, V), or (why no check can run, 0); a TARGET that is not a model raises TargetError."""
    ended = guard.run_limited(functools.partial(_probe_once, subject, model_seed, max_positions), limits.timeout_s,
                              device="cpu", memory_limit_mb=limits.memory_limit_mb)
    if ended.status == "ok":
        kind, value = ended.value
        if kind == "target-error":
            raise TargetError(value)
        if kind == "vocab":
            return None, value
        ended = dataclasses.replace(ended, value=value)  # the model's own error, read as a check's would be
    status, summary, evidence = _ended(ended, limits)
    return (status, f"before any check, building the model and one forward on the CPU: {summary}", evidence), 0


def _probe_once(subject: ModelTarget, model_seed: int, max_positions: int) -> tuple[str, Any]:
    # Returns, never raises: it may run in a forked worker, whose exceptions arrive only as text.
    try:
        model = subject.build(model_seed, "cpu").eval()
        with seeded(model_seed):  # a model that draws in eval mode must not move the caller's RNGs
            vocab = int(logits_of(model, torch.zeros(1, 1, dtype=torch.long)).shape[-1])
        context = _context_length(model)
        if context is not None and max_positions > context:
            raise ValueError(f"max_positions={max_positions} exceeds the model's context length {context}")
        return "vocab", vocab
    except TargetError as e:
        return "target-error", str(e)
    except NotLogitsError as e:  # not a language model: no check could run, and none should be listed
        return "target-error", f"TARGET {subject.spec!r} is not a language model: its first forward failed: {e}"
    except Exception as e:  # the model's own failure becomes every verdict's ERROR
        return "error", _error(e)


def _context_length(model: nn.Module) -> int | None:
    if isinstance(model, GPTModel):
        return model.cfg.context_length
    config = getattr(model, "config", None)  # Hugging Face
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _cpu_cuda_verdict(
    subject: ModelTarget, devices: tuple[str, ...], seed: int, model_seed: int, vocab: int,
    prompt_len: int, max_positions: int, probe_error: Outcome | None, limits: _Limits,
) -> Verdict:
    cuda_device = _cuda_of(devices)
    replay = replay_line(subject.spec, seed, "all", CPU_CUDA, max_positions, limits)
    if not torch.cuda.is_available():
        outcome: Outcome = (Status.SKIP, "CUDA not available", {})
    elif "cpu" not in devices or not any(map(_is_cuda, devices)):
        outcome = (Status.SKIP, f"devices {', '.join(devices)} do not include both cpu and cuda", {})
    elif probe_error is not None:
        outcome = probe_error
    else:
        run = _Run(subject, "cpu", seed, model_seed, vocab, prompt_len, max_positions - prompt_len)
        check = functools.partial(_guarded, functools.partial(check_cpu_cuda, run, cuda_device),
                                  derive_seed(seed, CPU_CUDA, cuda_device))
        ended = guard.run_limited(check, limits.timeout_s, device=cuda_device, memory_limit_mb=limits.memory_limit_mb)
        return _verdict(CPU_CUDA, _ended(ended, limits), cuda_device, seed, replay, ended.elapsed)
    return _verdict(CPU_CUDA, outcome, cuda_device, seed, replay, 0.0)


def _guarded(check: Callable[[], Outcome], prop_seed: int) -> Outcome:
    """Run one check under its own seed (train-mode masks replay); an exception becomes ERROR."""
    try:
        with seeded(prop_seed):
            status, summary, ev = check()
        return status, summary, {**ev, "property_seed": prop_seed}
    except Exception as e:  # other properties still run
        return _error(e)


def _error(e: BaseException) -> Outcome:
    return Status.ERROR, f"{type(e).__name__}: {e}", {"exception": "".join(traceback.format_exception(e))[-4000:]}


def _verdict(pid: str, outcome: Outcome, device: str, seed: int, replay: str, duration_s: float) -> Verdict:
    status, summary, ev = outcome
    return Verdict(
        property_id=pid, status=status, summary=summary, device=device, seed=seed,
        replay=replay, duration_s=duration_s, evidence=ev,
    )
