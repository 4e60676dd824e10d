"""A JSON report rendered as one self-contained HTML file: inline CSS, figures as base64 PNG, no
script and nothing fetched, so it opens anywhere (a browser, a CI artifact viewer, an e-mail)."""
from __future__ import annotations

from html import escape
from typing import Any

from dropcheck.report import figures
from dropcheck.report import tables as T
from dropcheck.report.markdown import headline

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f5f5f5; } code { font-size: 12px; } .small { font-size: 12px; color: #555; }
td.pass { background: #e8f5e9; } td.fail { background: #ffcdd2; font-weight: bold; } td.error, td.timeout { background: #e1bee7; font-weight: bold; }
td.skip { background: #fafafa; color: #888; } td.inconclusive { background: #fff8e1; }
.badge { display: inline-block; padding: 4px 12px; border-radius: 4px; font-weight: bold; }
.ok { background: #2e7d32; color: white; } .notok { background: #c62828; color: white; }
img { max-width: 100%; }
"""


def _table(head: list[str], rows: list[list[str]], raw: bool = False) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(c if raw else f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _img(png: str, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{png}">'


def render_html(data: dict[str, Any]) -> str:
    decode = data.get("kind") == "decode"
    title = f"dropcheck {'decode' if decode else 'check'} report: {data['target']}"
    badge = f'<span class="badge {"ok" if data["ok"] else "notok"}">{"conforms" if data["ok"] else "does not conform"}</span>'
    parts = [f"<h1>{escape(title)}</h1>", f"<p>{badge} {escape(headline(data).split(':', 1)[1])}</p>",
             f'<p class="small">Replay: <code>{escape(T.replay_command(data))}</code></p>']

    cols, rows = T.verdict_table(data)
    body = []
    for pid, cells in rows:
        tds = [f'<td><code>{escape(pid)}</code></td>']
        for c in cols:
            v = cells.get(c)
            tds.append(f'<td class="{v["status"]}" title="{escape(v["summary"])}">{escape(v["status"])}</td>'
                       if v else "<td></td>")
        tds.append(f'<td class="small">{escape(T.statement(pid))}</td>')
        body.append(tds)
    parts += ["<h2>Verdicts by property</h2>", '<p class="small">Hover a cell for its evidence.</p>',
              _table(["property", *cols, "statement"], [["".join(r)] for r in body], raw=True)]

    fails = T.failures(data)
    if fails:
        items = "".join(f"<li><b>{escape(v['property'])}</b> ({escape(T.column_of(v))}) {escape(v['status'])}: "
                        f"{escape(v['summary'])}<br><code>{escape(v['replay'])}</code></li>" for v in fails)
        parts += ["<h2>Failures</h2>", f"<ul>{items}</ul>"]

    if decode:
        agree = T.token_agreement(data)
        parts += ["<h2>Token agreement per property</h2>"]
        if any(a.agreement is not None for a in agree):
            parts.append(_img(figures.agreement_figure(agree), "token agreement per property"))
        parts.append(_table(["property", "device", "verdict", "agreeing / compared steps*", "near ties", "note"],
                            [[a.property_id, a.device, a.status,
                              f"{a.agreeing}/{a.compared}" if a.agreement is not None else "–",
                              a.near_ties if a.near_ties is not None else "–", a.note] for a in agree]))
        parts.append(f'<p class="small">{escape(T.AGREEMENT_NOTE)}</p>')
    else:
        rates = T.drop_rates(data)
        if rates:
            parts += ["<h2>Drop rate against p</h2>",
                      ('<p class="small">Estimate with its Clopper–Pearson interval at the test\'s own confidence '
                       "1 − alpha: the verdict fails when p lies outside it.</p>"),
                      _img(figures.drop_rate_figure(rates), "drop rate against p"),
                      _table(["p", "device", "dropped / units", "rate", "interval", "verdict"],
                             [[f"{r.p:g}", r.device, f"{r.drops}/{r.n}", f"{r.rate:.5f}", f"[{r.low:.5f}, {r.high:.5f}]",
                               r.status] for r in rates])]
        maps = T.heat_maps(data)
        if maps:
            parts += ["<h2>Per-position drop rate</h2>",
                      ('<p class="small">RATE-HOMOGENEITY: block means of the per-position drop rate, in row-major order '
                       "of the flattened units, coloured from p − 4 sd to p + 4 sd of one block mean. Correct dropout is "
                       "even noise; a stripe, gradient or tiling is a bug.</p>"),
                      _img(figures.heat_map_figure(maps), "per-position drop rate heat map")]
        pv = T.pvalues(data)
        if pv:
            parts += ["<h2>p-values against alpha</h2>", _img(figures.pvalue_figure(pv), "p-values against alpha"),
                      "<details><summary>table</summary>",
                      _table(["property", "test", "p", "device", "p-value", "alpha", "rejected", "MDE"],
                             [[r.property_id, r.test, f"{r.p:g}" if r.p is not None else "", r.device, f"{r.pvalue:.3g}",
                               f"{r.alpha:.2g}", "yes" if r.rejected else "no",
                               f"{r.mde:.2g} ({r.mde_unit})" if r.mde is not None else ""] for r in pv]),
                      "</details>"]

    parts += ["<h2>Every verdict</h2>", _table(["verdict", "status", "evidence"],
                                               [[f"{v['property']} {T.column_of(v)}", v["status"], v["summary"]]
                                                for v in data["verdicts"]])]
    parts += ["<h2>Provenance</h2>", _table(["", ""], [[k, v] for k, v in T.provenance(data)])]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")
