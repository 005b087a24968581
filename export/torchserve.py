"""TorchServe archive: ``<store>/<name>.mar`` holding model.onnx, manifest.json and the project's handler.

Running TorchServe on an archive is a load-test tool: ``loadtests.processes.TorchServeProcess``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from model_store.manifest import MANIFEST, ONNX_FILE, Manifest

HANDLER = Path(__file__).with_name("torchserve_handler.py")


def archiver_command() -> list[str]:
    """The torch-model-archiver executable beside this Python, or on PATH."""
    local = Path(sys.executable).with_name("torch-model-archiver")
    found = str(local) if local.exists() else shutil.which("torch-model-archiver")
    if not found:
        raise RuntimeError("torch-model-archiver not found; install the 'torchserve' extra")
    return [found]


def write_mar(manifest: Manifest, store: str | Path) -> Path:
    """Archive an entry's ONNX model with the handler; returns ``<store>/<name>.mar``."""
    store = Path(store)
    with tempfile.TemporaryDirectory() as tmp:
        # The archiver wants --handler FILE.py (not FILE.py:Class); the class is found by its base.
        handler = Path(tmp) / "handler.py"
        shutil.copyfile(HANDLER, handler)
        cmd = [
            *archiver_command(), "--model-name", manifest.name, "--version", manifest.version,
            "--serialized-file", str(manifest.artifact(ONNX_FILE)),
            "--handler", str(handler), "--extra-files", str(manifest.path / MANIFEST),
            "--export-path", str(store), "--force",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"torch-model-archiver failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return store / f"{manifest.name}.mar"

