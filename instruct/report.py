"""The funnel report of an instruct run (`report.json`, `report.md`): items per source, categories and how they
were decided, every drop by stage and reason, the filter rate per category beside MAmmoTH-VL's, how much of the
exported answers is copied from their sources, and each stage's time."""

from __future__ import annotations

from collections import Counter, defaultdict
from statistics import mean
from typing import Any

from pipeline.engine.engine import Engine
from pipeline.engine.run_files import StageReport

# MAmmoTH-VL (Guo et al. 2024, section 3.3): share of the rewritten data its judge removed, per category.
MAMMOTH_VL_FILTER_RATE = {"OCR": 0.549, "Chart": 0.484, "Code & Math": 0.123, "General": 0.082, "all": 0.37}


def _rows(engine: Engine, stage: str) -> list[dict[str, Any]]:
    rows = []
    for unit in engine.units(stage):
        if engine.current((stage, unit)) is not None:
            table = engine.table((stage, unit))
            rows += table.drop_columns(["images"] if "images" in table.column_names else []).to_pylist()
    return rows


def filter_rates(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per category: rewritten conversations in, dropped by the rules and by the judge, and the share dropped."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        if row["origin"] != "rewritten":
            continue
        for category in (row["category"], "all"):
            table[category]["in"] += 1
            if not row["keep"]:
                table[category]["judge" if row["reason"].startswith("judge") else "rules"] += 1
    rates = {}
    for category, counts in sorted(table.items(), key=lambda item: item[0] == "all"):
        dropped = counts["rules"] + counts["judge"]
        rates[category] = {"in": counts["in"], "rules": counts["rules"], "judge": counts["judge"],
                           "rate": round(dropped / counts["in"], 3) if counts["in"] else None,
                           "mammoth_vl": MAMMOTH_VL_FILTER_RATE.get(category)}  # fmt: skip
    return rates


def write_report(engine: Engine, reports: list[StageReport]) -> dict[str, Any]:
    tables = {stage: _rows(engine, stage) for stage in engine.dag.names}
    drops = {stage: dict(Counter(row["reason"] for row in rows if "keep" in row and not row["keep"]))
             for stage, rows in tables.items()}  # fmt: skip
    exported = [row for row in tables.get("mix", []) if row["keep"]]
    copied = [
        row["copied_share"] for row in exported if row["origin"] == "rewritten" and row["copied_share"] is not None
    ]
    seconds = {report.stage: round(report.wall_seconds, 2) for report in reports}
    unchecked: dict[str, str] = {}
    benchmark_items = 0
    for unit in engine.units("decontaminate") if "decontaminate" in engine.dag else []:
        if engine.current(("decontaminate", unit)) is not None:
            values = engine.stamp(("decontaminate", unit)).stats["values"]
            unchecked |= values["unchecked_sets"]
            benchmark_items = values["benchmark_items"]
    report = {
        "items": dict(Counter(row["source"] for row in tables.get("items", []))),
        "categories": dict(Counter(row["category"] for row in tables.get("triage", []))),
        "categorised_by": dict(Counter(row["category_by"].split(":")[0] for row in tables.get("triage", []))),
        "candidates": dict(Counter(row["origin"] for row in tables.get("rewrite", []))),
        "dropped": drops,
        "filter_rate": filter_rates(tables.get("filter", [])),
        "exported": dict(Counter(row["origin"] for row in exported)),
        "decontamination": {"benchmark_items": benchmark_items, "not_checked": unchecked},
        "copied_ngram_share": {"mean": round(mean(copied), 4) if copied else None,
                               "max": round(max(copied), 4) if copied else None, "conversations": len(copied)},
        "seconds": seconds,
        "failures": [f"{f['stage']} {f['video_id']}: {f['error_type']}: {f['message']}" for f in engine.failures()],
        "current": engine.up_to_date(engine.dag.names),
    }  # fmt: skip
    engine.out.write_json(engine.out.path("report.json"), report)
    engine.out.write_bytes(engine.out.path("report.md"), report_markdown(report).encode())
    return report


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Instruction data: funnel",
        "",
        f"items by source: {report['items']}",
        f"categories: {report['categories']} (decided by {report['categorised_by']})",
        f"candidates: {report['candidates']}; exported: {report['exported']}",
        "",
        "## Dropped, by stage",
        "",
    ]
    lines += [f"- {stage}: {reasons}" for stage, reasons in report["dropped"].items() if reasons]
    lines += [
        "",
        "## Filter rate of the rewritten conversations",
        "",
        "| category | in | rules | judge | filter rate | MAmmoTH-VL |",
        "|---|---|---|---|---|---|",
    ]
    for category, row in report["filter_rate"].items():
        lines.append(
            f"| {category} | {row['in']} | {row['rules']} | {row['judge']} | {_percent(row['rate'])} "
            f"| {_percent(row['mammoth_vl'])} |"
        )
    share = report["copied_ngram_share"]
    lines += [
        "",
        f"copied word n-grams of exported rewritten answers: mean {_percent(share['mean'])}, "
        f"max {_percent(share['max'])} over {share['conversations']} conversations",
        "",
        "## Seconds by stage",
        "",
        *(f"- {stage}: {s}" for stage, s in report["seconds"].items()),
    ]
    lines += [f"- failed: {failure}" for failure in report["failures"]]
    return "\n".join(lines) + "\n"
