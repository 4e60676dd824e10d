"""The Python API: dropcheck as two functions a user calls inside their own tests.

    import dropcheck

    def test_my_dropout_conforms():
        result = dropcheck.check(MyDropout, contract="inverted", profile="quick")
        assert result.ok, result.summary()

`check` runs the layer-level properties (the same run as `dropcheck check`), `decode` the
DECODE-* properties of a whole model (the same run as `dropcheck decode`). Both return a result
with `.ok`, `.verdicts` (each with its evidence and a replay command), `.summary()` (a readable
failure message) and `.to_dict()` (the JSON report, schema "dropcheck-report/1").
"""
from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable, Sequence
from typing import Any

from dropcheck.defaults import DEFAULT_CONTRACT, DEFAULT_PROFILE, DEFAULT_PS, DEFAULT_SEED
from dropcheck.guard import DEFAULT_MEMORY_LIMIT_MB, DEFAULT_TIMEOUT_S
from dropcheck.models import describe_model
from dropcheck.runner import CheckResult, expand_devices, run_check, versions
from dropcheck.verdict import Verdict, failures, gathering, summarize

BUILTIN_GPT = "built-in GPT (dropcheck.gpt)"


def _ids(only: str | Sequence[str] | None) -> list[str] | None:
    if only is None:
        return None
    return [s.strip().upper() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]


def check(
    target: str | Any,
    contract: str = DEFAULT_CONTRACT,
    *,
    ps: float | Sequence[float] = DEFAULT_PS,
    device: str | Sequence[str] = "cpu",
    seed: int = DEFAULT_SEED,
    profile: str = DEFAULT_PROFILE,
    only: str | Sequence[str] | None = None,
    dtype: str = "float32",
    timeout: float | None = DEFAULT_TIMEOUT_S,
    memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB,
    on_verdict: Callable[[Verdict], None] | None = None,
) -> CheckResult:
    """Check a dropout implementation against a contract; the Python form of `dropcheck check`.

    `target` is `"pkg.mod:NAME"`, `"path/file.py:NAME"`, or the object itself: an `nn.Module`
    subclass built as `NAME(p)`, or a function `f(input, p, training)`. `ps`, `device`, `seed`,
    `profile`, `only`, `dtype`, `timeout` and `memory_limit_mb` (`--memory-limit`) mean what the
    CLI options of the same names mean; `on_verdict` is called with each verdict as it comes. Raises
    `dropcheck.targets.TargetError` for a target of neither form, `ValueError`/`KeyError` for a
    bad option; an implementation that raises gives ERROR verdicts instead.

    >>> import torch
    >>> result = check(torch.nn.Dropout, "inverted", profile="quick", only="EVAL-IDENTITY,P-ZERO")
    >>> result.ok, [v.property_id for v in result.verdicts]
    (True, ['EVAL-IDENTITY', 'P-ZERO'])
    """
    ps = [float(ps)] if isinstance(ps, (int, float)) else [float(p) for p in ps]
    return run_check(target, contract=contract, ps=ps, device=device, seed=seed, profile=profile,
                     only=_ids(only), dtype=dtype, timeout=timeout, memory_limit_mb=memory_limit_mb,
                     on_verdict=on_verdict)


@dataclasses.dataclass
class DecodeResult:
    """All DECODE-* verdicts of one model, with what is needed to replay and report them."""

    target: str
    seed: int
    devices: list[str]
    max_positions: int
    verdicts: list[Verdict]
    started: str
    finished: str
    duration_s: float
    versions: dict[str, str]
    interrupted: bool = False  # Ctrl-C: `verdicts` holds those gathered before it

    @property
    def ok(self) -> bool:
        """True when no property failed, errored or timed out (skips and passes only) and the run
        was not interrupted."""
        return not self.interrupted and not failures(self.verdicts)

    def failures(self) -> list[Verdict]:
        return failures(self.verdicts)

    def summary(self) -> str:
        """A readable account: counts, then one line per failing verdict with its replay command."""
        return summarize(f"dropcheck decode {self.target} (seed {self.seed})", self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "dropcheck-report/1",
            "kind": "decode",
            "target": self.target,
            "contract": "model",
            "profile": None,
            "seed": self.seed,
            "devices": self.devices,
            "max_positions": self.max_positions,
            "ok": self.ok,
            "interrupted": self.interrupted,
            "started": self.started,
            "finished": self.finished,
            "duration_s": round(self.duration_s, 3),
            "versions": self.versions,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


def decode(
    target: str | Any | None = None,
    *,
    device: str | Sequence[str] = "cpu",
    seed: int = DEFAULT_SEED,
    only: str | Sequence[str] | None = None,
    max_positions: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB,
    on_verdict: Callable[[Verdict], None] | None = None,
) -> DecodeResult:
    """Check that a model decodes deterministically in eval mode; the Python form of `dropcheck decode`.

    `target` is None (the built-in GPT), `"pkg.mod:NAME"`, `"path/file.py:NAME"`, a zero-argument
    factory, an `nn.Module` subclass or a module instance, mapping token ids (B, T) to logits.
    Each check runs under `timeout` seconds and `memory_limit_mb`, as in `check`; `on_verdict` is
    called with each verdict as it comes. Ctrl-C ends the run: the result holds the verdicts so
    far, with `interrupted` set.

    >>> result = decode(only=["DECODE-REPEAT"], max_positions=8)
    >>> result.ok, result.verdicts[0].property_id
    (True, 'DECODE-REPEAT')
    """
    from dropcheck.decoding import DEFAULT_MAX_POSITIONS, run_decode  # the GPT loads only when asked for

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    devices = expand_devices(device)
    max_positions = DEFAULT_MAX_POSITIONS if max_positions is None else max_positions
    verdicts, gather = gathering(on_verdict)
    interrupted = False
    try:
        run_decode(target, devices=tuple(devices), seed=seed, max_positions=max_positions, only=_ids(only),
                   timeout=timeout, memory_limit_mb=memory_limit_mb, on_verdict=gather)
    except KeyboardInterrupt:  # the check that was running was stopped (dropcheck.guard); keep the rest
        interrupted = True
    return DecodeResult(
        target=target if isinstance(target, str) else BUILTIN_GPT if target is None else describe_model(target),
        seed=seed,
        devices=devices,
        max_positions=int(max_positions),
        verdicts=verdicts,
        started=started.isoformat(timespec="seconds"),
        finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        duration_s=time.perf_counter() - t0,
        versions=versions(),
        interrupted=interrupted,
    )


