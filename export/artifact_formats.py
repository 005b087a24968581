"""The artifact formats an export can write, torch-free (``python -m export --help`` reads them)."""

from __future__ import annotations

from collections.abc import Sequence

FORMATS = ("onnx", "torchscript", "mar", "triton")
DEFAULT_FORMATS = ("onnx", "torchscript")


def parse_formats(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Validate a comma list of formats; ONNX is always included (parity and the server need it)."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [s for s in items if s not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(["onnx", *items]))
