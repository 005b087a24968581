"""A real Locust run against a real server on 127.0.0.1: the table, the CSV, and the SLO gate."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.locust_run import check_slo, format_table, parse_seconds, read_stats, require_loopback

ROOT = Path(__file__).resolve().parents[2]


def run_loadtests(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadtests", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=240)


def test_smoke_run_meets_the_slo_and_validates_every_endpoint(store: Path, tmp_path: Path) -> None:
    # Locust spreads users over classes by weight: equal weights give each endpoint two users.
    result = run_loadtests("run", "--store", str(store), "--users", "6", "--spawn-rate", "6", "--duration", "12s",
                           "--weights", "predict=1,segment=1,robustness=1", "--slo", "loadtests/slo.toml",
                           "--out", str(tmp_path), "--payload", "scene-small")
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    rows = {r.name: r for r in read_stats(tmp_path / "locust_stats.csv")}
    for endpoint in ("/predict", "/segment", "/robustness"):
        assert rows[endpoint].requests > 0 and rows[endpoint].failures == 0, endpoint
    assert rows["Aggregated"].rps > 0
    assert "| /predict |" in result.stdout and "all objectives met" in result.stdout
    assert (tmp_path / "locust.html").stat().st_size > 1000


def test_slo_violation_exits_non_zero(store: Path, tmp_path: Path) -> None:
    strict = tmp_path / "strict.toml"
    strict.write_text('[default]\nmax_failure_rate = 0.0\np95_ms = 1\n')
    result = run_loadtests("run", "--store", str(store), "--users", "2", "--duration", "4s", "--slo", str(strict),
                           "--out", str(tmp_path / "out"), "--weights", "predict=1,segment=0,robustness=0",
                           "--payload", "scene-small")
    stats = tmp_path / "out" / "locust_stats.csv"
    completed = sum(r.requests for r in read_stats(stats) if r.name != "Aggregated") if stats.exists() else None
    assert result.returncode == 1, (result.stderr[-1500:], completed)
    # Any completed request breaks a 1 ms p95. Once, beside a training on the other pytest worker, none completed
    # in the 4 s, Locust wrote N/A for the percentiles and the runner stopped on them: that run is a violation too.
    expected = "SLO violated: /predict: p95" if completed else "SLO violated: no request completed during the run"
    assert expected in result.stderr, (result.stderr[-1500:], completed)


def test_a_run_without_completed_requests_is_a_violation_not_a_crash(tmp_path: Path) -> None:
    csv = tmp_path / "s_stats.csv"  # what Locust writes for a row without requests
    csv.write_text("Type,Name,Request Count,Failure Count,Requests/s,50%,95%,99%\n"
                   "POST,/predict,0,0,0.0,N/A,N/A,N/A\n,Aggregated,0,0,0.0,N/A,N/A,N/A\n")
    rows = read_stats(csv)
    assert [(r.name, r.requests) for r in rows] == [("/predict", 0), ("Aggregated", 0)]
    assert all(math.isnan(r.p95) for r in rows)  # no figure, not 0 ms
    assert format_table(rows).splitlines()[2] == "| /predict | 0 | 0.0 | - | - | - | 0 (0.0%) |"
    slo = tmp_path / "slo.toml"
    slo.write_text("[default]\np95_ms = 5000\n")
    assert check_slo(rows, slo) == ["no request completed during the run, so no objective could be checked"]


def test_slo_check_reads_bounds_per_endpoint(tmp_path: Path) -> None:
    csv = tmp_path / "s_stats.csv"
    header = "Type,Name,Request Count,Failure Count,Requests/s,50%,95%,99%\n"
    csv.write_text(header + "POST,/predict,100,2,10.0,50,900,1200\nPOST,/segment,10,0,1.0,100,4500,5000\n"
                   ",Aggregated,110,2,11.0,60,1000,3000\n")
    slo = tmp_path / "slo.toml"
    slo.write_text('[default]\nmax_failure_rate = 0.01\np95_ms = 5000\n[endpoints."/segment"]\np95_ms = 4000\n')
    assert check_slo(read_stats(csv), slo) == ["/predict: failure rate 0.020 > 0.01", "/segment: p95 4500 ms > 4000 ms"]


def test_only_loopback_targets_and_bounded_durations() -> None:
    assert require_loopback("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    with pytest.raises(ValueError, match=r"only target 127\.0\.0\.1"):
        require_loopback("http://10.0.0.5:8000")
    assert parse_seconds("1m30s") == 90 and parse_seconds("45") == 45
    result = run_loadtests("run", "--host", "http://192.168.1.9:8000", "--duration", "5s")
    assert result.returncode == 2 and result.stderr.startswith("error: --host")
