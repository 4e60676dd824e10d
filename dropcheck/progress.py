"""Progress of long runs, on stderr so that stdout stays the verdict lines.

On a terminal a rich.progress bar (transient: it disappears when the run ends); otherwise, as in
CI logs, plain lines, at most one per `min_interval` seconds per task plus one when it completes.

    with Progress() as progress:
        task = progress.add("check reference_impls.inverted:InvertedDropout", total=32)
        for verdict in ...:
            progress.advance(task, verdict.label)
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, *, min_interval: float = 10.0, console: Console | None = None):
        self.console = console or Console(stderr=True, highlight=False)
        self.min_interval = min_interval
        self.live = self.console.is_terminal
        self._bar: RichProgress | None = None
        self._tasks: dict[int, dict] = {}

    def __enter__(self) -> Progress:  # noqa: PYI034  (typing.Self needs Python 3.11; 3.10 is supported)
        if self.live:
            # Verdict lines printed to stdout go above the bar only when stdout is that terminal too;
            # redirected stdout (`> file`) must stay untouched.
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("[dim]{task.fields[label]}"),
                                     console=self.console, transient=True, redirect_stdout=sys.stdout.isatty(),
                                     redirect_stderr=False)
            self._bar.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def add(self, description: str, total: int | None) -> int:
        """Start a task of `total` steps (None: unknown); returns its id."""
        task = self._bar.add_task(description, total=total, label="") if self._bar else len(self._tasks)
        self._tasks[task] = {"description": description, "total": total, "done": 0, "start": time.monotonic(),
                             "last": time.monotonic()}
        return task

    def advance(self, task: int, label: str = "") -> None:
        t = self._tasks[task]
        t["done"] += 1
        if self._bar is not None:
            self._bar.update(task, advance=1, label=label)
            return
        now = time.monotonic()
        if now - t["last"] >= self.min_interval or t["done"] == t["total"]:
            t["last"] = now
            of = f"/{t['total']}" if t["total"] else ""
            self.console.print(f"{t['description']}: {t['done']}{of} {label} ({now - t['start']:.0f} s)",
                               soft_wrap=True, markup=False)

    def finish(self, task: int, message: str = "") -> None:
        """End a task; `message` is printed (above the bar on a terminal) as its last word."""
        if self._bar is not None:
            self._bar.remove_task(task)
        if message:
            self.console.print(message, soft_wrap=True, markup=False)


@contextlib.contextmanager
def verdict_progress(description: str, total: int | None) -> Iterator[Callable[[Any], None]]:
    """One task for a run: yields `advance(verdict)`, to be called from `run_check`'s on_verdict."""
    with Progress() as progress:
        task = progress.add(description, total)
        yield lambda verdict: progress.advance(task, getattr(verdict, "label", str(verdict)))
