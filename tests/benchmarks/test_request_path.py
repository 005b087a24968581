"""``python -m benchmarks request-path``: before/after tables per step of a request's path."""

import importlib.util
import json

import orjson

from benchmarks import request_path
from benchmarks.request_path import main as bench_main


def table_rows(out: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table that follows the line starting with ``header``."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 3  # title, head, rule
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_json_and_hop_steps_print_before_and_after(capsys):
    assert bench_main(["--steps", "json", "hops", "--repeats", "2", "--concurrency", "4", "--hop-requests", "8",
                       "--hop-rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Machine: ") and "orjson " in out.splitlines()[0]
    json_rows = table_rows(out, "JSON response")
    assert {row[0] for row in json_rows} >= {"/predict sigmoid, 20 classes", "/robustness softmax, 1000 classes, n=16",
                                             "/v2 infer, 8 x 1000 FP32 outputs"}
    assert all(float(row[2]) > 0 and float(row[3]) > 0 and float(row[4]) > 0 for row in json_rows)
    hop_rows = table_rows(out, "decode pool hand-off")
    jobs = ("empty job", "decode 224x224 JPEG to 224")
    assert {(row[0], row[1]) for row in hop_rows} == {(job, flight) for job in jobs for flight in ("1", "4")}
    assert {row[2] for row in hop_rows} == set(request_path.HOPS)
    assert all(float(row[5]) == 1.0 for row in hop_rows if row[2] == "pool, wait_for (today)")


def test_the_json_bodies_parse_to_the_same_data_both_ways():
    for name, (old, new) in request_path.json_cases().items():
        assert json.loads(old()) == orjson.loads(new()), name


def test_the_decode_step_names_the_missing_package_in_one_line(capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "simplejpeg" else real(name, *a))
    assert bench_main(["--steps", "decode"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install simplejpeg==1.9.0" in err[0] and "--steps json hops" in err[0]
