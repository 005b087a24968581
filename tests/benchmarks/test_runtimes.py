"""``python -m benchmarks runtimes``: one table row per runtime, from a seeded random-weight export."""

from benchmarks.runtimes import main as bench_main


def test_runtimes_table_has_one_row_per_runtime(capsys):
    assert bench_main(["--preset", "resnet18-csra-128", "--image-size", "64", "--batch", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "resnet18-csra-128 at 64x64" in out
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and "x |" in line]
    assert rows == ["eager", "torchscript", "onnxruntime"]


def test_runtimes_unknown_preset_is_a_one_line_error(capsys):
    assert bench_main(["--preset", "no-such-preset"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
