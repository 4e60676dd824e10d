"""The conformance matrix: every reference implementation (reference_impls.CATALOGUE) checked
against its contract, and the built-in GPT decoded, each written as JSON (the source of truth),
Markdown and HTML, with an index.md holding the property × implementation table.

    dropcheck matrix --out reports/                # run everything (profile default), then render
    dropcheck matrix --out reports/ --render-only  # re-render the Markdown/HTML from the JSON there
    python -m dropcheck.matrix --out reports/      # the same
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dropcheck import registry
from dropcheck.report import ReportError, load_report, write_rendered
from dropcheck.report import tables as T

GPT_SLUG = "gpt.decode"


def slug(target: str) -> str:
    """`reference_impls.inverted:InvertedDropout` → `inverted.InvertedDropout` (a file name)."""
    return re.sub(r"[^A-Za-z0-9_.-]", ".", target.removeprefix("reference_impls."))


def dump_json(path: Path, data: dict[str, Any]) -> None:
    """Indented JSON with lists of numbers kept on one line (the heat-map grids stay small)."""
    text = json.dumps(data, indent=1, default=str)
    text = re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]", lambda m: "[" + ",".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


def run_matrix(
    out: Path,
    profile: str = "default",
    seed: int | None = None,
    device: str = "cpu",
    catalogue: Sequence[tuple[str, str]] | None = None,
    decode: bool = True,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Check every catalogue entry and decode the built-in GPT; write each report; return them all."""
    from dropcheck.api import decode as run_decode_api
    from dropcheck.defaults import DEFAULT_PS, DEFAULT_SEED
    from dropcheck.runner import check_plan, expand_devices, run_check

    if catalogue is None:
        from reference_impls import CATALOGUE as catalogue
    seed = DEFAULT_SEED if seed is None else seed
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    outer = progress.add("matrix", len(catalogue) + int(decode)) if progress else None
    for target, contract in catalogue:
        inner = progress.add(f"  {target}", len(check_plan(contract, DEFAULT_PS, expand_devices(device)))) if progress else None

        def advance(v: Any, task: int | None = inner) -> None:
            if progress:
                progress.advance(task, v.label)

        result = run_check(target, contract=contract, device=device, seed=seed, profile=profile, on_verdict=advance)
        if getattr(result, "interrupted", False):
            raise KeyboardInterrupt  # Ctrl-C: stop the matrix; the reports written so far stay
        data = result.to_dict()
        _write_all(out, slug(target), data)
        reports.append(data)
        if progress:
            progress.finish(inner, f"{'ok  ' if data['ok'] else 'FAIL'} {target} ({contract}): {_counts(data)} in {data['duration_s']:.0f} s")
            progress.advance(outer, target)
    if decode:
        from dropcheck.decoding import decode_plan

        inner = progress.add("  built-in GPT (decode)", len(decode_plan(expand_devices(device)))) if progress else None

        def advance_decode(v: Any, task: int | None = inner) -> None:
            if progress:
                progress.advance(task, v.label)

        result = run_decode_api(None, device=device, seed=seed, on_verdict=advance_decode)
        if result.interrupted:
            raise KeyboardInterrupt  # as for the checks above
        data = result.to_dict()
        _write_all(out, GPT_SLUG, data)
        reports.append(data)
        if progress:
            progress.finish(inner, f"{'ok  ' if data['ok'] else 'FAIL'} built-in GPT (decode): {_counts(data)} in {data['duration_s']:.0f} s")
            progress.advance(outer, "decode")
    (out / "index.md").write_text(render_index(reports, [_slug_of(d) for d in reports], out))
    return reports


def render_only(out: Path) -> list[dict[str, Any]]:
    """Re-render every JSON report in `out` (Markdown, HTML, index.md) without running anything."""
    reports, slugs = [], []
    for path in sorted(out.glob("*.json")):
        try:
            data = load_report(path)
        except ReportError:  # another tool's JSON in the same folder
            continue
        write_rendered(data, path.with_suffix(".md"), path.with_suffix(".html"))
        reports.append(data)
        slugs.append(path.stem)
    order = {_slug_of(d): i for i, d in enumerate(_catalogue_order())}
    pairs = sorted(zip(reports, slugs), key=lambda rs: order.get(rs[1], len(order)))
    (out / "index.md").write_text(render_index([r for r, _ in pairs], [s for _, s in pairs], out))
    return [r for r, _ in pairs]


def _catalogue_order() -> list[dict[str, Any]]:
    from reference_impls import CATALOGUE

    return [{"target": t, "kind": "check"} for t, _ in CATALOGUE] + [{"kind": "decode", "target": ""}]


