"""``python -m models``: list presets, or inspect a checkpoint file without building a model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.checkpoint import CheckpointError, infer_config
from models.factory import create_model
from models.families import matching_presets
from models.presets import PRESETS


def save_pretrained(preset: str, out: str) -> int:
    """Build ``preset``, load its packaged weights strictly and save ``{"state_dict", "preset"}`` to ``out``."""
    import torch

    from models.pretrained import load_pretrained

    try:
        model = create_model(preset)
        if not model.preset.pretrained:
            raise CheckpointError(f"preset {preset!r} names no pretrained weights")
        report = load_pretrained(model, model.preset.pretrained)
    except (CheckpointError, KeyError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "preset": model.preset.to_dict()}, path)
    print(f"{report.summary()}; wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser("inspect", help="print the architecture stored in a checkpoint")
    inspect.add_argument("checkpoint", help="path to a .pth/.pt state_dict (plain, or under 'state_dict'/'model')")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub.add_parser("list", help="list the registered presets")
    save = sub.add_parser("save-pretrained",
                          help="write a preset with its packaged pretrained weights as a checkpoint (ready to export)")
    save.add_argument("preset", help="a preset that names packaged weights, e.g. imagenet-mobilenetv2")
    save.add_argument("out", help="checkpoint file to write")
    args = parser.parse_args(argv)

    if args.command == "save-pretrained":
        return save_pretrained(args.preset, args.out)

    if args.command == "list":
        for name, p in sorted(PRESETS.items()):
            size = f"{p.image_size}px"
            print(f"{name:22s} {p.task:15s} {p.arch:14s} {size:6s} {p.num_classes:3d} classes  {p.description}")
        return 0
    try:
        config = infer_config(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config["matching_presets"] = matching_presets(config)
    if args.json:
        print(json.dumps(config, indent=2))
    else:
        for key, value in config.items():
            print(f"{key:17s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
