"""The pytest plugin: the conformance suite as ordinary pytest tests, in the user's own repository.

    pytest --dropcheck-target=mypkg.layers:MyDropout --dropcheck-contract=inverted
    pytest --dropcheck-decode-target=mypkg.model:make_model

Each property becomes one test per (p, device) where those vary, named by its property ID, e.g.
`dropcheck::DROP-RATE[p=0.1-cpu]` or `dropcheck::EVAL-IDENTITY[cpu]`, so a failure names the
broken property. Every test runs one slice of the same run `dropcheck check` makes (same seeds,
same alpha ledger planned over the whole run), so its replay line reproduces it exactly. Works with
`-n auto` (pytest-xdist: each worker runs the slices it is given) and `--junitxml` (each test
carries its property, status and replay command as properties).

Registered under the `pytest11` entry point and import-light: this module imports pytest and
dropcheck's option definitions only; torch, scipy and the target load in `pytest_configure`, and
only when a `--dropcheck-*TARGET` option is given. The options are those of the CLI
(`dropcheck.options`) with the `--dropcheck-` prefix: one definition serves both.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from dropcheck import __version__
from dropcheck.options import CHECK_OPTIONS, DECODE_OPTIONS, Option

PREFIX = "dropcheck-"
SHARED_OPTIONS: tuple[Option, ...] = tuple(dict.fromkeys(CHECK_OPTIONS + DECODE_OPTIONS))


def _dest(opt: Option) -> str:
    return f"{PREFIX}{opt.name}".replace("-", "_")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dropcheck", "dropcheck: dropout conformance tests")
    group.addoption(f"--{PREFIX}target", dest="dropcheck_target", metavar="TARGET", default=None,
                    help="run the conformance suite against this dropout: package.module:NAME or path/to/file.py:NAME")
    group.addoption(f"--{PREFIX}decode-target", dest="dropcheck_decode_target", metavar="TARGET", default=None,
                    help="run the decoding checks against this model factory or nn.Module class "
                         "(dropcheck.gpt:GPTModel is the built-in GPT)")
    for opt in SHARED_OPTIONS:
        default = f" (default: {opt.default})" if opt.default is not None else ""
        group.addoption(f"--{PREFIX}{opt.name}", dest=_dest(opt), metavar=opt.metavar, default=None,
                        help=opt.help + default)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The parsed options of one run; every worker of an xdist run derives the same tests from it."""

    target: str | None
    decode_target: str | None
    values: dict[str, Any]  # option name -> parsed value
    raw: dict[str, str | None]  # option name -> the text given (or the default), for the replay line
    # Per device, the timeouts in a row of this process's statistical slices (dropcheck.hangs): once
    # 3 in a row have timed out, the later ones of a property that timed out are not run
    # (INCONCLUSIVE at once, as in one `dropcheck check` run) instead of each waiting out its limit.
    hangs: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def replay(self) -> str:
        parts = ["pytest"]
        if self.target:
            parts.append(f"--{PREFIX}target={self.target}")
        if self.decode_target:
            parts.append(f"--{PREFIX}decode-target={self.decode_target}")
        relevant = dict.fromkeys((CHECK_OPTIONS if self.target else ()) + (DECODE_OPTIONS if self.decode_target else ()))
        always = {"contract", "profile", "seed", "p"}  # what a reader needs to know to replay, even at its default
        for opt in relevant:
            text = self.raw[opt.name]
            if text is not None and opt.name != "json" and (opt.name in always or text != opt.default):
                parts.append(f"--{PREFIX}{opt.name}={text}")
        return " ".join(parts)


