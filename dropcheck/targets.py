"""TARGET resolution: the one place that turns `pkg.mod:NAME` or `path/file.py:NAME` into something
dropcheck can call. The CLI, the pytest plugin and the Python API all come through here.

A dropout TARGET is either
- an `nn.Module` subclass, built as `NAME(p)` and switched with `.train()` / `.eval()`, or
- a function with `F.dropout`'s signature, called as `f(input, p, training)`.
Nothing else about the implementation is assumed: it may draw from any global RNG.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn


class TargetError(Exception):
    """TARGET cannot be used: it does not import, does not exist, or is of neither form (exit 2)."""


def load_object(spec: str) -> Any:
    """Import `pkg.mod:NAME` or `path/to/file.py:NAME` and return NAME (dotted NAME allowed).

    >>> load_object("torch.nn:Dropout") is torch.nn.Dropout
    True
    """
    if ":" not in spec:
        hint = ""
        if "." in spec and not spec.endswith(".py"):  # torch.nn.Dropout for torch.nn:Dropout
            module, _, attr = spec.rpartition(".")
            hint = f"; did you mean '{module}:{attr}'?"
        raise TargetError(f"TARGET {spec!r} must look like 'package.module:NAME' or 'path/to/file.py:NAME'{hint}")
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise TargetError(f"TARGET {spec!r} must look like 'package.module:NAME' or 'path/to/file.py:NAME'")
    module = _import_file(spec, where) if where.endswith(".py") or "/" in where else _import_module(spec, where)
    obj: Any = module
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            close = difflib.get_close_matches(part, [n for n in dir(obj) if not n.startswith("_")], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TargetError(f"TARGET {spec!r}: {where} has no attribute {name!r}{hint}") from None
    return obj


def _import_module(spec: str, modname: str) -> Any:
    # A module next to the caller (the usual case for `dropcheck check mymod:X`) must import.
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name and modname.startswith(e.name):
            raise TargetError(f"TARGET {spec!r}: no module named {e.name!r}") from e
        raise TargetError(f"TARGET {spec!r}: importing {modname} failed: {type(e).__name__}: {e}") from e
    except SyntaxError as e:
        raise TargetError(f"TARGET {spec!r}: syntax error in {e.filename} line {e.lineno}: {e.msg}") from e
    except Exception as e:  # the module's own code raised while importing
        raise TargetError(f"TARGET {spec!r}: importing {modname} raised {type(e).__name__}: {e}") from e


def _import_file(spec: str, filename: str) -> Any:
    path = Path(filename).resolve()
    if not path.is_file():
        raise TargetError(f"TARGET {spec!r}: file {filename} does not exist")
    modname = f"_dropcheck_target_{abs(hash(str(path)))}"
    if modname in sys.modules:
        return sys.modules[modname]
    loader_spec = importlib.util.spec_from_file_location(modname, path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    sys.path.insert(0, str(path.parent))  # let the file import its neighbours
    try:
        sys.modules[modname] = module
        loader_spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(modname, None)
        raise TargetError(f"TARGET {spec!r}: syntax error in {e.filename} line {e.lineno}: {e.msg}") from e
    except Exception as e:
        sys.modules.pop(modname, None)
        raise TargetError(f"TARGET {spec!r}: importing {filename} raised {type(e).__name__}: {e}") from e
    except BaseException:  # sys.exit or a time limit during import: never keep the half-run module
        sys.modules.pop(modname, None)
        raise
    return module


class DropoutUnderTest:
    """One configured implementation (a fixed p on a fixed device), with a uniform interface.

    `train(x)` and `eval(x)` each make one call in that mode; `mode_sequence` switches modes the
    way a user would (module: `.train()`/`.eval()`; function: the `training` argument).
    """

    def __init__(self, call: Callable[[torch.Tensor, bool], torch.Tensor], module: nn.Module | None,
                 meter: CallMeter | None = None):
        self._call = call
        self.module = module
        self.meter = meter

    def train(self, x: torch.Tensor) -> torch.Tensor:
        return self._metered(x, True)

    def eval(self, x: torch.Tensor) -> torch.Tensor:
        return self._metered(x, False)

    def _metered(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if self.meter is None:
            return self._call(x, training)
        start = time.perf_counter()
        try:
            return self._call(x, training)
        finally:
            self.meter.add(x, training, time.perf_counter() - start)


@dataclasses.dataclass
class CallMeter:
    """Time spent inside the implementation's own calls, for `dropcheck bench`'s overhead figure.
    Records each call's shape, dtype and mode so a bare loop can replay the same calls."""

    calls: int = 0
    seconds: float = 0.0
    elements: int = 0
    log: list[tuple[tuple[int, ...], torch.dtype, bool]] = dataclasses.field(default_factory=list)

    def add(self, x: torch.Tensor, training: bool, seconds: float) -> None:
        self.calls += 1
        self.seconds += seconds
        self.elements += x.numel()
        self.log.append((tuple(x.shape), x.dtype, training))


