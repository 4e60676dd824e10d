"""DECODE-* properties: the built-in GPT passes them all; each broken model fails the one it targets."""
import ctypes
import faulthandler
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import dropcheck
from dropcheck import guard
from dropcheck.cli import main
from dropcheck.decoding import cuda_determinism, run_decode
from dropcheck.gpt import GPTConfig, GPTModel
from dropcheck.models import Decode, compare_tie_aware, resolve_model
from dropcheck.seeding import rng_fingerprint
from dropcheck.targets import TargetError
from dropcheck.verdict import Status
from tests.broken_models import BROKEN
from tests.conftest import needs_fork, needs_main_thread, requires_cuda

BROKEN_FILE = Path(__file__).with_name("broken_models.py")
CASES = [(pid, model) for pid, models in BROKEN.items() for model in models]


def _by_id(verdicts):
    return {(v.property_id, v.device): v for v in verdicts}


def _assert_status(verdicts, property_id, status, device="cpu"):
    """The verdict for one property, asserted to have `status` (the message has expected, got, replay)."""
    __tracebackhide__ = True
    v = _by_id(verdicts)[property_id, device]
    assert v.status is status, f"{v.label}: expected {status.value}, got {v.status.value}: {v.summary}\n[{v.replay}]"
    return v


def _table(verdicts) -> str:
    return "\n".join(f"  {v.label}: {v.status.value} - {v.summary}" for v in verdicts)


# --- the built-in GPT ----------------------------------------------------------------------------


@pytest.mark.parametrize("use_sdpa", [False, True], ids=["explicit", "sdpa"])
def test_builtin_gpt_passes_every_applicable_property(use_sdpa):
    target = None if not use_sdpa else (lambda: GPTModel(GPTConfig(use_sdpa=True)))
    verdicts = run_decode(target)
    ids = [v.property_id for v in verdicts]
    assert len(ids) == 8 and len(set(ids)) == 8, f"expected one verdict per DECODE-* property, got {ids}"
    for v in verdicts:
        expected = Status.SKIP if v.property_id == "DECODE-CPU-CUDA" else Status.PASS
        assert v.status is expected, f"{v.label}: expected {expected.value}, got {v.status.value}: {v.summary}\n[{v.replay}]"
    cpu_cuda = _by_id(verdicts)["DECODE-CPU-CUDA", "cuda"]
    if not torch.cuda.is_available():
        assert cpu_cuda.summary == "CUDA not available", f"DECODE-CPU-CUDA skip reason: got {cpu_cuda.summary!r}"


def test_verdicts_replay_and_leave_caller_rngs_alone():
    torch.manual_seed(123)
    np.random.seed(123)
    before = rng_fingerprint()
    first = [(v.property_id, v.status, v.summary) for v in run_decode(max_positions=12, seed=7)]
    run_decode(BROKEN["DECODE-REPEAT"][0], max_positions=8)  # a model that draws in eval mode, too
    assert rng_fingerprint() == before, "run_decode moved the caller's RNG state (expected it restored)"
    again = [(v.property_id, v.status, v.summary) for v in run_decode(max_positions=12, seed=7)]
    assert first == again, f"same seed, expected the same verdicts; got\n{first}\nthen\n{again}"


def test_verdict_carries_seed_replay_and_evidence():
    (v,) = run_decode(seed=11, only=["DECODE-BATCH-INVARIANT"], max_positions=16)
    assert v.seed == 11 and v.device == "cpu", f"expected seed 11 on cpu, got seed {v.seed} on {v.device}"
    expected = "dropcheck decode --device cpu --seed 11 --only DECODE-BATCH-INVARIANT --max-positions 16"
    assert v.replay == expected, f"replay: expected {expected!r}, got {v.replay!r}"
    for key in ("near_ties", "mismatches", "compared_steps", "tie_rtol", "property_seed"):
        assert key in v.evidence, f"evidence: expected key {key!r}, got {sorted(v.evidence)}"


