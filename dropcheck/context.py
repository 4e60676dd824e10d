"""The configuration one property check runs under, shared by exact and statistical checks."""
from __future__ import annotations

import dataclasses

import torch

from dropcheck.contracts import Contract
from dropcheck.guard import DEFAULT_MEMORY_LIMIT_MB, DEFAULT_TIMEOUT_S, limit_options
from dropcheck.targets import DropoutTarget, no_replay, replayable


class PropertyViolation(AssertionError):
    """The implementation broke a property. Any other exception from it is an error, not a failure."""


@dataclasses.dataclass
class CheckContext:
    target: DropoutTarget
    contract: Contract
    device: str = "cpu"
    seed: int = 0
    ps: tuple[float, ...] = (0.1, 0.5, 0.9)
    max_examples: int = 25
    # For the channel unit: how many spatial dims the input has after (N, C). Probed per target,
    # since Dropout1d accepts (N, C, L) only and Dropout3d (N, C, D, H, W) only.
    spatial_rank: int = 1
    # The dtype of the statistical samples (exact properties draw every dtype themselves).
    sample_dtype: torch.dtype = torch.float32
    profile: str = "default"
    # The run's limits, for replay lines (guard.limit_options).
    timeout: float | None = DEFAULT_TIMEOUT_S
    memory_limit_mb: float | None = DEFAULT_MEMORY_LIMIT_MB
    # Every spatial rank the probe found the target to take cleanly (spatial_rank is the highest): the
    # exact properties get a fixed input at each, since a rank can have a code path of its own.
    clean_ranks: tuple[int, ...] = (1,)

    def set_ranks(self, ranks: tuple[int, ...]) -> None:
        """The channel probe's ranks (runner.probe_ranks): checked at each, drawn at the highest."""
        self.spatial_rank, self.clean_ranks = max(ranks), ranks

    def replay(self, property_id: str, p: float | None = None) -> str:
        """The command that reproduces this verdict exactly. It names the run's whole p list and
        profile, not just this p: the alpha shares, the sample sizes and the seeds (derived from
        repr(p)) all depend on them, and `--only` keeps the full run's ledger."""
        if not replayable(self.target.spec):
            return no_replay(self.target.spec, f"dropcheck.check on it with only=[{property_id!r}], seed={self.seed}, "
                                               f"profile={self.profile!r} and the same ps")
        parts = [f"dropcheck check {self.target.spec}", f"--contract {self.contract.name}",
                 f"--p {','.join(map(repr, self.ps))}", f"--profile {self.profile}"]
        if self.sample_dtype != torch.float32:
            parts.append(f"--dtype {str(self.sample_dtype).removeprefix('torch.')}")
        parts += [f"--device {self.device}", f"--seed {self.seed}", *limit_options(self.timeout, self.memory_limit_mb),
                  f"--only {property_id}"]
        return " ".join(parts)

    def unit_shape(self, n_units: int, spatial_rank: int | None = None) -> tuple[int, ...]:
        """An input shape holding about `n_units` drop units (elements, channels or samples); for
        channels, of `spatial_rank` spatial dims (default: the run's)."""
        if self.contract.unit == "element":
            return (max(1, n_units // 128), 128)
        if self.contract.unit == "channel":
            return (max(1, n_units // 64), 64, *([2] * (spatial_rank or self.spatial_rank)))
        return (n_units, 2)


def require_tensor(y: object, x: torch.Tensor, what: str) -> torch.Tensor:
    """`y` if it is a tensor shaped and placed like `x`; otherwise a PropertyViolation saying what
    came back (caught here, or every later comparison would raise instead of failing)."""
    if not isinstance(y, torch.Tensor):
        raise PropertyViolation(f"{what} returned {type(y).__name__}, expected a torch.Tensor")
    if y.shape != x.shape:
        raise PropertyViolation(f"{what} returned shape {tuple(y.shape)}, expected {tuple(x.shape)}")
    if y.device != x.device:
        raise PropertyViolation(f"{what} returned a tensor on {y.device}, expected the input's device {x.device}")
    return y


def differs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element by element, whether a and b differ, NaN matching NaN."""
    return ~((a == b) | (a.isnan() & b.isnan()))


def first_index(bad: torch.Tensor) -> tuple[int, ...]:
    """The index of the first True element, for 'first offending element' messages."""
    idx = bad.nonzero()
    return tuple(int(i) for i in idx[0]) if len(idx) else ()
