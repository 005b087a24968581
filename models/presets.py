"""Model presets: architecture plus the metadata (classes, size, normalisation) that travels with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from torch import nn

from models.classnames import (
    COCO_CLASSES,
    EMBEDDED_CLASSES,
    VOC_CLASSES,
    WIDER_ATTRIBUTES,
    generic_class_names,
)

ZERO_MEAN = (0.0, 0.0, 0.0)
UNIT_STD = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Preset:
    """Everything needed to build a model and to feed it: one source of truth for the pipeline."""

    name: str
    task: str  # "classification" | "segmentation"
    arch: str  # key into ARCHITECTURES
    arch_args: dict[str, Any]
    class_names: tuple[str, ...]
    image_size: int
    mean: tuple[float, float, float] = ZERO_MEAN
    std: tuple[float, float, float] = UNIT_STD
    threshold: float = 0.5
    heads: int = 1
    lam: float = 0.1
    dynamic_size: bool = False  # True when the model accepts other input sizes than image_size
    resize: str = "stretch"  # RGB resized to SxS, aspect not kept, no crop (reference protocol)
    activation: str = "sigmoid"  # classifiers: "sigmoid" (multi-label) or "softmax" (single-label)
    pretrained: str = ""  # where the trunk's initial weights come from ("" = random init); see models.pretrained
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written into export manifests."""
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["num_classes"] = self.num_classes
        return d


PRESETS: dict[str, Preset] = {}
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_preset(preset: Preset) -> Preset:
    """Add a preset to the registry by its name."""
    PRESETS[preset.name] = preset
    return preset


def register_architecture(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder ``f(preset) -> nn.Module`` under an architecture name."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ARCHITECTURES[name] = builder
        return builder

    return wrap


def get_preset(name: str) -> Preset:
    """Look a preset up by name, with a clear error listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None


def preset_from_dict(data: dict[str, Any]) -> Preset:
    """Rebuild a preset from ``Preset.to_dict()`` output (as stored in training checkpoints and manifests)."""
    fields = {k: v for k, v in data.items() if k in Preset.__dataclass_fields__}
    for key in ("class_names", "mean", "std"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return Preset(**fields)


OVERRIDABLE = ("num_classes", "class_names", "heads", "lam", "image_size", "threshold", "arch_args")


def apply_overrides(preset: Preset, **overrides: Any) -> Preset:
    """Return the preset with ``num_classes``, ``class_names``, ``heads``, ``lam``, ``image_size``... changed."""
    unknown = set(overrides) - set(OVERRIDABLE)
    if unknown:
        raise TypeError(f"unknown override(s) {sorted(unknown)}; allowed: {', '.join(OVERRIDABLE)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    num_classes = changes.pop("num_classes", None)
    if "class_names" in changes:
        changes["class_names"] = tuple(changes["class_names"])
        if num_classes is not None and num_classes != len(changes["class_names"]):
            raise ValueError(f"num_classes={num_classes} but {len(changes['class_names'])} class_names given")
    elif num_classes is not None and num_classes != preset.num_classes:
        changes["class_names"] = generic_class_names(int(num_classes))
    if "arch_args" in changes:
        changes["arch_args"] = {**preset.arch_args, **changes["arch_args"]}
    return replace(preset, **changes)


def _resnet(name: str, depth: int, classes: tuple[str, ...], size: int, heads: int, lam: float, desc: str) -> None:
    register_preset(Preset(name, "classification", "resnet_csra", {"depth": depth}, classes, size,
                           heads=heads, lam=lam, description=desc))


def _vit(name: str, variant: str, classes: tuple[str, ...], heads: int, lam: float, desc: str,
         mean: tuple[float, float, float] = ZERO_MEAN, std: tuple[float, float, float] = UNIT_STD) -> None:
    register_preset(Preset(name, "classification", "vit_csra", {"variant": variant}, classes, 224,
                           mean=mean, std=std, heads=heads, lam=lam, dynamic_size=True, description=desc))


_resnet("msl-c-voc", 101, VOC_CLASSES, 448, 1, 0.1, "MSL-C ResNet-101 + CSRA, VOC2007 (msl_c_voc.pth)")
_resnet("msl-c-coco", 101, COCO_CLASSES, 448, 6, 0.4, "MSL-C ResNet-101 + CSRA, COCO 2014 (msl_c_coco.pth)")
_vit("msl-v-voc", "L/16", VOC_CLASSES, 1, 0.3, "MSL-V ViT-L/16 + CSRA, VOC2007")
_vit("msl-v-coco", "L/16", COCO_CLASSES, 8, 1.0, "MSL-V ViT-L/16 + CSRA, COCO 2014")
_vit("msl-v-wider", "L/16", WIDER_ATTRIBUTES, 1, 0.3, "MSL-V ViT-L/16 + CSRA, WIDER-Attribute (msl_v_wider.pth)",
     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
_resnet("resnet18-csra", 18, EMBEDDED_CLASSES, 224, 1, 0.1, "Small ResNet-18 + CSRA for the embedded demo")
_resnet("resnet18-csra-128", 18, EMBEDDED_CLASSES, 128, 1, 0.1, "ResNet-18 + CSRA at 128 px for fast tests")
_vit("vit-tiny-csra", "tiny-test", EMBEDDED_CLASSES, 1, 0.3, "Tiny ViT/16 + CSRA (dim 64, depth 2) for tests")
