"""What a report shows, read out of a JSON report (schema "dropcheck-report/1") as plain rows.

The renderers (Markdown, HTML, figures) draw only from these rows, so all three agree. Nothing
here runs a check: a report can be re-rendered anywhere from its JSON alone.
"""
from __future__ import annotations

import dataclasses
import math
import shlex
from typing import Any

from dropcheck import registry

SCHEMA = "dropcheck-report/1"
SYMBOL = {"pass": "✅ pass", "fail": "❌ fail", "error": "💥 error", "timeout": "⏱ timeout",
          "inconclusive": "❓ inconclusive", "skip": "➖ skip"}
ORDER = ["error", "timeout", "fail", "inconclusive", "pass", "skip"]  # worst first, as verdict.worst


def worst(statuses: list[str]) -> str:
    return next((s for s in ORDER if s in statuses), "skip")


def statement(property_id: str) -> str:
    return registry.PROPERTIES[property_id].statement if property_id in registry.PROPERTIES else ""


# ---- the verdict table ------------------------------------------------------------------------------
def column_of(v: dict[str, Any]) -> str:
    """The configuration a verdict belongs to: `p=0.1 cpu`, or just the device for exact/decode ones."""
    return f"p={v['p']:g} {v['device']}" if v.get("p") is not None else v["device"]


def verdict_table(data: dict[str, Any]) -> tuple[list[str], list[tuple[str, dict[str, dict[str, Any]]]]]:
    """(columns, rows): one row per property in catalogue order, one cell (a verdict) per column."""
    cols: list[str] = []
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for v in data["verdicts"]:
        col = column_of(v)
        if col not in cols:
            cols.append(col)
        rows.setdefault(v["property"], {})[col] = v
    order = list(registry.PROPERTIES)
    key = lambda c: (0, c) if not c.startswith("p=") else (1, float(c.split()[0][2:]))
    return sorted(cols, key=key), sorted(rows.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)


def failures(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in data["verdicts"] if v["status"] not in ("pass", "skip")]


def replay_command(data: dict[str, Any]) -> str:
    """The command that reruns the whole report."""
    if data.get("kind") == "decode":
        target = data.get("target", "")
        parts = ["dropcheck", "decode"] + ([target] if ":" in target else [])
    else:
        parts = ["dropcheck", "check", data["target"], "--contract", data["contract"],
                 "--p", ",".join(f"{p:g}" for p in data["ps"]), "--profile", data["profile"]]
        if data.get("sample_dtype", "float32") != "float32":
            parts += ["--dtype", data["sample_dtype"]]
    devices = data.get("devices", ["cpu"])
    parts += ["--device", "all" if len(devices) > 1 else devices[0], "--seed", str(data["seed"])]
    return " ".join(shlex.quote(p) for p in parts)


def provenance(data: dict[str, Any]) -> list[tuple[str, str]]:
    fields = [("target", data.get("target")), ("kind", data.get("kind", "check")), ("contract", data.get("contract")),
              ("profile", data.get("profile")), ("seed", data.get("seed")),
              ("p", ", ".join(f"{p:g}" for p in data["ps"]) if data.get("ps") else None),
              ("devices", ", ".join(data.get("devices", []))), ("sample dtype", data.get("sample_dtype")),
              ("started", data.get("started")), ("finished", data.get("finished")),
              ("duration", f"{data['duration_s']:.1f} s" if data.get("duration_s") is not None else None)]
    fields += list((data.get("versions") or {}).items())
    if data.get("alpha_ledger"):
        led = data["alpha_ledger"]
        fields.append(("alpha budget", f"{led['family_alpha']:g} over {led['tests']} tests, {led['alpha_each']:.2g} each (Bonferroni)"))
    return [(k, str(v)) for k, v in fields if v not in (None, "")]


