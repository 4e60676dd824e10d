"""A JSON report rendered as Markdown: tables a reviewer reads in a pull request or on GitHub."""
from __future__ import annotations

from typing import Any

from dropcheck.report import tables as T


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out + [""]


def headline(data: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for v in data["verdicts"]:
        counts[v["status"]] = counts.get(v["status"], 0) + 1
    verdict = "✅ conforms" if data["ok"] else "❌ does not conform"
    return f"**{verdict}**: " + ", ".join(f"{n} {s}" for s, n in counts.items())


def render_markdown(data: dict[str, Any]) -> str:
    decode = data.get("kind") == "decode"
    title = f"dropcheck {'decode' if decode else 'check'} report: `{data['target']}`"
    lines = [f"# {title}", "", headline(data) + (f" (contract `{data['contract']}`, profile `{data['profile']}`, "
             f"seed {data['seed']})" if not decode else f" (seed {data['seed']})"), "",
             f"Replay: `{T.replay_command(data)}`", ""]

    cols, rows = T.verdict_table(data)
    lines += ["## Verdicts by property", ""]
    lines += _table(["property", *cols, "statement"],
                    [[f"`{pid}`", *[T.SYMBOL[cells[c]["status"]] if c in cells else "" for c in cols], T.statement(pid)]
                     for pid, cells in rows])

    fails = T.failures(data)
    if fails:
        lines += ["## Failures", ""]
        for v in fails:
            where = f"p={v['p']:g}, " if v.get("p") is not None else ""
            lines += [f"- **{v['property']}** ({where}{v['device']}) {v['status']}: {v['summary']}",
                      f"  replay: `{v['replay']}`"]
        lines.append("")

    if decode:
        agree = T.token_agreement(data)
        lines += ["## Token agreement", ""]
        lines += _table(["property", "device", "verdict", "agreeing / compared steps*", "near ties", "note"],
                        [[f"`{a.property_id}`", a.device, T.SYMBOL[a.status],
                          f"{a.agreeing}/{a.compared} ({a.agreement:.1%})" if a.agreement is not None else "–",
                          a.near_ties if a.near_ties is not None else "–", a.note] for a in agree])
        lines += [T.AGREEMENT_NOTE, ""]
    else:
        rates = T.drop_rates(data)
        if rates:
            lines += ["## Drop rate against p", "",
                      "Clopper–Pearson interval at the test's own confidence 1 − alpha: the verdict fails when p lies outside it.", ""]
            lines += _table(["p", "device", "dropped / units", "rate", "rate − p", "interval", "confidence", "verdict"],
                            [[f"{r.p:g}", r.device, f"{r.drops}/{r.n}", f"{r.rate:.5f}", f"{r.rate - r.p:+.2e}",
                              f"[{r.low:.5f}, {r.high:.5f}]", f"1 − {1 - r.confidence:.2g}", T.SYMBOL[r.status]] for r in rates])
        maps = T.heat_maps(data)
        if maps:
            lines += ["## Per-position drop rate (RATE-HOMOGENEITY)", "",
                      "Block means of the per-position drop rate (the HTML report draws them as a heat map).", ""]
            lines += _table(["p", "device", "blocks", "units × calls per block", "lowest", "highest", "max |z|", "verdict"],
                            [[f"{m.p:g}", m.device, f"{len(m.drop_rate)}×{len(m.drop_rate[0])}", f"{m.trials_per_block:.0f}",
                              f"{min(map(min, m.drop_rate)):.4f}", f"{max(map(max, m.drop_rate)):.4f}", f"{m.max_abs_z:.1f}",
                              T.SYMBOL[m.status]] for m in maps])
        pv = T.pvalues(data)
        if pv:
            lines += ["## p-values against alpha", ""]
            lines += _table(["property", "test", "p", "device", "p-value", "alpha", "rejected", "MDE"],
                            [[f"`{r.property_id}`", r.test, f"{r.p:g}" if r.p is not None else "", r.device, f"{r.pvalue:.3g}",
                              f"{r.alpha:.2g}", "**yes**" if r.rejected else "no",
                              f"{r.mde:.2g} ({r.mde_unit})" if r.mde is not None else ""] for r in pv])

    lines += ["## Provenance", ""]
    lines += _table(["", ""], [[k, v] for k, v in T.provenance(data)])
    return "\n".join(lines)