@dataclasses.dataclass
class DropoutTarget:
    """A resolved dropout TARGET. `build(p, device)` gives a `DropoutUnderTest`."""

    spec: str
    obj: Any
    kind: str  # "module" or "function"
    meter: CallMeter | None = None  # set by `dropcheck bench` to time the implementation's calls

    @property
    def name(self) -> str:
        return getattr(self.obj, "__qualname__", None) or getattr(self.obj, "__name__", None) or repr(self.obj)

    def check_constructible(self) -> None:
        """A module class must accept `NAME(p)`; one that rejects a valid p cannot be checked (exit 2)."""
        if self.kind != "module":
            return
        try:
            module = self.obj(0.5)
        except Exception as e:
            raise TargetError(f"TARGET {self.spec!r}: constructor rejects p: {self.name}(0.5) raised {type(e).__name__}: {e} "
                              f"(a module class is built as NAME(p): give it a p argument, or check a function "
                              f"f(input, p, training) that builds it)") from e
        if not isinstance(module, nn.Module):
            raise TargetError(f"TARGET {self.spec!r}: {self.name}(0.5) returned {type(module).__name__}, not an nn.Module")

    def build(self, p: float, device: str = "cpu") -> DropoutUnderTest:
        if self.kind == "module":
            module = self.obj(p)
            if not isinstance(module, nn.Module):
                raise TypeError(f"{self.name}({p}) returned {type(module).__name__}, not an nn.Module")
            module = module.to(device)

            def call(x: torch.Tensor, training: bool) -> torch.Tensor:
                module.train(training)
                return module(x)

            return DropoutUnderTest(call, module, self.meter)

        fn = self.obj

        def call_fn(x: torch.Tensor, training: bool) -> torch.Tensor:
            return fn(x, p, training)

        return DropoutUnderTest(call_fn, None, self.meter)


def resolve_dropout(target: str | Any) -> DropoutTarget:
    """Resolve a TARGET string, a module class or a function into a `DropoutTarget`.

    >>> resolve_dropout("torch.nn:Dropout").kind
    'module'
    """
    if isinstance(target, DropoutTarget):
        return target
    spec = target if isinstance(target, str) else describe_object(target)
    obj = load_object(target) if isinstance(target, str) else target
    if inspect.isclass(obj):
        if issubclass(obj, nn.Module):
            return DropoutTarget(spec, obj, "module")
        raise TargetError(f"TARGET {spec!r} is a class but not an nn.Module subclass")
    if isinstance(obj, nn.Module):
        raise TargetError(
            f"TARGET {spec!r} is a module instance; give its class (built as NAME(p)) or a function f(input, p, training)"
        )
    if callable(obj):
        if not _accepts_three_positional(obj):
            raise TargetError(
                f"TARGET {spec!r} is a function that cannot be called as f(input, p, training)"
            )
        return DropoutTarget(spec, obj, "function")
    raise TargetError(
        f"TARGET {spec!r} is of type {type(obj).__name__}: expected an nn.Module subclass or a function f(input, p, training)"
    )


def _accepts_three_positional(fn: Callable) -> bool:
    try:
        inspect.signature(fn).bind(None, None, None)
    except TypeError:
        return False
    except ValueError:  # builtins without a signature: give them the benefit of the doubt
        return True
    return True


