"""Model presets (architecture plus the metadata that travels with it) and the registries family modules fill."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from torch import Tensor, nn

from common.kinds import Activation, Task
from common.labels import generic_class_names

ZERO_MEAN = (0.0, 0.0, 0.0)  # the MSL reference protocol: pixels in [0, 1], no mean/std
UNIT_STD = (1.0, 1.0, 1.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # for ImageNet-trained trunks
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preset:
    """Everything needed to build a model and to feed it: one source of truth for the pipeline."""

    name: str
    task: Task
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
    activation: Activation = Activation.SIGMOID  # classifiers: multi-label (sigmoid) or single-label (softmax)
    pretrained: str = ""  # where the trunk's initial weights come from ("" = random init); see models.pretrained
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", Task(self.task))  # presets built from checkpoint configs spell them
        object.__setattr__(self, "activation", Activation(self.activation))

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written into export manifests and checkpoints (plain strings: checkpoints load with
        ``weights_only=True``, which refuses pickled enums)."""
        d = asdict(self)
        d["task"], d["activation"] = self.task.value, self.activation.value
        d["class_names"] = list(self.class_names)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["num_classes"] = self.num_classes
        return d


@dataclass(frozen=True)
class LamDefaults:
    """CSRA lambda for weights that do not say (lambda is not stored in them): reference values by head count."""

    default: float
    reference: Mapping[int, float]

    def for_heads(self, heads: int) -> tuple[float, bool]:
        """(lambda, whether it is the reference value for this head count)."""
        if heads in self.reference:
            return self.reference[heads], True
        return self.default, False


@dataclass(frozen=True)
class Family:
    """What one architecture family knows about its checkpoints; each family module registers its own."""

    name: str  # the ``family`` its inferred configs carry
    archs: tuple[str, ...]  # the architectures its inferred configs name
    recognise: Callable[[Mapping[str, Tensor]], dict[str, Any] | None]  # family config of a state_dict, or None
    preset_from_config: Callable[[dict[str, Any], str], Preset]  # (inferred config, preset name) -> preset
    matches: Callable[[Preset, dict[str, Any]], bool]  # preset has the architecture the config describes
    lam: LamDefaults | None = None  # families with a CSRA head


PRESETS: dict[str, Preset] = {}
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}
FAMILIES: dict[str, Family] = {}


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


def register_family(family: Family) -> Family:
    """Add an architecture family (checkpoint recognition, inferred presets, lambda defaults) by its name."""
    FAMILIES[family.name] = family
    return family


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
