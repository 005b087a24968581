"""Safe, strict checkpoint loading, and architecture inference from a state_dict alone (asking each family)."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.kinds import Task
from models.presets import FAMILIES

HEAD_KEY = re.compile(r"^classifier\.multi_head\.(\d+)\.head\.weight$")
SHOW_FIRST = 5


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict without executing pickled code; unwrap ``state_dict``/``model``; strip ``module.``."""
    return extract_state_dict(read_checkpoint(path), source=str(path))


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` and one-line errors; returns the raw loaded object."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"(?:unsupported )?GLOBAL ([\w.]+)", str(exc))
        if blocked:
            raise CheckpointError(
                f"{path}: refused, the file would execute pickled code ({blocked.group(1)}); "
                "only plain tensors and containers are loaded"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unreadable pickle)") from None
    except Exception as exc:  # zip/pickle corruption surfaces as several exception types
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    return obj


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensor mapping in a loaded checkpoint object and strip a DataParallel ``module.`` prefix."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: no state_dict found (expected a mapping of names to tensors)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _first(items: list[str]) -> str:
    more = f" (+{len(items) - SHOW_FIRST} more)" if len(items) > SHOW_FIRST else ""
    return ", ".join(items[:SHOW_FIRST]) + more


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise ``CheckpointError`` listing missing keys, unexpected keys and shape mismatches, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_first(shapes)}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint strictly into ``model`` (weights only, ``module.`` stripped) and return it."""
    state = read_state_dict(path)
    check_state_dict(model, state, source=str(path))
    model.load_state_dict(state, strict=True)
    return model


def count_indices(keys: list[str], pattern: str) -> int:
    """How many numbered children ``pattern`` finds (group 1 is the index): the largest index plus one."""
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in keys if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def csra_head_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Task, head count, classes and feature width read from CSRA head keys; empty when there are none."""
    head_ids = sorted(int(m.group(1)) for k in state if (m := HEAD_KEY.match(k)))
    if not head_ids:
        return {}
    head = state[f"classifier.multi_head.{head_ids[0]}.head.weight"]
    return {"task": Task.CLASSIFICATION.value, "heads": len(head_ids), "num_classes": int(head.shape[0]),
            "feature_dim": int(head.shape[1])}


def infer_state_dict_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Recover the architecture (family, depth, width, heads, classes) from tensor names and shapes."""
    config = csra_head_config(state)
    for family in FAMILIES.values():
        found = family.recognise(state)
        if found is not None:
            config.update(found)
            break
    else:
        raise CheckpointError(f"unrecognised architecture: first keys are {_first(list(state))}")
    if "task" not in config:
        raise CheckpointError("no CSRA classifier keys (classifier.multi_head.N.head.weight) found")
    return config


def infer_config(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint without building a model and return its architecture config."""
    return infer_state_dict_config(read_state_dict(path))