def pytest_configure(config: pytest.Config) -> None:
    target = config.getoption("dropcheck_target")
    decode_target = config.getoption("dropcheck_decode_target")
    given = [f"--{PREFIX}{o.name}" for o in SHARED_OPTIONS if config.getoption(_dest(o)) is not None]
    if not target and not decode_target:
        if given:
            raise pytest.UsageError(f"{', '.join(given)} given without --{PREFIX}target or --{PREFIX}decode-target")
        return  # the plugin stays out of the way: nothing imported, nothing collected, no other hooks
    values, raw = {}, {}
    for opt in SHARED_OPTIONS:
        given_text = config.getoption(_dest(opt))
        text = opt.default if given_text is None else given_text
        try:
            values[opt.name] = None if text is None else opt.parse(text)
        except ValueError as e:
            raise pytest.UsageError(str(e).replace(f"--{opt.name}:", f"--{PREFIX}{opt.name}:")) from None
        raw[opt.name] = text
    settings = Settings(target, decode_target, values, raw)
    _resolve(settings)  # a TARGET that does not import is a usage error, before any test runs
    config.pluginmanager.register(DropcheckRun(settings), "dropcheck-run")


def _resolve(settings: Settings) -> None:
    # As the CLI: a TARGET that hangs or exits while importing is an error.
    from dropcheck.targets import TargetError, resolve_within, target_code

    try:
        if settings.target:
            resolve_within(settings.target, settings.values.get("timeout"))
        if settings.decode_target:
            from dropcheck.models import resolve_model

            with target_code(settings.decode_target, settings.values.get("timeout"), "importing it"):
                resolve_model(settings.decode_target)
    except TargetError as e:
        raise pytest.UsageError(f"dropcheck: {e}") from None


# ---- the tests ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Slice:
    """One test: a property at one p (statistical only) on one device, for the check or decode run."""

    kind: str  # "check" or "decode"
    property_id: str
    device: str
    p: float | None = None
    dtype: str | None = None  # shown only when the statistical samples are not float32

    @property
    def name(self) -> str:
        parts = ([f"p={self.p:g}"] if self.p is not None else []) + ([self.dtype] if self.dtype else []) + [self.device]
        return f"{self.property_id}[{'-'.join(parts)}]"


def plan(settings: Settings) -> list[Slice]:
    """The tests of a run, in the order `dropcheck check` / `dropcheck decode` print their verdicts."""
    from dropcheck import registry
    from dropcheck.runner import expand_devices

    devices = expand_devices(settings["device"])
    out: list[Slice] = []
    if settings.target:
        props = registry.for_contract(settings["contract"])
        if settings["only"]:
            props = [p for p in props if p.id in settings["only"]]
        dtype = None if settings["dtype"] == "float32" else settings["dtype"]
        # Not runner.check_plan: the test IDs must not depend on the machine, so a statistical
        # property has one test per p on CUDA also where CUDA is absent (each then skips).
        for dev in devices:
            out += [Slice("check", p.id, dev) for p in props if p.kind == "exact"]
            out += [Slice("check", prop.id, dev, p, dtype) for p in settings["p"] for prop in props if prop.kind == "statistical"]
    if settings.decode_target:
        from dropcheck.decoding import decode_plan

        only = [pid for pid in settings["only"] if registry.get(pid).kind == "decode"] if settings["only"] else None
        out += [Slice("decode", pid, dev) for pid, dev in decode_plan(devices, only)]
    return out


class VerdictFailure(Exception):
    """A property did not hold; carries the verdict for the failure report."""

    def __init__(self, verdict: Any):
        super().__init__(verdict.summary)
        self.verdict = verdict


class DropcheckItem(pytest.Item):
    """One property slice run as a test; its outcome is the verdict's status."""

    def __init__(self, *, slice: Slice, settings: Settings, **kwargs: Any):
        super().__init__(**kwargs)
        self.slice, self.settings = slice, settings
        self.verdict: Any = None
        self.user_properties.append(("dropcheck_property", slice.property_id))

    def runtest(self) -> None:
        from dropcheck.verdict import Status

        self.verdict = v = run_slice(self.settings, self.slice)
        self.user_properties += [("dropcheck_status", v.status.value), ("dropcheck_replay", v.replay)]
        if v.status == Status.SKIP:
            pytest.skip(f"{self.slice.property_id}: {v.summary}")
        if v.status != Status.PASS:
            raise VerdictFailure(v)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, VerdictFailure):
            return describe_failure(excinfo.value.verdict)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"dropcheck {self.slice.kind} {self.name}"


