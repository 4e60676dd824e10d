"""Option definitions shared by the CLI (`--contract`) and the pytest plugin (`--dropcheck-contract`).

One definition serves both, so names, defaults, choices and validation can never drift apart.
Every parser raises `ValueError` with a message that names the option and the bad value.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dropcheck.defaults import DEFAULT_CONTRACT, DEFAULT_PROFILE, DEFAULT_PS, DEFAULT_SEED
from dropcheck.guard import DEFAULT_MEMORY_LIMIT_MB, DEFAULT_TIMEOUT_S
from dropcheck.ledger import PROFILES
from dropcheck.registry import CONTRACT_NAMES


def parse_ps(text: str) -> list[float]:
    """'0.1,0.5' → [0.1, 0.5]; each p must be a number in [0, 1]."""
    out = []
    for part in str(text).split(","):
        try:
            p = float(part)
        except ValueError:
            raise ValueError(f"--p: {part.strip()!r} is not a number") from None
        if math.isnan(p) or not 0.0 <= p <= 1.0:
            raise ValueError(f"--p: {part.strip()} is outside [0, 1]")
        out.append(p)
    return out


def parse_int_at_least(option: str, minimum: int, why: str) -> Callable[[str | int], int]:
    """A parser for an integer option that must be ≥ `minimum`; `why` ends the message otherwise."""

    def parse(text: str | int) -> int:
        try:
            n = int(str(text), 10)
        except ValueError:
            raise ValueError(f"--{option}: {text!r} is not an integer") from None
        if n < minimum:
            raise ValueError(f"--{option}: {n} is {why}")
        return n

    return parse


parse_seed = parse_int_at_least("seed", 0, "negative; seeds are integers ≥ 0")


def parse_choice(option: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        for choice in choices:  # in any case, as --only takes property IDs
            if text.lower() == choice.lower():
                return choice
        raise ValueError(f"--{option}: {text!r} is not one of {', '.join(choices)}")

    return parse


def parse_only(text: str) -> list[str]:
    from dropcheck.registry import PROPERTIES

    ids = [t.strip().upper() for t in str(text).split(",") if t.strip()]
    unknown = [i for i in ids if i not in PROPERTIES]
    if unknown:
        import difflib

        close = [m for i in unknown for m in difflib.get_close_matches(i, list(PROPERTIES), n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"--only: unknown property {', '.join(unknown)}{hint}; known: {', '.join(PROPERTIES)}")
    return ids


def parse_limit(option: str) -> Callable[[str], float | None]:
    """A finite number ≥ 0 (seconds, MiB); 0 means no limit and parses to None."""

    def parse(text: str) -> float | None:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"--{option}: {text!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"--{option}: {text} must be a finite number ≥ 0 (0: no limit)")
        return value or None

    return parse


def parse_output_path(text: str) -> Path:
    """An output file whose directory exists and is writable (checked before any work starts)."""
    path = Path(text)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"output path {text}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"output path {text}: directory {parent} is not writable")
    if path.is_dir():
        raise ValueError(f"output path {text} is a directory")
    return path


@dataclasses.dataclass(frozen=True)
class Option:
    name: str  # CLI: --NAME, pytest: --dropcheck-NAME
    help: str
    default: Any
    parse: Callable[[str], Any]
    metavar: str | None = None


CONTRACT = Option("contract", "what the implementation claims to be: " + ", ".join(CONTRACT_NAMES), DEFAULT_CONTRACT,
                  parse_choice("contract", CONTRACT_NAMES), "NAME")
PS = Option("p", "drop probabilities for the statistical properties, comma-separated",
            ",".join(map(str, DEFAULT_PS)), parse_ps, "P[,P...]")
DEVICE = Option("device", "cpu, cuda or all (CUDA is skipped with a reason when absent)", "cpu",
                parse_choice("device", ("cpu", "cuda", "all")), "DEVICE")
SEED = Option("seed", "seed that replays the whole run", str(DEFAULT_SEED), parse_seed, "N")
PROFILE = Option("profile", "how hard to look: " + ", ".join(f"{p.name} ({p.description})" for p in PROFILES.values()),
                 DEFAULT_PROFILE, parse_choice("profile", tuple(PROFILES)), "NAME")
DTYPE = Option("dtype", "dtype of the statistical samples (exact properties try every float dtype): "
               "float16, bfloat16, float32, float64", "float32",
               parse_choice("dtype", ("float16", "bfloat16", "float32", "float64")), "DTYPE")
ONLY = Option("only", "run only these property IDs, comma-separated", None, parse_only, "ID[,ID...]")
JSON = Option("json", "write every verdict with its evidence to this JSON file", None, parse_output_path, "PATH")
TIMEOUT = Option("timeout", "time limit per property check in seconds, 0 for none; a check that runs over "
                 "gets a TIMEOUT verdict and the run goes on", f"{DEFAULT_TIMEOUT_S:g}", parse_limit("timeout"), "SECONDS")
MEMORY_LIMIT = Option("memory-limit", "how far one property check's process may grow, in MiB, 0 for no limit "
                      "(Linux, CPU); beyond it the check's verdict is an out-of-memory error",
                      f"{DEFAULT_MEMORY_LIMIT_MB:g}", parse_limit("memory-limit"), "MIB")

MAX_POSITIONS = Option("max-positions", "prompt plus generated tokens stay within this many positions (the built-in GPT has 64)", "32",
                       parse_int_at_least("max-positions", 4, "too small; prompts and new tokens need at least 4 positions"),
                       "N")

CHECK_OPTIONS: tuple[Option, ...] = (CONTRACT, PS, DEVICE, SEED, PROFILE, DTYPE, ONLY, JSON, TIMEOUT, MEMORY_LIMIT)
DECODE_OPTIONS: tuple[Option, ...] = (DEVICE, SEED, MAX_POSITIONS, ONLY, JSON, TIMEOUT, MEMORY_LIMIT)
