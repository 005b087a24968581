"""Model zoo: CSRA recognizers (MSL-C, MSL-V) and segmenters, built by preset name.

Each family module registers its builders, presets and checkpoint knowledge on import.
"""

import models.mobilenet
import models.resnet_csra
import models.segmenters
import models.vit_csra  # noqa: F401  (the imports above register the families)
from models.checkpoint import CheckpointError, infer_config, load_checkpoint, read_state_dict
from models.factory import build_model, create_model
from models.families import default_lam, matching_presets, preset_from_config
from models.presets import PRESETS, Preset, get_preset

__all__ = [
    "PRESETS",
    "CheckpointError",
    "Preset",
    "build_model",
    "create_model",
    "default_lam",
    "get_preset",
    "infer_config",
    "load_checkpoint",
    "matching_presets",
    "preset_from_config",
    "read_state_dict",
]
