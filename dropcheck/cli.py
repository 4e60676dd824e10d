"""The `dropcheck` command.

    dropcheck check TARGET [--contract C] [--p P,...] [--device cpu|cuda|all] [--seed N] [--json PATH]
    dropcheck decode [TARGET] [--device ...] [--seed N] [--json PATH]

Exit codes: 0 every property holds; 1 a property failed, errored or timed out; 2 the command cannot
run (bad option, TARGET that does not import or is of neither form); 130 interrupted (Ctrl-C), with
the verdicts gathered so far printed and written. Options are validated before any work starts, so
a bad one never leaves a half-written report behind.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from dropcheck import __version__
from dropcheck.options import CHECK_OPTIONS, DECODE_OPTIONS, DEVICE, PROFILE, SEED, Option

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
MATRIX_OPTIONS: tuple[Option, ...] = (PROFILE, SEED, DEVICE)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job cancelled, `timeout`), handled as Ctrl-C is: the run stops, and the
    verdicts so far are printed and written to the JSON report."""


def _on_sigterm(signum: int, frame: Any) -> None:
    global _terminated
    _terminated = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the report being written
    raise Terminated


_terminated = False


class UsageError(Exception):
    """The command cannot run as given (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, instead of argparse's usage dump
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...]) -> None:
    for opt in options:
        default = f" (default: {opt.default})" if opt.default is not None else ""
        parser.add_argument(f"--{opt.name}", default=opt.default, metavar=opt.metavar, help=opt.help + default)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dropcheck", description="Does your dropout behave as dropout must?")
    parser.add_argument("--version", action="version", version=f"dropcheck {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = sub.add_parser("check", help="check a dropout implementation property by property")
    check.add_argument("target", metavar="TARGET", help="package.module:NAME or path/to/file.py:NAME")
    _add_options(check, CHECK_OPTIONS)
    check.add_argument("--verbose", action="store_true", help="show tracebacks for errors")

    decode = sub.add_parser("decode", help="check that greedy decoding of a model is deterministic in eval mode")
    decode.add_argument("target", metavar="TARGET", nargs="?", default=None,
                        help="zero-argument factory or nn.Module class (default: the built-in GPT)")
    _add_options(decode, DECODE_OPTIONS)
    decode.add_argument("--verbose", action="store_true", help="show tracebacks for errors")

    bench = sub.add_parser("bench", help="measure time to verdict, overhead and MDEs per profile; write reports/performance.md")
    bench.add_argument("--profiles", default="quick,default", help="comma-separated profiles (default: quick,default)")
    bench.add_argument("--out", default="reports/performance.md", help="where to write the Markdown (default: reports/performance.md)")
    bench.add_argument("--target", default="reference_impls.inverted:InvertedDropout", help="TARGET to time")

    report = sub.add_parser("report", help="render a JSON report as Markdown and/or a self-contained HTML file")
    report.add_argument("result", metavar="RESULT.json", help="a report written by --json or dropcheck matrix")
    report.add_argument("--markdown", metavar="FILE", default=None, help="write the Markdown rendering here")
    report.add_argument("--html", metavar="FILE", default=None, help="write the HTML rendering here")

    matrix = sub.add_parser("matrix", help="check every reference implementation and the built-in GPT; write reports/")
    matrix.add_argument("--out", metavar="DIR", default="reports", help="where to write the reports (default: reports)")
    _add_options(matrix, MATRIX_OPTIONS)
    matrix.add_argument("--render-only", action="store_true", help="re-render Markdown, HTML and index.md from the JSON in DIR")
    return parser


def parse_options(args: argparse.Namespace, options: tuple[Option, ...]) -> dict[str, Any]:
    """Validate every option before any work starts; a bad one is a UsageError naming it."""
    out = {}
    for opt in options:
        raw = getattr(args, opt.name.replace("-", "_"))
        try:
            out[opt.name] = None if raw is None else opt.parse(raw)
        except ValueError as e:
            raise UsageError(str(e)) from None
    return out


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a report."""
    umask = os.umask(0o077)  # read (and set back at once): there is no other way to learn it
    os.umask(umask)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o666 & ~umask)  # as any file the user writes (mkstemp makes it private: 0600)
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refuse_overwriting(output: Path | None, option: str, inputs: dict[str, Path | None]) -> None:
    """An output path that names one of the run's inputs (TARGET's source, the report being
    rendered) would destroy it: exit 2 instead."""
    if output is None or not output.exists():
        return
    for what, path in inputs.items():
        with contextlib.suppress(OSError):
            if path is not None and output.samefile(path):
                raise UsageError(f"{option} {output} is {what}: it would be overwritten; "
                                 "choose another path")