def source_file(spec: str) -> Path | None:
    """The file a loaded TARGET `spec` names: `path/file.py:NAME`'s path, or the module's file.

    >>> source_file("dropcheck.gpt:GPTModel").name
    'gpt.py'
    """
    where = spec.rpartition(":")[0]
    if where.endswith(".py") or "/" in where:
        return Path(where)
    found = getattr(sys.modules.get(where), "__file__", None)
    return Path(found) if found else None


def describe_object(obj: Any) -> str:
    """A TARGET spec for an object passed in (the API, the plugin's own tests): `pkg.mod:NAME`.
    Some have no name `dropcheck check` could load (see `replayable`): functions' locals, lambdas, and
    whatever the running script defines (`__main__`; loading the script by its path would run it)."""
    mod = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    return f"{mod}:{name}"


def replayable(spec: str) -> bool:
    """Whether `dropcheck check SPEC` can load the TARGET again (not a local function or a lambda).

    >>> replayable("reference_impls.inverted:InvertedDropout"), replayable("__main__:test.<locals>.f")
    (True, False)
    """
    return "<" not in spec and not spec.startswith("__main__:")


def no_replay(spec: str, api_call: str) -> str:
    """The replay line of a TARGET that is not `replayable`: how to replay it through the API."""
    return f"none from the command line: TARGET {spec} has no name it could load (move it to a module for that); call {api_call}"


def resolve_within(target: str, timeout: float | None) -> DropoutTarget:
    """Import TARGET and build it once, within the time limit: an import or a constructor that
    hangs or calls sys.exit is a TARGET problem (exit 2), like one that raises."""
    with target_code(target, timeout, "importing it and building it with p=0.5"):
        resolved = resolve_dropout(target)
        resolved.check_constructible()
    return resolved


class _ExitCalled(BaseException):
    """os._exit(status), called by a TARGET's own code in this process, turned into an exception."""

    def __init__(self, status: int):
        super().__init__(status)
        self.code = status


# While a TARGET's code runs in this process (its import, a first build), os._exit called from that
# same thread raises _ExitCalled: otherwise an import or a constructor calling os._exit(0) would end
# dropcheck at once, silently, with exit 0, which CI reads as a pass. Any other thread, and any
# process the TARGET forks meanwhile, exits for real. The wrapper is installed while at least one
# thread is inside `_os_exit_raises` and taken out when the last one leaves.
_exit_state = threading.local()
_exit_lock = threading.Lock()
_exit_users = 0
_real_os_exit = os._exit  # what os._exit was when the first thread came in


def _os_exit_or_raise(status: int) -> None:
    if getattr(_exit_state, "armed_in", None) == os.getpid():
        raise _ExitCalled(status)
    _real_os_exit(status)


@contextlib.contextmanager
def _os_exit_raises() -> Iterator[None]:
    global _exit_users, _real_os_exit
    with _exit_lock:
        if _exit_users == 0:
            _real_os_exit, os._exit = os._exit, _os_exit_or_raise
        _exit_users += 1
    outer = getattr(_exit_state, "armed_in", None)
    _exit_state.armed_in = os.getpid()
    try:
        yield
    finally:
        _exit_state.armed_in = outer
        with _exit_lock:
            _exit_users -= 1
            if _exit_users == 0 and os._exit is _os_exit_or_raise:
                os._exit = _real_os_exit


@contextlib.contextmanager
def target_code(target: str, timeout: float | None, doing: str) -> Iterator[None]:
    """Run a TARGET's own code in this process (its import, a first build) within the time limit
    (SIGALRM, dropcheck.alarm): a hang, a sys.exit or an os._exit there is a TARGET problem, a
    TargetError."""
    from dropcheck.alarm import TimeLimitExceeded, alarm

    try:
        with alarm(timeout), _os_exit_raises():
            yield
    except TimeLimitExceeded:
        raise TargetError(f"TARGET {target!r}: {doing} did not finish within {timeout:g} s (--timeout)") from None
    except SystemExit as e:
        raise TargetError(f"TARGET {target!r}: {doing} called sys.exit({e.code!r})") from e
    except _ExitCalled as e:
        raise TargetError(f"TARGET {target!r}: {doing} called os._exit({e.code!r})") from None
