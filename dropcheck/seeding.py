"""Seeds: one integer replays a whole run, and dropcheck never disturbs the caller's RNGs.

Implementations under test may draw from torch's, numpy's or Python's global RNG, so all three are
seeded together. The caller's states are restored afterwards (torch through `fork_rng`), so running
dropcheck inside a user's test leaves their random streams where they were.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from dropcheck.defaults import DEFAULT_SEED  # noqa: F401  (re-exported)


def derive_seed(base: int, *parts: object) -> int:
    """A seed for one sub-check, stable across runs and platforms (not Python's salted `hash`).

    >>> derive_seed(1, "DROP-RATE", 0.1) == derive_seed(1, "DROP-RATE", 0.1)
    True
    """
    text = "|".join([str(base), *map(str, parts)]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch (CPU and CUDA), numpy and `random` with `seed`; restore all three on exit."""
    with preserved_rngs():
        reseed(seed)
        yield


@contextlib.contextmanager
def preserved_rngs() -> Iterator[None]:
    """Restore the torch (CPU and CUDA), numpy and `random` states on exit to what they were on entry.

    Saving numpy's state costs 40 µs and restoring it as much, more than most exact checks' own
    work on one input: a Hypothesis search therefore runs inside one of these and calls `reseed`
    per example, rather than `seeded`."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    with torch.random.fork_rng(devices=_cuda_devices()):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def reseed(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and `random` with `seed`, saving nothing: only inside
    `preserved_rngs`, which puts the caller's states back."""
    # Not torch.manual_seed: it also queues lazy seeding calls for CUDA, MTIA and XPU, each with a
    # formatted stack trace, even when none is present (0.44 s of a 2.5 s default run).
    torch.random.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


def rng_fingerprint() -> tuple:
    """The global RNG states as comparable values (used to prove an eval call draws nothing)."""
    cuda = tuple(bytes(s.numpy()) for s in torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else ()
    np_state = np.random.get_state()
    return (
        bytes(torch.get_rng_state().numpy()),
        cuda,
        (np_state[0], bytes(np_state[1].tobytes()), np_state[2]),
        random.getstate(),
    )