class VerdictStream:
    """Prints each verdict as it comes (stdout) and advances the progress bar (stderr)."""

    def __init__(self, con: Any, advance: Any):
        self.con, self.advance = con, advance
        self.shown: set[int] = set()

    def __call__(self, verdict: Any) -> None:
        from dropcheck import console as out

        out.verdict_line(self.con, verdict)
        self.shown.add(id(verdict))
        self.advance(verdict)

    def catch_up(self, verdicts: list[Any]) -> None:
        """Print those a Ctrl-C kept from being printed (it can land between gathering and printing)."""
        from dropcheck import console as out

        for verdict in verdicts:
            if id(verdict) not in self.shown:
                out.verdict_line(self.con, verdict)


@contextlib.contextmanager
def verdict_stream(con: Any, description: str, total: int) -> Iterator[VerdictStream]:
    """A run's `on_verdict`: each verdict printed as it comes, under a progress bar on stderr."""
    from dropcheck.progress import verdict_progress

    with verdict_progress(description, total) as advance:
        yield VerdictStream(con, advance)


def conclude(con: Any, result: Any, json_path: Path | None) -> int:
    """The end of a check or decode run, once its verdicts are printed: a word if Ctrl-C cut it
    short, the JSON report (a failure to write it is an error that says the printed verdicts are
    complete), and the exit code."""
    if result.interrupted:
        by = "terminated (SIGTERM)" if _terminated else "interrupted (Ctrl-C)"
        con.print(f"{by}: the {len(result.verdicts)} verdicts above were gathered before it", style="bold")
    if json_path is not None:
        try:
            write_json_atomically(json_path, result.to_dict())
        except OSError as e:  # the directory went away or became read-only during the run
            raise UsageError(f"could not write the report {json_path}: {e.strerror or e}; "
                             "the verdicts printed above are complete") from e
        con.print(f"wrote {json_path}", style="dim")
    if result.interrupted:
        return EXIT_TERMINATED if _terminated else EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_FAIL


def cmd_check(args: argparse.Namespace) -> int:
    from dropcheck import console as out
    from dropcheck.runner import check_only, check_plan, expand_devices, run_check
    from dropcheck.targets import resolve_within, source_file

    opts = parse_options(args, CHECK_OPTIONS)
    if opts["only"]:
        try:
            check_only(opts["only"], opts["contract"])
        except ValueError as e:
            raise UsageError(str(e)) from None
    resolved = resolve_within(args.target, opts["timeout"])  # TargetError → exit 2 before the header
    refuse_overwriting(opts["json"], "--json", {"TARGET's source file": source_file(resolved.spec)})
    con = out.make_console()
    out.header(con, {"dropcheck": __version__, "target": resolved.spec, "contract": opts["contract"],
                     "profile": opts["profile"], "seed": opts["seed"], "device": opts["device"]})
    start = time.perf_counter()
    total = len(check_plan(opts["contract"], opts["p"], expand_devices(opts["device"]), opts["only"]))
    with verdict_stream(con, f"check {resolved.spec}", total) as stream:
        result = run_check(resolved, contract=opts["contract"],
                           ps=opts["p"], device=opts["device"], seed=opts["seed"], profile=opts["profile"],
                           only=opts["only"], dtype=opts["dtype"], on_verdict=stream,
                           timeout=opts["timeout"], memory_limit_mb=opts["memory-limit"])
    stream.catch_up(result.verdicts)
    out.summary_line(con, result.verdicts, time.perf_counter() - start)
    if result.ledger["tests"]:
        con.print(f"alpha budget {result.ledger['family_alpha']:g} over {result.ledger['tests']} statistical tests "
                  f"({result.ledger['alpha_each']:.2g} each, Bonferroni)", style="dim")
    else:  # every statistical property skipped (no CUDA, p = 0 or 1) or left out by --only
        con.print("no statistical tests in this run", style="dim")
    return conclude(con, result, opts["json"])


def cmd_decode(args: argparse.Namespace) -> int:
    from dropcheck import console as out
    from dropcheck.api import decode
    from dropcheck.decoding import decode_plan
    from dropcheck.models import resolve_model
    from dropcheck.runner import expand_devices
    from dropcheck.targets import source_file, target_code

    opts = parse_options(args, DECODE_OPTIONS)
    try:  # --only naming `check` properties: the plan says which IDs decode has
        total = len(decode_plan(expand_devices(opts["device"]), opts["only"]))
    except ValueError as e:
        raise UsageError(f"--only: {e}") from None
    if args.target:
        with target_code(args.target, opts["timeout"], "importing it"):
            resolve_model(args.target)  # TargetError → exit 2 before the header
        refuse_overwriting(opts["json"], "--json", {"TARGET's source file": source_file(args.target)})
    else:  # the built-in GPT: its context is known before anything runs
        from dropcheck.gpt import GPTConfig

        if opts["max-positions"] > GPTConfig().context_length:
            raise UsageError(f"--max-positions {opts['max-positions']}: the built-in GPT has "
                             f"{GPTConfig().context_length} positions")
    con = out.make_console()
    target = args.target or "built-in GPT (dropcheck.gpt)"
    out.header(con, {"dropcheck": __version__, "decode": target, "seed": opts["seed"], "device": opts["device"]})
    with verdict_stream(con, f"decode {target}", total) as stream:
        result = decode(args.target, device=opts["device"], seed=opts["seed"], max_positions=opts["max-positions"],
                        only=opts["only"], timeout=opts["timeout"], memory_limit_mb=opts["memory-limit"],
                        on_verdict=stream)
    stream.catch_up(result.verdicts)
    out.summary_line(con, result.verdicts, result.duration_s)
    return conclude(con, result, opts["json"])  # the same report as dropcheck.decode(...).to_dict()


