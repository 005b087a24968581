"""``--help``, a flag error and dataset writing answer without loading torch and torchvision (about 5 s here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Runs the command in-process, then says at exit whether torch was ever imported.
CHECK = ("import atexit, importlib, sys; atexit.register(lambda: print('torch loaded' if 'torch' in sys.modules else "
         "'no torch')); sys.exit(importlib.import_module(sys.argv[1] + '.__main__').main(sys.argv[2:]))")


@pytest.mark.parametrize(("module", "argv", "status"), [
    ("training", ["classify", "--help"], 0),
    ("training", ["segment", "--data", "x", "--out", "y", "--iters", "many"], 2),
    ("training", ["make-dataset", "{tmp}/scenes", "--n-train", "2", "--n-test", "1", "--quiet"], 0),
    ("export", ["--help"], 0),
    ("export", ["model.pth", "--name", "a", "--formats", "onnx,zip"], 2),
    ("loadtests", ["compare", "--help"], 0),
])
def test_the_command_answers_without_torch(module: str, argv: list[str], status: int, tmp_path: Path) -> None:
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    result = subprocess.run([sys.executable, "-c", CHECK, module, *argv], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == status, result.stderr[-1000:]
    assert result.stdout.strip().endswith("no torch"), result.stdout[-300:]
    assert "Traceback" not in result.stderr
    if argv[0] == "make-dataset":
        assert (tmp_path / "scenes" / "dataset.json").exists()