# ---- DROP-RATE: the estimate and its interval against p ------------------------------------------------
@dataclasses.dataclass
class DropRate:
    p: float
    device: str
    drops: int
    n: int
    low: float
    high: float
    confidence: float  # 1 - alpha of the test: p outside [low, high] is what a rejection means
    status: str
    test: str

    @property
    def rate(self) -> float:
        return self.drops / self.n if self.n else math.nan


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval for a binomial proportion."""
    from scipy.stats import beta

    a = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.isf(a / 2, k + 1, n - k))
    return low, high


def drop_rates(data: dict[str, Any]) -> list[DropRate]:
    out = []
    for v in data["verdicts"]:
        if v["property"] != "DROP-RATE" or v.get("p") is None or not v.get("tests"):
            continue
        tests = {t["name"]: t for t in v["tests"]}
        t = tests.get("binomial") or tests.get("sequential")
        drops, n = t["detail"].get("drops"), t["detail"].get("n", t.get("n"))
        if drops is None or not n:
            continue
        confidence = 1.0 - t["alpha"]
        low, high = clopper_pearson(int(drops), int(n), confidence)
        out.append(DropRate(v["p"], v["device"], int(drops), int(n), low, high, confidence, v["status"], t["name"]))
    return out


# ---- RATE-HOMOGENEITY: per-position drop rates ---------------------------------------------------------
@dataclasses.dataclass
class HeatMap:
    p: float
    device: str
    drop_rate: list[list[float]]  # side × side block means of the per-position drop rate
    trials_per_block: float  # units × calls behind each block mean
    status: str

    @property
    def sd(self) -> float:
        """The standard deviation of one block mean under correct dropout."""
        return math.sqrt(self.p * (1 - self.p) / self.trials_per_block) if self.trials_per_block else math.nan

    @property
    def max_abs_z(self) -> float:
        return max(abs(x - self.p) / self.sd for row in self.drop_rate for x in row) if self.sd else math.nan


def heat_maps(data: dict[str, Any]) -> list[HeatMap]:
    out = []
    for v in data["verdicts"]:
        if v["property"] != "RATE-HOMOGENEITY" or v.get("p") is None:
            continue
        t = next((t for t in v.get("tests", []) if "keep_rate_grid" in t.get("detail", {})), None)
        if t is None:
            continue
        grid = t["detail"]["keep_rate_grid"]
        cells = sum(len(r) for r in grid)
        out.append(HeatMap(v["p"], v["device"], [[1.0 - x for x in row] for row in grid], t["n"] / max(1, cells), v["status"]))
    return out


# ---- every statistical test: its p-value against its alpha ---------------------------------------------
@dataclasses.dataclass
class PValue:
    property_id: str
    test: str
    p: float | None
    device: str
    pvalue: float
    alpha: float
    rejected: bool
    mde: float | None
    mde_unit: str | None

    @property
    def label(self) -> str:
        where = f"p={self.p:g}" if self.p is not None else ""
        return f"{self.property_id}/{self.test} {where} {self.device}".replace("  ", " ")


def pvalues(data: dict[str, Any]) -> list[PValue]:
    return [PValue(v["property"], t["name"], v.get("p"), v["device"], float(t["pvalue"]), float(t["alpha"]),
                   bool(t.get("rejected", t["pvalue"] <= t["alpha"])), t.get("mde"), t.get("mde_unit"))
            for v in data["verdicts"] for t in v.get("tests", [])]


# ---- decoding: token agreement per property ------------------------------------------------------------
@dataclasses.dataclass
class Agreement:
    property_id: str
    device: str
    status: str
    compared: int | None  # steps compared, up to each prompt's first difference (None: no token comparison)
    mismatches: int | None
    near_ties: int | None
    note: str

    @property
    def agreeing(self) -> int | None:
        """Steps whose tokens agree; a near tie is a disagreement the verdict excuses, not an agreement."""
        return None if self.compared is None else self.compared - (self.mismatches or 0) - (self.near_ties or 0)

    @property
    def agreement(self) -> float | None:
        return self.agreeing / self.compared if self.compared else None


AGREEMENT_NOTE = ("* A prompt's steps are compared up to its first differing token (after it the contexts differ);"
                  " a near tie (the reference's margin within rounding) counts as a difference the verdict excuses.")

# Properties that decode the same prompts twice and require every token (and logit) to be equal.
BITWISE_DECODES = ("DECODE-REPEAT", "DECODE-P-ZERO")


def token_agreement(data: dict[str, Any]) -> list[Agreement]:
    """Token agreement where a property compares tokens: the tie-aware ones count steps and
    mismatches; the bitwise ones (repeat, p=0) either agree on every step or name the first difference."""
    out = []
    for v in data["verdicts"]:
        ev = v.get("evidence") or {}
        if "compared_steps" in ev:
            out.append(Agreement(v["property"], v["device"], v["status"], int(ev["compared_steps"]),
                                 int(ev.get("mismatches", 0)), int(ev.get("near_ties", 0)), ""))
        elif v["property"] in BITWISE_DECODES and "new_tokens" in ev and "prompts" in ev:
            steps = int(ev["prompts"]) * int(ev["new_tokens"])
            diff = ev.get("first_difference")
            if v["status"] == "pass":
                out.append(Agreement(v["property"], v["device"], v["status"], steps, 0, 0, "bitwise identical"))
            elif diff:
                upto = int(diff["prompt"]) * int(ev["new_tokens"]) + int(diff["step"]) + 1
                out.append(Agreement(v["property"], v["device"], v["status"], upto, 1, 0,
                                     f"first difference at step {diff['step']} of prompt {diff['prompt']}"))
            else:
                out.append(Agreement(v["property"], v["device"], v["status"], None, None, None, v["summary"][:80]))
        else:
            note = v["summary"] if v["status"] == "skip" else "no token comparison: see its evidence"
            out.append(Agreement(v["property"], v["device"], v["status"], None, None, None, note))
    return out
