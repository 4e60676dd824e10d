"""dropcheck: does your dropout behave as dropout must?

The public API, loaded lazily so that `import dropcheck` (which the pytest plugin does at every
pytest start) imports neither torch nor scipy until one of these names is used:

    check(target, contract=...)   -> CheckResult   layer-level properties (`dropcheck check`)
    decode(target=None, ...)      -> DecodeResult  DECODE-* properties of a model (`dropcheck decode`)
    strategies                    Hypothesis strategies for writing your own dropout properties
    Verdict, Status, StatTest     what a result holds: one verdict per property and configuration

>>> import dropcheck
>>> result = dropcheck.check("torch.nn:Dropout", profile="quick", only="EVAL-IDENTITY")
>>> assert result.ok, result.summary()
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it ("" for a submodule of the same name)
_LAZY: dict[str, str] = {
    "check": "dropcheck.api",
    "decode": "dropcheck.api",
    "DecodeResult": "dropcheck.api",
    "CheckResult": "dropcheck.runner",
    "Verdict": "dropcheck.verdict",
    "Status": "dropcheck.verdict",
    "StatTest": "dropcheck.verdict",
    "TargetError": "dropcheck.targets",
    "strategies": "",
}

__all__ = ["CheckResult", "DecodeResult", "StatTest", "Status", "TargetError", "Verdict", "__version__", "check",
           "decode", "strategies"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ below does the work
    from dropcheck import strategies
    from dropcheck.api import DecodeResult, check, decode
    from dropcheck.runner import CheckResult
    from dropcheck.targets import TargetError
    from dropcheck.verdict import StatTest, Status, Verdict


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dropcheck' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name] or f"dropcheck.{name}")
    value = module if not _LAZY[name] else getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
