"""The property catalogue: stable IDs with one-line statements.

These IDs are the spine of dropcheck: test names, CLI lines, JSON/Markdown/HTML reports and the
pytest plugin's test IDs all use them. Renaming one is a breaking change.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Property:
    id: str
    statement: str
    kind: str  # "exact" (Hypothesis, no alpha), "statistical" (scipy, alpha from the ledger), "decode"
    contracts: tuple[str, ...] = ("inverted", "classic", "channel", "alpha", "feature-alpha", "droppath")


# The contracts (defined in dropcheck.contracts); named here too so option parsing needs no torch.
CONTRACT_NAMES = ("inverted", "classic", "channel", "alpha", "feature-alpha", "droppath")
ELEMENTWISE_OR_CHANNEL = ("inverted", "classic", "channel", "alpha", "feature-alpha")

_PROPERTIES = [
    # --- exact: every example must hold, checked with Hypothesis --------------------------------
    Property("EVAL-IDENTITY", "In eval mode the output is the input, bitwise (classic: (1-p)·x within one rounding).", "exact"),
    Property("SUPPORT-SCALE", "Each train output is dropped (0; alpha: one constant) or kept as x·s, s rounded to the dtype (alpha: a·x+b).", "exact"),
    Property("MASK-UNIT", "Whole units are dropped together: every element of a channel (channel) or of a sample (droppath).", "exact", ("channel", "droppath", "feature-alpha")),
    Property("P-ZERO", "With p = 0, train mode is the identity.", "exact"),
    Property("P-ONE", "With p = 1, train mode returns all zeros, with no NaN or Inf.", "exact"),
    Property("P-INVALID", "p < 0, p > 1 or NaN is rejected with an exception before any output is returned.", "exact"),
    Property("KEEPS-META", "Shape, dtype and device of the output are those of the input.", "exact"),
    Property("INPUT-UNTOUCHED", "The caller's input tensor is not modified, in train or eval mode.", "exact"),
    Property("GRAD-MASK", "The gradient is exactly the forward's mask times s: backward uses the forward's mask.", "exact"),
    Property("SEED-REPLAY", "The same seed gives the same output; consecutive calls differ; reseeding replays the sequence.", "exact"),
    Property("MODE-ROUNDTRIP", "train→eval→train restores train behaviour and eval→train→eval restores eval behaviour.", "exact"),
    Property("EVAL-RNG-UNTOUCHED", "An eval call leaves the global RNG states (torch, numpy, random) untouched.", "exact"),
    # --- statistical: scipy tests, each with its alpha share and minimum detectable effect -------
    Property("DROP-RATE", "The fraction of dropped units equals p (exact binomial test, sequential early stop).", "statistical"),
    Property("EXPECTATION", "The mean train output equals the eval output at every position.", "statistical", ("inverted", "classic", "channel", "droppath")),
    Property("RATE-HOMOGENEITY", "The drop rate is the same in every block of positions.", "statistical", ELEMENTWISE_OR_CHANNEL),
    Property("RATE-EDGES", "The first and last units of an input of any size drop at rate p (no tail loop with a rate of its own).", "statistical"),
    Property("INDEP-POSITIONS", "Drops at nearby or periodic positions are independent (no clumps, no tiling).", "statistical", ELEMENTWISE_OR_CHANNEL),
    Property("INDEP-ROWS", "Masks of different batch rows are independent (not shared across the batch).", "statistical", ELEMENTWISE_OR_CHANNEL),
    Property("INDEP-CALLS", "Masks of successive calls are independent (not cached, not reused shifted, not exact-count).", "statistical"),
    Property("INDEP-INPUT", "Whether a unit is dropped does not depend on the input values.", "statistical"),
    # --- decoding: a whole model in eval mode (dropcheck decode) ----------------------------------
    Property("DECODE-REPEAT", "Repeated greedy decoding in eval mode gives identical tokens.", "decode", ("model",)),
    Property("DECODE-RNG-FREE", "Eval logits do not depend on the RNG state, and an eval forward leaves the RNG states unchanged.", "decode", ("model",)),
    Property("DECODE-TRAIN-ACTIVE", "In train mode dropout is active: outputs vary between calls and differ from eval.", "decode", ("model",)),
    Property("DECODE-P-ZERO", "Eval output equals, bitwise, the same weights with every dropout probability set to 0.", "decode", ("model",)),
    Property("DECODE-BATCH-INVARIANT", "Each prompt decoded alone gives the same tokens as inside a batch (tie-aware).", "decode", ("model",)),
    Property("DECODE-KV-CACHE", "KV-cache decoding gives the same tokens as full recomputation (tie-aware).", "decode", ("model",)),
    Property("DECODE-CPU-CUDA", "CPU and CUDA greedy tokens agree (tie-aware).", "decode", ("model",)),
    Property("DECODE-MODE-ROUNDTRIP", "train→eval→train leaves dropout active; eval→train→eval leaves it off.", "decode", ("model",)),
]

PROPERTIES: dict[str, Property] = {p.id: p for p in _PROPERTIES}


def for_contract(contract: str, kind: str | None = None) -> list[Property]:
    """The properties that apply to a contract, in catalogue order."""
    return [p for p in _PROPERTIES if contract in p.contracts and (kind is None or p.kind == kind)]


def get(property_id: str) -> Property:
    try:
        return PROPERTIES[property_id]
    except KeyError:
        known = ", ".join(PROPERTIES)
        raise KeyError(f"unknown property {property_id!r}; known: {known}") from None
