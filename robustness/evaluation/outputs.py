"""Writing a report's files: each one to a temporary name first, then renamed into place."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robustness.evaluation.plots import plot_makers
from robustness.evaluation.report_markdown import markdown
from robustness.evaluation.streaming import EvaluationCancelled

UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def write_atomic(path: Path, data: bytes) -> Path:
    """Write bytes to ``path`` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _safe(name: str) -> str:
    return UNSAFE.sub("_", name).strip("._") or "x"


def write_all(report: dict[str, Any], out: Path, should_stop: Callable[[], bool] | None = None) -> list[Path]:
    """report.json (saliency PNGs referenced by file), report.md, plots and saliency overlays; their paths.

    ``should_stop()`` is polled before each file is made; once true, EvaluationCancelled is raised.
    """
    def check() -> None:
        if should_stop is not None and should_stop():
            raise EvaluationCancelled("cancelled while writing the report")

    written: list[Path] = []
    explanations = []
    for entry in report.get("explanations", []):
        check()
        entry = dict(entry)
        png = entry.pop("png_base64", None)
        if png is not None:
            name = f"explain/{_safe(entry['image'])}-{_safe(entry['model'])}-{_safe(entry['label'])}.png"
            written.append(write_atomic(out / name, base64.b64decode(png)))
            entry["file"] = name
        explanations.append(entry)
    document = {**report, "explanations": explanations}
    check()
    written.insert(0, write_atomic(out / "report.json", (json.dumps(document, indent=1, allow_nan=False) + "\n")
                                   .encode()))
    check()
    written.insert(1, write_atomic(out / "report.md", markdown(report).encode()))
    for name, make in plot_makers(report).items():
        check()
        if (png := make()) is not None:
            written.append(write_atomic(out / name, png))
    return written
