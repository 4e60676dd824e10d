"""Reports: the JSON's schema and provenance, the Markdown and HTML renderings, `dropcheck report`,
the matrix index, and the HTML opened in a real headless browser (chromium)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dropcheck.cli import main
from dropcheck.matrix import dump_json, render_index, render_only
from dropcheck.progress import Progress
from dropcheck.report import ReportError, load_report, write_rendered
from dropcheck.report import tables as T
from dropcheck.report.html import render_html
from dropcheck.report.markdown import render_markdown
from dropcheck.runner import run_check

# Drops more in the first half of the positions: RATE-HOMOGENEITY fails, the heat map shows it.
BIASED = "tests.broken_impls:positional_bias"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    result = run_check(BIASED, profile="quick", ps=[0.2, 0.5], seed=11,
                       only=["EVAL-IDENTITY", "DROP-RATE", "RATE-HOMOGENEITY"])
    path = tmp_path_factory.mktemp("report") / "biased.json"
    dump_json(path, result.to_dict())
    return path


@pytest.fixture(scope="module")
def decode_report(tmp_path_factory) -> Path:
    import dropcheck

    result = dropcheck.decode(only=["DECODE-REPEAT", "DECODE-BATCH-INVARIANT", "DECODE-CPU-CUDA"], max_positions=8)
    path = tmp_path_factory.mktemp("report") / "gpt.json"
    dump_json(path, result.to_dict())
    return path


def test_json_is_versioned_with_provenance(report):
    data = load_report(report)
    assert data["schema"] == "dropcheck-report/1" and data["kind"] == "check", data["schema"]
    for key in ("target", "contract", "profile", "seed", "started", "finished", "devices", "alpha_ledger"):
        assert data.get(key) not in (None, ""), f"provenance field {key} missing: {sorted(data)}"
    for key in ("dropcheck", "python", "torch", "numpy", "scipy", "platform", "cuda_devices"):
        assert key in data["versions"], f"versions lacks {key}: {data['versions']}"


def test_drop_rate_interval_and_heat_map_come_from_the_evidence(report):
    data = load_report(report)
    rates = T.drop_rates(data)
    assert [r.p for r in rates] == [0.2, 0.5], rates
    for r in rates:
        assert r.low <= r.rate <= r.high and r.low <= r.p <= r.high, f"passing DROP-RATE must cover p: {r}"
    maps = T.heat_maps(data)
    assert [len(m.drop_rate) for m in maps] == [32, 32], "expected a 32×32 keep-rate grid per p"
    for m in maps:  # the first half of the positions (top rows of the grid) drops more than the second
        cells = [x for row in m.drop_rate for x in row]
        half = len(cells) // 2
        gap = (sum(cells[:half]) - sum(cells[half:])) / half
        assert m.status == "fail" and gap > 10 * m.sd / half ** 0.5, f"p={m.p}: {m.status}, gap {gap:.4f}, sd {m.sd:.4f}"


def test_markdown_has_every_section(report):
    md = render_markdown(load_report(report))
    for needle in ("# dropcheck check report", "## Verdicts by property", "`RATE-HOMOGENEITY`", "## Failures",
                   "replay: `dropcheck check", "## Drop rate against p", "## Per-position drop rate",
                   "## p-values against alpha", "## Provenance"):
        assert needle in md, f"{needle!r} missing from the Markdown report"


def test_html_is_one_self_contained_file(report):
    html = render_html(load_report(report))
    assert html.count("data:image/png;base64,") == 3, "expected the drop-rate, heat-map and p-value figures inline"
    for external in ('src="http', "href=\"http", "<script", "<link"):
        assert external not in html, f"the HTML must not fetch anything: found {external!r}"


def test_decode_report_shows_token_agreement(decode_report):
    data = load_report(decode_report)
    assert data["kind"] == "decode" and data["schema"] == "dropcheck-report/1"
    agree = {a.property_id: a for a in T.token_agreement(data)}
    assert agree["DECODE-BATCH-INVARIANT"].agreement == 1.0, agree
    assert "Token agreement" in render_markdown(data) and "Token agreement" in render_html(data)


def test_report_command_writes_markdown_and_html(report, tmp_path, capsys):
    md, html = tmp_path / "r.md", tmp_path / "r.html"
    assert main(["report", str(report), "--markdown", str(md), "--html", str(html)]) == 0, capsys.readouterr()
    assert md.read_text().startswith("# dropcheck check report") and html.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("content,needle", [("{}", "schema"), ("not json", "not JSON"), (None, "cannot read")])
def test_report_command_rejects_what_is_not_a_report(tmp_path, capsys, content, needle):
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    assert main(["report", str(path), "--html", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    with pytest.raises(ReportError):
        load_report(path)


def test_matrix_render_only_rebuilds_index(report, decode_report, tmp_path):
    for src in (report, decode_report):
        shutil.copy(src, tmp_path / src.name)
    reports = render_only(tmp_path)
    index = (tmp_path / "index.md").read_text()
    assert len(reports) == 2 and (tmp_path / "biased.html").exists() and (tmp_path / "gpt.md").exists()
    assert "| `RATE-HOMOGENEITY` | ❌ |" in index and "[html](biased.html)" in index, index
    assert "## Decoding: built-in GPT" in index, index
    assert render_index([], []).startswith("# dropcheck conformance matrix")


def test_progress_without_terminal_prints_plain_lines():
    import io

    from rich.console import Console

    buf = io.StringIO()
    with Progress(console=Console(file=buf, force_terminal=False), min_interval=0.0) as progress:
        task = progress.add("check X", 2)
        progress.advance(task, "A")
        progress.advance(task, "B")
        progress.finish(task, "done")
    assert buf.getvalue().splitlines()[:2] == ["check X: 1/2 A (0 s)", "check X: 2/2 B (0 s)"], buf.getvalue()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(report, tmp_path):
    """Opens the HTML in a real browser, keeps a screenshot (copied to $DROPCHECK_SCREENSHOTS when
    set), and checks that the page is not blank and its DOM holds the verdict table and figures."""
    from PIL import Image

    html = tmp_path / "report.html"
    write_rendered(load_report(report), html=html)
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    run = subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,2000", html.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)
    assert shot.exists(), f"chromium wrote no screenshot (exit {run.returncode}): {run.stderr[-2000:]}"
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 2000), image.size
    dark = sum(image.histogram()[:128]) / (image.size[0] * image.size[1])
    assert dark > 0.005, f"the screenshot is blank ({dark:.2%} dark pixels): {shot}"
    # The DOM as chromium parsed it: the verdict table and the three inline figures are there.
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", "--virtual-time-budget=2000", html.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False).stdout
    assert "Verdicts by property" in dom and dom.count("<img") == 3, dom[:500]
    keep = os.environ.get("DROPCHECK_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")
    print(f"screenshot: {shot}")


def test_token_agreement_counts_up_to_the_first_difference():
    verdict = {"property": "DECODE-KV-CACHE", "device": "cpu", "status": "fail", "summary": "",
               "evidence": {"compared_steps": 10, "mismatches": 2, "near_ties": 1}}
    repeat = {"property": "DECODE-REPEAT", "device": "cpu", "status": "fail", "summary": "",
              "evidence": {"prompts": 3, "new_tokens": 8, "first_difference": {"prompt": 1, "step": 2}}}
    kv, rep = T.token_agreement({"verdicts": [verdict, repeat]})
    assert (kv.agreeing, kv.compared) == (7, 10), kv  # a near tie is excused, not counted as agreeing
    assert (rep.agreeing, rep.compared) == (10, 11), rep  # prompt 0's 8 steps, then 2 of prompt 1
