"""Each architecture family recognises its own checkpoints, makes presets from them, and knows its lambda."""

import pytest
import torch

import models
from models.checkpoint import check_state_dict, infer_state_dict_config
from models.presets import FAMILIES
from models.resnet_csra import RESNET_DEPTH_BY_BLOCKS

SMALL = ["resnet18-csra-128", "vit-tiny-csra", "mobilenetv2-csra", "imagenet-mobilenetv2"]


def test_every_recognising_family_is_registered() -> None:
    assert set(FAMILIES) == {"resnet", "vit", "mobilenetv2"}


def test_resnet_depth_by_blocks_is_derived_from_the_layer_table() -> None:
    assert RESNET_DEPTH_BY_BLOCKS == {
        ("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34, ("bottleneck", (3, 4, 6, 3)): 50,
        ("bottleneck", (3, 4, 23, 3)): 101, ("bottleneck", (3, 8, 36, 3)): 152,
    }


@pytest.mark.parametrize("name", SMALL)
def test_inferred_preset_builds_a_model_the_weights_fit(name: str) -> None:
    with torch.device("meta"):
        state = models.create_model(name, num_classes=5).state_dict()
        config = infer_state_dict_config(state)
        preset = models.preset_from_config(config, "inferred")
        model = models.build_model(preset)
    assert (preset.name, preset.arch, preset.num_classes) == ("inferred", models.get_preset(name).arch, 5)
    check_state_dict(model, state)


@pytest.mark.parametrize("name", SMALL)
def test_matching_presets_finds_the_preset_a_checkpoint_came_from(name: str) -> None:
    with torch.device("meta"):
        config = infer_state_dict_config(models.create_model(name).state_dict())
    assert name in models.matching_presets(config)


@pytest.mark.parametrize(("arch", "heads", "expected"), [
    ("resnet_csra", 1, (0.1, True)), ("resnet_csra", 6, (0.4, True)), ("resnet_csra", 2, (0.1, False)),
    ("vit_csra", 1, (0.3, True)), ("vit_csra", 8, (1.0, True)), ("vit_csra", 4, (0.3, False)),
    ("mobilenetv2_csra", 1, (0.0, False)), ("deeplabv2", 1, (0.0, False)),
])
def test_lambda_defaults_follow_the_reference_head_counts(arch: str, heads: int, expected: tuple) -> None:
    assert models.default_lam(arch, heads) == expected


def test_an_architecture_no_family_claims_gets_a_generic_preset() -> None:
    config = {"arch": "deeplabv2", "task": "segmentation", "num_classes": 3, "arch_args": {"depth": 18}}
    preset = models.preset_from_config(config, "seg")
    assert (preset.arch_args, preset.image_size, preset.dynamic_size, preset.lam) == ({"depth": 18}, 512, True, 0.0)
    assert preset.class_names == ("class_0", "class_1", "class_2")
