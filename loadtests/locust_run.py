"""Run Locust headless as a bounded subprocess, read its CSV, print a table, check SLOs."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class EndpointStats:
    """One row of Locust's stats CSV."""

    name: str
    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float

    @property
    def failure_rate(self) -> float:
        """Failures over requests (0 when nothing was sent)."""
        return self.failures / self.requests if self.requests else 0.0

    def figure_cells(self) -> str:
        """The Markdown cells ``req/s | p50 | p95 | p99`` ("-" where Locust measured nothing)."""
        return " | ".join([shown(self.rps, ".1f"), *(shown(v, ".0f") for v in (self.p50, self.p95, self.p99))])


def require_loopback(host: str) -> str:
    """Load tests target this machine only."""
    hostname = urlparse(host).hostname
    if hostname not in LOOPBACK:
        raise ValueError(f"--host {host!r}: load tests only target 127.0.0.1 / localhost")
    return host


def run_locust(host: str, users: int, spawn_rate: float, duration: str, out_prefix: Path,
               env: dict[str, str] | None = None, timeout_s: float | None = None) -> Path:
    """Run Locust headless; returns the stats CSV path. Bounded by users, run time and a hard timeout."""
    require_loopback(host)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
           "-u", str(users), "-r", str(spawn_rate), "--run-time", duration, "--stop-timeout", "5",
           "--csv", str(out_prefix), "--html", str(out_prefix) + ".html", "--only-summary",
           "--exit-code-on-error", "0", "--skip-log-setup"]
    result = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                            timeout=timeout_s or (parse_seconds(duration) + 120))
    stats = Path(str(out_prefix) + "_stats.csv")
    if result.returncode != 0 or not stats.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"locust failed (exit {result.returncode}): " + " | ".join(tail))
    return stats


def parse_seconds(duration: str) -> float:
    """Locust-style durations: ``30s``, ``2m``, ``1h30m``, or a plain number of seconds."""
    total, number = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1}
    for ch in duration.strip():
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total, number = total + float(number) * units[ch], ""
        else:
            raise ValueError(f"duration {duration!r}: expected e.g. 30s, 2m, 1h30m")
    return total + (float(number) if number else 0.0)


def _figure(text: str) -> float:
    """A number of the stats CSV; NaN where Locust has none (it writes N/A, or nothing, for a row without
    requests), never 0 ms."""
    return float(text) if text and text != "N/A" else math.nan


def read_stats(csv_path: Path) -> list[EndpointStats]:
    """Rows of Locust's ``*_stats.csv`` (the Aggregated row last)."""
    rows = []
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append(EndpointStats(
                name=row["Name"], requests=int(row["Request Count"]), failures=int(row["Failure Count"]),
                rps=_figure(row["Requests/s"]), p50=_figure(row["50%"]), p95=_figure(row["95%"]),
                p99=_figure(row["99%"])))
    return rows


def shown(value: float, spec: str) -> str:
    """``value`` formatted by ``spec``, or "-" where it is NaN (no figure)."""
    return "-" if math.isnan(value) else format(value, spec)


def format_table(rows: list[EndpointStats]) -> str:
    """A Markdown table: requests/s, p50, p95, p99 and failures per endpoint ("-" where nothing was measured)."""
    lines = ["| endpoint | requests | req/s | p50 ms | p95 ms | p99 ms | failures |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.requests} | {r.figure_cells()} | {r.failures} ({100 * r.failure_rate:.1f}%) |")
    return "\n".join(lines)


def check_slo(rows: list[EndpointStats], slo_path: Path) -> list[str]:
    """Violations of the SLO file (failure rate and p95 per endpoint); empty when all hold."""
    try:
        slo = tomllib.loads(slo_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{slo_path}: cannot read SLO file ({exc})") from None
    default = slo.get("default", {})
    if not any(row.requests for row in rows if row.name != "Aggregated"):
        return ["no request completed during the run, so no objective could be checked"]
    violations = []
    for row in rows:
        if row.name == "Aggregated" or row.requests == 0:
            continue
        bounds = {**default, **slo.get("endpoints", {}).get(row.name, {})}
        if "max_failure_rate" in bounds and row.failure_rate > bounds["max_failure_rate"]:
            violations.append(f"{row.name}: failure rate {row.failure_rate:.3f} > {bounds['max_failure_rate']}")
        if "p95_ms" in bounds and row.p95 > bounds["p95_ms"]:
            violations.append(f"{row.name}: p95 {row.p95:.0f} ms > {bounds['p95_ms']} ms")
    return violations
