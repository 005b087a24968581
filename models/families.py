"""Questions about a checkpoint's architecture, answered by the registered families (``presets.FAMILIES``)."""

from __future__ import annotations

from typing import Any

from common.labels import generic_class_names
from models.presets import FAMILIES, PRESETS, Family, LamDefaults, Preset


def family_of(arch: str) -> Family | None:
    """The registered family whose inferred configs name ``arch``, if any."""
    return next((f for f in FAMILIES.values() if arch in f.archs), None)


def lam_defaults(arch: str) -> LamDefaults | None:
    """The CSRA lambda defaults of ``arch``'s family; None for architectures without them."""
    family = family_of(arch)
    return family.lam if family else None


def default_lam(arch: str, heads: int) -> tuple[float, bool]:
    """(lambda, whether it is a reference value for this architecture and head count); 0.0 if arch has none."""
    defaults = lam_defaults(arch)
    return defaults.for_heads(heads) if defaults else (0.0, False)


def inferred_preset(config: dict[str, Any], name: str, arch_args: dict[str, Any], image_size: int,
                    dynamic_size: bool) -> Preset:
    """A preset for an architecture recovered from weights: generic class names, lambda from the defaults."""
    arch, heads = config["arch"], config.get("heads", 1)
    return Preset(name=name, task=config["task"], arch=arch, arch_args=arch_args,
                  class_names=generic_class_names(config["num_classes"]), image_size=image_size,
                  heads=heads, lam=default_lam(arch, heads)[0], dynamic_size=dynamic_size,
                  description=f"inferred from checkpoint ({arch})")


def preset_from_config(config: dict[str, Any], name: str) -> Preset:
    """A preset for an architecture recovered by ``infer_config``, built by the family that recognised it."""
    family = family_of(config["arch"])
    if family is not None:
        return family.preset_from_config(config, name)
    return inferred_preset(config, name, dict(config.get("arch_args", {})), config.get("image_size", 512), True)


def matching_presets(config: dict[str, Any]) -> list[str]:
    """Names of presets whose task, heads and class count agree with an inferred config, and whose family's
    ``matches`` accepts the architecture."""
    family = FAMILIES.get(config.get("family", ""))
    if family is None:
        return []

    def fits(p: Preset) -> bool:
        same_head = (p.task, p.heads, p.num_classes) == (config.get("task"), config.get("heads"),
                                                          config.get("num_classes"))
        return same_head and family.matches(p, config)

    return sorted(name for name, p in PRESETS.items() if fits(p))
