"""What the CLI prints: a header that says how to replay the run, one line per verdict, a summary.

Colour only on a terminal (rich decides); lines never wrap, so the output greps and diffs well.
"""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from dropcheck.verdict import Status, Verdict

STYLE = {
    Status.PASS: "green",
    Status.FAIL: "bold red",
    Status.ERROR: "bold magenta",
    Status.TIMEOUT: "bold magenta",
    Status.SKIP: "dim",
    Status.INCONCLUSIVE: "yellow",
}


def make_console(stderr: bool = False) -> Console:
    return Console(highlight=False, soft_wrap=True, stderr=stderr)


def header(console: Console, fields: dict[str, Any]) -> None:
    console.print(escape(" · ".join(f"{k} {v}" for k, v in fields.items())))


def verdict_line(console: Console, v: Verdict, id_width: int = 22) -> None:
    where = " ".join(x for x in (f"p={v.p:g}" if v.p is not None else "", v.dtype or "", v.device) if x)
    status = v.status.value.upper()
    console.print(
        # One line per verdict, even when an implementation's exception message spans several.
        f"[{STYLE[v.status]}]{status:<7}[/] {v.property_id:<{id_width}} {escape(where):<20} "
        f"{escape(' | '.join(v.summary.splitlines()))}"
    )
    if v.status.is_failure or v.status == Status.INCONCLUSIVE:
        console.print(f"        replay: {escape(v.replay)}", style="dim")


def summary_line(console: Console, verdicts: list[Verdict], seconds: float) -> None:
    counts: dict[Status, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    words = {Status.PASS: "passed", Status.FAIL: "failed", Status.ERROR: "errored", Status.TIMEOUT: "timed out",
             Status.SKIP: "skipped", Status.INCONCLUSIVE: "inconclusive"}
    parts = [f"[{STYLE[s]}]{counts[s]} {words[s]}[/]" for s in Status if s in counts]
    console.print(f"{', '.join(parts) or 'no properties ran'} in {seconds:.1f} s")