def _slug_of(data: dict[str, Any]) -> str:
    return GPT_SLUG if data.get("kind") == "decode" else slug(data["target"])


def _write_all(out: Path, name: str, data: dict[str, Any]) -> None:
    dump_json(out / f"{name}.json", data)
    write_rendered(data, out / f"{name}.md", out / f"{name}.html")


def _counts(data: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for v in data["verdicts"]:
        counts[v["status"]] = counts.get(v["status"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def render_index(reports: list[dict[str, Any]], slugs: list[str], out: Path = Path("reports")) -> str:
    """index.md: the property × implementation table, then one line per implementation with links.
    The commands it gives regenerate this folder, `out`, with the reports' profile."""
    checks = [(d, s) for d, s in zip(reports, slugs) if d.get("kind", "check") == "check"]
    decodes = [(d, s) for d, s in zip(reports, slugs) if d.get("kind") == "decode"]
    first = reports[0] if reports else {}
    profile = first.get("profile", "default")
    command = f"dropcheck matrix --out {out}/" + ("" if profile in (None, "default") else f" --profile {profile}")
    lines = ["# dropcheck conformance matrix", "",
             ("Every reference implementation (`reference_impls.CATALOGUE`) checked against its contract, and the "
              f"built-in GPT decoded. Regenerate with `{command}` (about a minute on 2 CPU cores at the default "
              f"profile); `dropcheck matrix --out {out}/ --render-only` re-renders the Markdown, HTML and this index "
              "from the JSON, which is the source of truth."), ""]
    if first:
        v = first.get("versions", {})
        lines += [(f"Profile `{first.get('profile')}`, seed {first.get('seed')}, devices {', '.join(first.get('devices', []))}; "
                   f"dropcheck {v.get('dropcheck')}, torch {v.get('torch')}, numpy {v.get('numpy')}, scipy {v.get('scipy')}, "
                   f"Python {v.get('python')}, {v.get('platform')}; CUDA devices: {v.get('cuda_devices', 'none')}."), ""]
    if checks:
        lines += ["## Layer properties", "",
                  ("Each cell is the worst verdict over the property's configurations (p, device): "
                   "✅ pass, ❌ fail, 💥 error, ⏱ timeout, ❓ inconclusive, ➖ skip; blank: not part of the contract."), ""]
        head = ["property"] + [f"[[{i + 1}]]({s}.html)" for i, (_, s) in enumerate(checks)]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for prop in (p for p in registry.PROPERTIES.values() if p.kind != "decode"):
            cells = []
            for d, _ in checks:
                statuses = [v["status"] for v in d["verdicts"] if v["property"] == prop.id]
                cells.append(T.SYMBOL[T.worst(statuses)].split()[0] if statuses else "")
            lines.append(f"| `{prop.id}` | " + " | ".join(cells) + " |")
        lines += ["", "| # | implementation | contract | verdict | time | reports |", "|---|---|---|---|---|---|"]
        for i, (d, s) in enumerate(checks):
            lines.append(f"| [{i + 1}] | `{d['target']}` | {d['contract']} | {'✅ conforms' if d['ok'] else '❌ ' + _counts(d)} | "
                         f"{d.get('duration_s', 0):.0f} s | [html]({s}.html) · [md]({s}.md) · [json]({s}.json) |")
        lines.append("")
    for d, s in decodes:
        lines += [f"## Decoding: {d['target']}", "", "| property | " + " | ".join(d.get("devices", [])) + " | statement |",
                  "|---|" + "---|" * len(d.get("devices", [])) + "---|"]
        for prop in registry.for_contract("model", kind="decode"):
            vs = [v for v in d["verdicts"] if v["property"] == prop.id]
            cells = [", ".join(T.SYMBOL[v["status"]] for v in vs if v["device"] == dev) for dev in d.get("devices", [])]
            if prop.id == "DECODE-CPU-CUDA":  # reported on the CUDA device: show it in the first column
                cells = [T.SYMBOL[vs[0]["status"]] if vs else ""] + [""] * (len(cells) - 1)
            lines.append(f"| `{prop.id}` | " + " | ".join(cells) + f" | {prop.statement} |")
        lines += ["", (f"{'✅ conforms' if d['ok'] else '❌ ' + _counts(d)} in {d.get('duration_s', 0):.0f} s: "
                   f"[html]({s}.html) · [md]({s}.md) · [json]({s}.json)"), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from dropcheck.cli import main as cli_main

    return cli_main(["matrix", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