def run_slice(settings: Settings, s: Slice) -> Any:
    """Run one slice and return its verdict (the same verdict the full CLI run gives it)."""
    if s.kind == "decode":
        from dropcheck.decoding import run_decode
        from dropcheck.runner import expand_devices

        devices = expand_devices(settings["device"]) if s.property_id == "DECODE-CPU-CUDA" else [s.device]
        extra = {"max_positions": settings.values["max-positions"]} if "max-positions" in settings.values else {}
        verdicts = run_decode(settings.decode_target, devices=tuple(devices), seed=settings["seed"],
                              only=[s.property_id], **extra, **limits(settings))
    else:
        from dropcheck.runner import run_check

        def select(pid: str, p: float | None, dev: str) -> bool:  # p None: exact, or CUDA skipped
            return pid == s.property_id and dev == s.device and (p is None or p == s.p)

        result = run_check(settings.target, contract=settings["contract"], ps=settings["p"],
                           device=settings["device"], seed=settings["seed"], profile=settings["profile"],
                           only=settings["only"], dtype=settings["dtype"], select=select,
                           hangs=settings.hangs, **limits(settings))
        if getattr(result, "interrupted", False):
            raise KeyboardInterrupt  # the runner caught Ctrl-C; pytest must see it to stop the session
        verdicts = result.verdicts
    if len(verdicts) != 1:
        raise RuntimeError(f"dropcheck: slice {s.name} gave {len(verdicts)} verdicts, expected 1")
    return verdicts[0]


def limits(settings: Settings) -> dict[str, Any]:
    """The CLI's per-property limits (--dropcheck-timeout, --dropcheck-memory-limit), where defined."""
    names = {"timeout": "timeout", "memory-limit": "memory_limit_mb"}
    return {arg: settings.values[opt] for opt, arg in names.items() if opt in settings.values}


def describe_failure(v: Any) -> str:
    """The failure text pytest shows: the statement, the evidence, every rejected test, the replay."""
    from dropcheck import registry

    lines = [f"{v.label} {v.status.value.upper()}: {v.summary}",
             f"  property: {registry.get(v.property_id).statement}"]
    for t in v.tests:
        mark = "≤" if t.rejected else ">"
        lines.append(f"  test {t.name}: p-value {t.pvalue:.3g} {mark} alpha {t.alpha:.2g} (n={t.n})")
    for key in ("exception", "traceback"):  # the implementation's own traceback, where it raised
        if v.evidence.get(key):
            lines.append("  " + str(v.evidence[key]).rstrip().replace("\n", "\n  "))
    lines.append(f"  replay: {v.replay}")
    return "\n".join(lines)


