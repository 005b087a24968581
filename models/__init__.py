"""Model zoo: CSRA recognizers (MSL-C, MSL-V) and segmenters, built by preset name."""

import models.mobilenet
import models.segmenters  # noqa: F401  (registers the segmentation presets)
from models.checkpoint import CheckpointError, infer_config, load_checkpoint, read_state_dict
from models.presets import PRESETS, Preset, get_preset
from models.registry import build_model, create_model

__all__ = [
    "PRESETS",
    "CheckpointError",
    "Preset",
    "build_model",
    "create_model",
    "get_preset",
    "infer_config",
    "load_checkpoint",
    "read_state_dict",
]