def cmd_bench(args: argparse.Namespace) -> int:
    from dropcheck.bench import run_bench
    from dropcheck.ledger import PROFILES

    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        raise UsageError(f"--profiles: unknown profile {', '.join(unknown)}; choose from {', '.join(PROFILES)}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: directory {out.parent} does not exist")
    results = run_bench(profiles, out, args.target)
    for name, r in results.items():
        print(f"{name:<9} wall {r['wall_s']:.2f} s · run {r['lanes_run_s']:.2f} s · overhead {r['overhead_share']:.0%} "
              f"(one core {r['one_core_overhead_share']:.0%}; exact phase {r['exact_run_s']:.2f} s) · "
              f"peak {r['peak_tree_mib'] or float('nan'):.0f} MiB · {'pass' if r['ok'] else 'FAIL'}")
    print(f"wrote {out}")
    return EXIT_OK if all(r["ok"] for r in results.values()) else EXIT_FAIL


def cmd_report(args: argparse.Namespace) -> int:
    from dropcheck.options import parse_output_path
    from dropcheck.report import ReportError, load_report, write_rendered

    if args.markdown is None and args.html is None:
        raise UsageError("nothing to write: give --markdown FILE and/or --html FILE")
    try:
        paths = {k: None if v is None else parse_output_path(v) for k, v in (("markdown", args.markdown), ("html", args.html))}
        data = load_report(args.result)
    except (ValueError, ReportError) as e:
        raise UsageError(str(e)) from None
    for option in ("markdown", "html"):
        refuse_overwriting(paths[option], f"--{option}", {"the report being rendered": Path(args.result)})
    if paths["markdown"] is not None and paths["html"] is not None and paths["markdown"].resolve() == paths["html"].resolve():
        raise UsageError(f"--markdown and --html are both {paths['html']}: give each its own file")
    for path in write_rendered(data, paths["markdown"], paths["html"]):
        print(f"wrote {path}")
    return EXIT_OK


def cmd_matrix(args: argparse.Namespace) -> int:
    from dropcheck.matrix import render_only, run_matrix
    from dropcheck.progress import Progress

    opts = parse_options(args, MATRIX_OPTIONS)
    out = Path(args.out)
    if args.render_only:
        if not out.is_dir():
            raise UsageError(f"--out {out}: no such directory to re-render")
        reports = render_only(out)
    else:
        with Progress() as progress:
            reports = run_matrix(out, profile=opts["profile"], seed=opts["seed"], device=opts["device"], progress=progress)
    for data in reports:
        print(f"{'ok  ' if data['ok'] else 'FAIL'} {data.get('kind', 'check'):<6} {data['target']}")
    print(f"wrote {out / 'index.md'} and {len(reports)} reports (JSON, Markdown, HTML)")
    return EXIT_OK if all(d["ok"] for d in reports) else EXIT_FAIL


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from dropcheck.targets import TargetError  # after parsing: --help stays fast

    global _terminated
    _terminated = False
    # Only from the main thread (where handlers can be set), and not over an inherited SIG_IGN: the
    # parent asked for SIGTERM to be ignored, as Python itself respects for SIGINT.
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    handling = previous is not None and previous is not signal.SIG_IGN
    if handling:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return {"check": cmd_check, "decode": cmd_decode, "bench": cmd_bench,
                "report": cmd_report, "matrix": cmd_matrix}[args.command](args)
    except (UsageError, TargetError) as e:
        if getattr(args, "verbose", False):
            traceback.print_exc()
        message = " ".join(str(e).split())  # one line, whatever the exception text held
        print(f"dropcheck {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before the run started, or while writing the report: nothing half-written
        print(f"dropcheck {args.command}: {'terminated' if _terminated else 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if _terminated else EXIT_INTERRUPTED
    finally:
        if handling:
            signal.signal(signal.SIGTERM, previous)


def run() -> NoReturn:
    """The console entry point: `main`, then a fast exit.

    Everything a command writes is written and closed inside `main` (reports go through a
    temporary file and a rename), so once the streams are flushed nothing is left to do, and
    the interpreter's teardown (0.5 s with torch loaded, a sixth of a `quick` check) is skipped."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    run()