class DropcheckRun:
    """The hooks of a run with a dropcheck TARGET, registered by `pytest_configure` only then."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.verdicts: dict[str, dict[str, Any]] = {}  # nodeid -> verdict dict, from every worker

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        s, lines = self.settings, []
        if s.target:
            lines.append(f"dropcheck {__version__}: target {s.target}, contract {s['contract']}, profile {s['profile']}, "
                         f"seed {s['seed']}, p {s.raw['p']}, device {s['device']}, dtype {s['dtype']}")
        if s.decode_target:
            lines.append(f"dropcheck {__version__}: decode target {s.decode_target}, seed {s['seed']}, device {s['device']}")
        lines.append(f"dropcheck replay: {s.replay()}")
        return lines

    @pytest.hookimpl(tryfirst=True)  # before -k / -m / --deselect filter the items
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[pytest.Item]) -> None:
        # Collected like any other node (genitems reports it), so "collected N items" counts them.
        suite = DropcheckSuite.from_parent(session, name="dropcheck", nodeid="dropcheck", settings=self.settings)
        items.extend(session.genitems(suite))

    # The verdicts travel on the test reports, so xdist workers send them to the controller too.
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        if isinstance(item, DropcheckItem) and call.when == "call" and item.verdict is not None:
            report.dropcheck_verdict = json.loads(json.dumps(item.verdict.to_dict(), default=str))
            report.dropcheck_kind = item.slice.kind
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        verdict = getattr(report, "dropcheck_verdict", None)
        if verdict is not None:
            self.verdicts[report.nodeid] = {"kind": getattr(report, "dropcheck_kind", "check"), "verdict": verdict}

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.settings["json"] is None or hasattr(session.config, "workerinput"):
            return  # an xdist worker: the controller writes the report
        written = write_reports(self.settings, plan(self.settings), self.verdicts)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for path in written if reporter is not None else []:
            reporter.write_line(f"dropcheck: wrote {path}")


class DropcheckSuite(pytest.Collector):
    """The `dropcheck` node: its children are the property tests of the run."""

    def __init__(self, *, settings: Settings, **kwargs: Any):
        super().__init__(**kwargs)
        self.settings = settings

    def collect(self) -> list[pytest.Item]:
        # The node ID given as text, as pytest writes it to its cache: derived from the parent, the
        # "[cpu]" of a name would stay part of the name, where pytest 9 reads it back from the
        # cache as parameters; the two would never match, and --lf / --ff would not find the
        # failed tests.
        return [DropcheckItem.from_parent(self, name=s.name, nodeid=f"{self.nodeid}::{s.name}", slice=s,
                                          settings=self.settings) for s in plan(self.settings)]


def write_reports(settings: Settings, slices: list[Slice], verdicts: dict[str, dict[str, Any]]) -> list[Path]:
    """Write the JSON report(s) of the tests that ran, in plan order: the check run to the
    --dropcheck-json path, the decode run there too or, when both ran, beside it as NAME.decode.json."""
    import datetime

    from dropcheck.cli import write_json_atomically
    from dropcheck.runner import CheckResult, expand_devices, plan_ledger, versions

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    path: Path = settings["json"]
    ran = {kind: [verdict_from_dict(verdicts[f"dropcheck::{s.name}"]["verdict"]) for s in slices
                  if s.kind == kind and f"dropcheck::{s.name}" in verdicts] for kind in ("check", "decode")}
    written = []
    if settings.target:
        devices = expand_devices(settings["device"])
        ledger = plan_ledger(settings["contract"], settings["p"], _runnable(devices), settings["profile"])
        result = CheckResult(settings.target, settings["contract"], settings["profile"], settings["seed"], settings["p"],
                             devices, ran["check"], ledger.to_dict(), now, now, sum(v.duration_s for v in ran["check"]),
                             versions(), dtype=settings["dtype"])
        write_json_atomically(path, {**result.to_dict(), "runner": "pytest plugin", "replay": settings.replay()})
        written.append(path)
    if settings.decode_target:
        from dropcheck.api import DecodeResult
        from dropcheck.decoding import DEFAULT_MAX_POSITIONS

        max_positions = settings.values.get("max-positions") or DEFAULT_MAX_POSITIONS
        decode_path = path.with_name(f"{path.stem}.decode.json") if settings.target else path
        result = DecodeResult(settings.decode_target, settings["seed"], expand_devices(settings["device"]),
                              max_positions, ran["decode"], now, now,
                              sum(v.duration_s for v in ran["decode"]), versions())
        write_json_atomically(decode_path, {**result.to_dict(), "runner": "pytest plugin", "replay": settings.replay()})
        written.append(decode_path)
    return written


def _runnable(devices: list[str]) -> list[str]:
    import torch

    return [d for d in devices if d == "cpu" or torch.cuda.is_available()]


def verdict_from_dict(d: dict[str, Any]) -> Any:
    """The inverse of `Verdict.to_dict` (the verdicts come back from xdist workers as dicts)."""
    from dropcheck.verdict import StatTest, Status, Verdict

    tests = [StatTest(**{k: v for k, v in t.items() if k != "rejected"}) for t in d.get("tests", [])]
    return Verdict(d["property"], Status(d["status"]), d["summary"], device=d["device"], p=d["p"], dtype=d["dtype"],
                   seed=d["seed"], replay=d["replay"], duration_s=d["duration_s"], tests=tests, evidence=d["evidence"])
