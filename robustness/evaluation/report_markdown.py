"""report.md: the figures as Markdown tables in the style of the MSL supplement's Table 6."""

from __future__ import annotations

from typing import Any


def _number(value: float | None, scale: float = 1.0) -> str:
    return "n/a" if value is None else f"{value * scale:.1f}"


def cell(fig: dict[str, Any] | None, scale: float = 1.0, signed: bool = False) -> str:
    """``93.1 (92.0–94.2)``: the value with its interval, one decimal (``n/a`` when undefined)."""
    if fig is None or fig["value"] is None:
        return "n/a"
    low, high = fig["ci"]
    value = f"{fig['value'] * scale:+.1f}" if signed else _number(fig["value"], scale)
    if low is None:
        return value
    return f"{value} ({_number(low, scale)}–{_number(high, scale)})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def markdown(report: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    metrics = report["metrics"]["names"]
    conditions = report["conditions"]
    dataset = report["dataset"]
    config = report["config"]
    lines = [f"# Robustness evaluation ({report['task']})", "",
             f"Data: `{dataset['root']}` ({dataset['source']}), {dataset['images']} test images. "
             f"Models: {', '.join(m['label'] for m in report['models'])}. Seed {config['seed']}, "
             f"{config['bootstrap']} bootstrap resamples; figures in percent with "
             f"{config['ci_level']:.0%} percentile intervals in parentheses.", "", "## Figures per condition", ""]
    rows = [[label, c["label"], *(cell(per_condition[c["key"]]["metrics"][m]) for m in metrics)]
            for label, per_condition in report["results"].items() for c in conditions]
    lines += _table(["Model", "Condition", *metrics], rows)
    lines += ["", "## Summary", "",
              "P = clean; mPC = mean over corruption x severity; rPC = mPC / P; mPO / rPO: the same over occlusion "
              "buckets (ratios shown in percent).", ""]
    rows = []
    for label, per_metric in report["summary"].items():
        for metric, s in per_metric.items():
            trend = {True: "yes", False: "no", None: "n/a"}[s["falls_monotonically"]]
            rows.append([label, metric, cell(s["P"]), cell(s["mPC"]), cell(s["rPC"], 100.0), cell(s["mPO"]),
                         cell(s["rPO"], 100.0), trend])
    lines += _table(["Model", "Metric", "P", "mPC", "rPC %", "mPO", "rPO %", "falls with severity"], rows)
    severities = sorted({int(k) for per_metric in report["summary"].values() for s in per_metric.values()
                         for k in s["per_severity"]})
    if severities:
        lines += ["", "### Mean over corruptions per severity", ""]
        rows = [[label, metric, *(cell(s["per_severity"].get(str(v))) for v in severities)]
                for label, per_metric in report["summary"].items() for metric, s in per_metric.items()]
        lines += _table(["Model", "Metric", *(f"s{v}" for v in severities)], rows)
    for comparison in report["comparisons"]:
        lines += ["", f"## Paired differences: {comparison['other']} - {comparison['model']}", ""]
        rows = [[c["label"], *(cell(comparison["conditions"][c["key"]][m], signed=True) for m in metrics)]
                for c in conditions]
        lines += _table(["Condition", *(f"Δ{m}" for m in metrics)], rows)
        rows = [[metric, *(cell(s[k], 100.0 if k.startswith("r") else 1.0, signed=True)
                           for k in ("P", "mPC", "rPC", "mPO", "rPO"))]
                for metric, s in comparison["summary"].items()]
        lines += ["", *_table(["Metric", "ΔP", "ΔmPC", "ΔrPC %", "ΔmPO", "ΔrPO %"], rows)]
    lines += ["", "## Behavioural checks", ""]
    rows = []
    for label, checks in report["checks"].items():
        if not isinstance(checks, dict):
            rows.append([label, "all", str(checks), "", "", ""])
            continue
        for name, check in checks.items():
            rate = "n/a" if check["pass_rate"] is None else f"{100 * check['pass_rate']:.1f}%"
            rows.append([label, name, check["status"], f"{check['passed']}/{check['tested']}", rate,
                         str(check.get("untested_empty_clean_prediction", 0))])
    lines += _table(["Model", "Check", "Status", "Passed", "Pass rate", "Not tested: empty clean answer"], rows)
    for label, per_condition in report["results"].items():
        affected = [(c["label"], per_condition[c["key"]].get("most_affected", [])) for c in conditions[1:]]
        if any(items for _, items in affected):
            lines += ["", f"### Most-affected classes ({label}): largest drop from clean", ""]
            rows = [[name, ", ".join(f"{a['class']} {cell(a['drop'], signed=False)}" for a in items)]
                    for name, items in affected]
            lines += _table(["Condition", "Class (drop)"], rows)
    timings = report["timings"]
    lines += ["", f"Time: {timings['total_s']:.1f} s ({timings['images_per_s']:.2f} images/s through the grid).", ""]
    return "\n".join(lines)