def test_prompt_and_new_tokens_stay_within_max_positions():
    class Bounded(GPTModel):  # raises, rather than records: the checks run in a forked worker
        def forward(self, idx, cache=None):
            used = idx.shape[1] + (cache.pos if cache is not None else 0)
            if used > 10:
                raise AssertionError(f"positions used: expected at most max_positions=10, got {used}")
            return super().forward(idx, cache)

    verdicts = run_decode(Bounded, max_positions=10)
    over = [f"{v.label}: {v.summary}" for v in verdicts if v.status not in (Status.PASS, Status.SKIP)]
    assert not over, over
    with pytest.raises(ValueError, match="max_positions"):
        run_decode(max_positions=1)
    (v, *_) = run_decode(max_positions=65)  # the built-in context is 64
    assert v.status is Status.ERROR and "context length 64" in v.summary, f"expected ERROR naming the context, got {v.summary!r}"


def test_cuda_device_without_cuda_is_skipped_with_reason():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the skip path needs one without")
    verdicts = run_decode(devices=("cpu", "cuda"), max_positions=8)
    cuda = [v for v in verdicts if v.device == "cuda"]
    assert len(cuda) == 8, f"expected 8 cuda verdicts (7 per-device + CPU-CUDA), got {len(cuda)}"
    assert all(v.status is Status.SKIP and v.summary == "CUDA not available" for v in cuda), _table(cuda)


# --- the broken models -----------------------------------------------------------------------------


@pytest.mark.parametrize("property_id,model", CASES, ids=[f"{pid}-{m.__name__}" for pid, m in CASES])
def test_property_catches_its_broken_model(property_id, model):
    (verdict,) = run_decode(model, only=[property_id])
    assert verdict.status is Status.FAIL, (
        f"{property_id} on {model.__name__}: expected fail, got {verdict.status.value}: {verdict.summary}\n"
        f"[{verdict.replay}]"
    )


def test_broken_model_by_file_target():
    (v,) = run_decode(f"{BROKEN_FILE}:BatchMixingGPT", only=["DECODE-BATCH-INVARIANT"])
    assert v.status is Status.FAIL, f"expected fail, got {v.status.value}: {v.summary}"
    assert v.summary.startswith("tokens differ at step"), f"expected the first differing token, got {v.summary!r}"
    assert f"{BROKEN_FILE}:BatchMixingGPT" in v.replay, f"replay should name the TARGET, got {v.replay!r}"


