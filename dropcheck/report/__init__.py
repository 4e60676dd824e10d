"""Reports: a JSON report (the source of truth, schema "dropcheck-report/1") rendered for people.

    dropcheck report result.json --markdown result.md --html result.html

`tables` reads the JSON into rows, `markdown` and `html` render them, `figures` draws the plots.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dropcheck.report.tables import SCHEMA


class ReportError(ValueError):
    """The file is not a dropcheck JSON report this version can render."""


def load_report(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise ReportError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ReportError(f"{path}: schema {found!r}, expected {SCHEMA!r}")
    if not isinstance(data.get("verdicts"), list):
        raise ReportError(f"{path}: no verdicts list")
    return data


def write_rendered(data: dict[str, Any], markdown: Path | None = None, html: Path | None = None) -> list[Path]:
    """Render `data` to the files asked for; returns the paths written."""
    written = []
    if markdown is not None:
        from dropcheck.report.markdown import render_markdown

        markdown.write_text(render_markdown(data) + "\n")
        written.append(markdown)
    if html is not None:
        from dropcheck.report.html import render_html

        html.write_text(render_html(data))
        written.append(html)
    return written