class _NoDropoutLM(nn.Module):
    """A bigram model with no dropout at all."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(32, 16)
        self.head = nn.Linear(16, 32)

    def forward(self, idx):
        return self.head(torch.tanh(self.emb(idx)))  # (B,T) -> (B,T,D) -> (B,T,V)


def _gpt_all_p_zero() -> GPTModel:
    return GPTModel(GPTConfig(drop_emb=0, drop_attn=0, drop_resid=0))


@pytest.mark.parametrize(
    "target,reason",
    [(_NoDropoutLM, "model has no dropout"), (_gpt_all_p_zero, "model has no dropout (5 dropout modules, all with p=0)")],
    ids=["no-modules", "all-p-zero"],
)
def test_model_without_dropout_skips_train_active(target, reason):
    verdicts = run_decode(target, max_positions=8)
    got = _assert_status(verdicts, "DECODE-TRAIN-ACTIVE", Status.SKIP)
    assert got.summary == reason, f"skip reason: expected {reason!r}, got {got.summary!r}"
    _assert_status(verdicts, "DECODE-REPEAT", Status.PASS)


def test_user_model_skips_p_zero_and_cacheless_kv_cache():
    verdicts = run_decode(_NoDropoutLM, max_positions=8)
    p_zero = _assert_status(verdicts, "DECODE-P-ZERO", Status.SKIP)
    assert "not the built-in GPT" in p_zero.summary, f"skip reason: got {p_zero.summary!r}"
    kv = _assert_status(verdicts, "DECODE-KV-CACHE", Status.SKIP)
    assert "no KV cache" in kv.summary, f"skip reason: got {kv.summary!r}"
    _assert_status(verdicts, "DECODE-BATCH-INVARIANT", Status.PASS)


def test_logits_attribute_and_module_instance_are_accepted():
    class Output:
        def __init__(self, logits):
            self.logits = logits

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = GPTModel()

        def forward(self, idx):
            return Output(self.inner(idx))

    for target in (Wrapped, Wrapped()):
        verdicts = run_decode(target, max_positions=8)
        _assert_status(verdicts, "DECODE-REPEAT", Status.PASS)
        _assert_status(verdicts, "DECODE-TRAIN-ACTIVE", Status.PASS)


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target,message",
    [
        ("torch.nn:Linear", "needs constructor arguments"),
        ("collections:OrderedDict", "not an nn.Module subclass"),
        ("math:pi", "expected an nn.Module subclass or a zero-argument factory"),
        (lambda: "not a model", "not an nn.Module"),
        ("no_such_module_xyz:Model", "no module named"),
    ],
    ids=["needs-args", "not-module-class", "not-callable", "factory-returns-str", "missing-module"],
)
def test_unusable_target_raises_target_error(target, message):
    with pytest.raises(TargetError, match=message):
        run_decode(target)


def test_exception_in_one_mode_errors_only_where_it_happens():
    class TrainCrash(GPTModel):
        def forward(self, idx, cache=None):
            if self.training:
                raise RuntimeError("boom in train mode")
            return super().forward(idx, cache)

    verdicts = run_decode(TrainCrash, max_positions=8)
    got = _assert_status(verdicts, "DECODE-TRAIN-ACTIVE", Status.ERROR)
    assert "boom in train mode" in got.summary, f"ERROR summary: expected the exception text, got {got.summary!r}"
    assert "exception" in got.evidence, f"ERROR evidence should hold the traceback, got {sorted(got.evidence)}"
    _assert_status(verdicts, "DECODE-REPEAT", Status.PASS)  # the other properties still run


def test_model_that_cannot_run_errors_everywhere():
    class Crash(nn.Module):
        def forward(self, idx):
            raise RuntimeError("no forward today")

    verdicts = run_decode(Crash, max_positions=8)
    runnable = [v for v in verdicts if v.property_id != "DECODE-CPU-CUDA"]
    assert all(v.status is Status.ERROR and "no forward today" in v.summary for v in runnable), _table(verdicts)


# --- limits: a model that hangs, crashes or eats memory (dropcheck.guard, as for `dropcheck check`) ---


class _SpinsInTrain(GPTModel):
    """Loops forever in a train-mode forward (DECODE-TRAIN-ACTIVE and -MODE-ROUNDTRIP make one)."""

    def forward(self, idx, cache=None):
        while self.training:
            pass
        return super().forward(idx, cache)


class _SleepsAlways(GPTModel):
    def forward(self, idx, cache=None):
        time.sleep(3600)


class _SegfaultsInTrain(GPTModel):
    def forward(self, idx, cache=None):
        if self.training:
            faulthandler.disable()  # pytest's dump of the crash would only clutter the test log
            ctypes.string_at(0)
        return super().forward(idx, cache)


class _HogsMemoryInTrain(GPTModel):
    def forward(self, idx, cache=None):
        hoard = []
        while self.training:
            hoard.append(torch.ones(1 << 24))  # 64 MiB at a time, touched, until allocation fails
        return super().forward(idx, cache)


TRAIN_MODE = {"DECODE-TRAIN-ACTIVE", "DECODE-MODE-ROUNDTRIP"}  # the checks that call the model in train mode


def _statuses(verdicts) -> dict[str, str]:
    return {v.property_id: v.status.value for v in verdicts if v.device == "cpu"}


@needs_fork
def test_model_that_hangs_in_train_mode_times_out_there_and_the_run_goes_on():
    start = time.monotonic()
    verdicts = run_decode(_SpinsInTrain, max_positions=8, timeout=3)
    took = time.monotonic() - start
    expected = {pid: "timeout" if pid in TRAIN_MODE else "pass" for pid in _statuses(verdicts)}
    assert _statuses(verdicts) == expected, _table(verdicts)
    v = _by_id(verdicts)["DECODE-TRAIN-ACTIVE", "cpu"]
    assert v.summary.startswith("did not finish within the 3 s limit (--timeout): the model hangs"), v.summary
    assert v.evidence["isolation"] == "fork" and v.evidence["timeout_s"] == 3, v.evidence
    assert took < 25, f"two 3 s time-outs and six quick checks: expected well under 25 s, took {took:.1f} s"


@needs_fork
def test_model_that_hangs_everywhere_times_out_once_in_the_probe():
    start = time.monotonic()
    verdicts = run_decode(_SleepsAlways, max_positions=8, timeout=1)
    took = time.monotonic() - start
    runnable = [v for v in verdicts if v.property_id != "DECODE-CPU-CUDA"]
    assert all(v.status is Status.TIMEOUT for v in runnable), _table(verdicts)
    assert took < 10, f"one 1 s time-out (the first build and forward), then nothing to run: took {took:.1f} s"


@needs_fork
def test_model_that_crashes_in_train_mode_errors_there_only():
    verdicts = run_decode(_SegfaultsInTrain, max_positions=8, timeout=30)
    expected = {pid: "error" if pid in TRAIN_MODE else "pass" for pid in _statuses(verdicts)}
    assert _statuses(verdicts) == expected, _table(verdicts)
    v = _by_id(verdicts)["DECODE-TRAIN-ACTIVE", "cpu"]
    assert v.summary.startswith("crashed: ") and "SIGSEGV" in v.summary, v.summary


@needs_fork
def test_model_that_eats_memory_is_reported_and_the_next_check_gets_a_fresh_worker():
    verdicts = run_decode(_HogsMemoryInTrain, max_positions=8, timeout=60, memory_limit_mb=512)
    expected = {pid: "error" if pid in TRAIN_MODE else "pass" for pid in _statuses(verdicts)}
    assert _statuses(verdicts) == expected, _table(verdicts)
    v = _by_id(verdicts)["DECODE-TRAIN-ACTIVE", "cpu"]
    assert v.summary.startswith("out of memory (limit: 512 MiB beyond the check's start)"), v.summary
    assert v.evidence["out_of_memory"] is True, sorted(v.evidence)


@needs_fork
def test_cli_decode_takes_the_limits_and_streams_verdicts(tmp_path, capsys):
    model_file = tmp_path / "spins.py"
    model_file.write_text("from dropcheck.gpt import GPTModel\n\n\n"
                          "class SpinsInTrain(GPTModel):\n"
                          "    def forward(self, idx, cache=None):\n"
                          "        while self.training:\n"
                          "            pass\n"
                          "        return super().forward(idx, cache)\n")
    code = main(["decode", f"{model_file}:SpinsInTrain", "--only", "DECODE-REPEAT,DECODE-TRAIN-ACTIVE",
                 "--max-positions", "8", "--timeout", "3", "--memory-limit", "1024"])
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line.split()[:1] in (["PASS"], ["TIMEOUT"])}
    assert code == 1, f"a TIMEOUT verdict: expected exit 1, got {code}\n{out}"
    assert lines["DECODE-REPEAT"].startswith("PASS") and lines["DECODE-TRAIN-ACTIVE"].startswith("TIMEOUT"), out


class _InterruptedInTrain(GPTModel):
    """Raises KeyboardInterrupt in a train-mode forward, as Ctrl-C would while the model runs."""

    def forward(self, idx, cache=None):
        if self.training:
            raise KeyboardInterrupt
        return super().forward(idx, cache)


@pytest.mark.parametrize("mechanism", [pytest.param("fork", marks=needs_fork), "alarm"])
def test_ctrl_c_in_the_model_ends_the_run_with_the_verdicts_so_far(mechanism, monkeypatch):
    monkeypatch.setattr(guard, "choose_mechanism", lambda device="cpu": mechanism)
    result = dropcheck.decode(_InterruptedInTrain, max_positions=8)
    got = [(v.property_id, v.status.value) for v in result.verdicts]
    assert result.interrupted and not result.ok, f"expected an interrupted, not-ok result, got {got}"
    assert got == [("DECODE-REPEAT", "pass"), ("DECODE-RNG-FREE", "pass")], f"expected the two checks before it, got {got}"
    assert result.to_dict()["interrupted"] is True


@needs_fork
def test_cli_decode_interrupted_exits_130_and_writes_what_it_has(tmp_path, capsys):
    report = tmp_path / "r.json"
    code = main(["decode", f"{Path(__file__)}:_InterruptedInTrain", "--max-positions", "8", "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 130, f"Ctrl-C: expected exit 130, got {code}\n{out}"
    assert "interrupted (Ctrl-C): the 2 verdicts above were gathered before it" in out, out
    data = json.loads(report.read_text())
    assert data["interrupted"] is True and len(data["verdicts"]) == 2, data


@needs_main_thread
def test_cli_decode_target_whose_import_hangs_exits_2(tmp_path, capsys):
    model_file = tmp_path / "hangs.py"
    model_file.write_text("import time\ntime.sleep(3600)\n")
    code = main(["decode", f"{model_file}:Model", "--timeout", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "importing it did not finish within 1 s" in err, f"expected exit 2 naming the hang, got {code}: {err}"


def test_cli_decode_on_a_dropout_layer_exits_2_with_one_line_not_an_error_per_check(capsys):
    code = main(["decode", "torch.nn:Dropout"])
    out, err = capsys.readouterr()
    assert code == 2 and "is not a language model" in err and "dropcheck check" in err, (code, err)
    assert "ERROR" not in out, out


def test_a_model_whose_forward_raises_is_still_an_error_per_check_not_exit_2(tmp_path, capsys):
    model_file = tmp_path / "raises.py"
    model_file.write_text("import torch\n\nclass Model(torch.nn.Module):\n"
                          "    def forward(self, idx):\n        raise RuntimeError('broken forward')\n")
    code = main(["decode", f"{model_file}:Model", "--only", "DECODE-REPEAT"])
    out = capsys.readouterr().out
    assert code == 1 and "ERROR" in out and "broken forward" in out, (code, out)


# --- pieces ----------------------------------------------------------------------------------------


def _decode(tokens, logits) -> Decode:
    return Decode(torch.tensor(tokens), torch.tensor(logits, dtype=torch.float32))


def test_tie_aware_comparison_counts_near_ties_and_fails_clear_wins():
    # One prompt, one step, vocabulary of 3; the reference picks token 0.
    near = _decode([[0]], [[[2.0, 2.0 - 1e-6, -1.0]]])  # token 1 within 1e-4·max(1, 2) of token 0
    clear = _decode([[0]], [[[2.0, 1.0, -1.0]]])
    other = _decode([[1]], [[[0.0, 0.0, 0.0]]])
    status, summary, ev = compare_tie_aware(near, other, "test")
    assert status is Status.PASS and ev["near_ties"] == 1, f"expected pass with 1 near-tie, got {status.value}: {summary}"
    status, summary, ev = compare_tie_aware(clear, other, "test")
    assert status is Status.FAIL and ev["mismatches"] == 1, f"expected fail, got {status.value}: {summary}"
    assert summary.startswith("tokens differ at step 0 of prompt 0: 0 vs 1"), f"summary: got {summary!r}"


def test_resolve_model_forms():
    for target in (None, "dropcheck.gpt:GPTModel", GPTModel):
        built = resolve_model(target).build(0, "cpu")
        assert isinstance(built, GPTModel), f"resolve_model({target!r}): expected a GPTModel, got {type(built).__name__}"
    built = resolve_model(f"{BROKEN_FILE}:NeverAppliedGPT").build(0, "cpu")
    assert type(built).__name__ == "NeverAppliedGPT", f"expected NeverAppliedGPT, got {type(built).__name__}"
    a, b = resolve_model(None).build(5, "cpu"), resolve_model(None).build(5, "cpu")
    assert torch.equal(a.out_head.weight, b.out_head.weight), "same seed: expected the same weights"


def test_cuda_determinism_restores_the_callers_settings(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    def settings():
        return torch.are_deterministic_algorithms_enabled(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

    before = settings()
    with cuda_determinism():
        assert torch.are_deterministic_algorithms_enabled(), "expected deterministic algorithms on inside"
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32, "expected TF32 off inside"
        got = os.environ["CUBLAS_WORKSPACE_CONFIG"]
        assert got == ":4096:8", f"CUBLAS_WORKSPACE_CONFIG inside: expected ':4096:8', got {got!r}"
    after = settings()
    assert after == before, f"settings: expected {before} restored, got {after}"
    got = os.environ["CUBLAS_WORKSPACE_CONFIG"]
    assert got == ":16:8", f"CUBLAS_WORKSPACE_CONFIG after: expected the caller's ':16:8', got {got!r}"


# --- CUDA --------------------------------------------------------------------------------------------


@pytest.mark.cuda
@requires_cuda
def test_builtin_gpt_passes_on_cpu_and_cuda():
    verdicts = run_decode(devices=("cpu", "cuda"))
    bad = [v for v in verdicts if v.status is not Status.PASS]
    assert not bad, f"expected every property to pass on cpu and cuda, got:\n{_table(bad)}"


@pytest.mark.cuda
@requires_cuda
def test_broken_model_fails_on_cuda():
    (v,) = run_decode(BROKEN["DECODE-RNG-FREE"][0], devices=("cuda",), only=["DECODE-RNG-FREE"])
    assert v.status is Status.FAIL, f"expected fail on cuda, got {v.status.value}: {v.summary}"
