"""MSL-C keeps the reference checkpoint layout exactly (the MSL paper's MSL-C; docs/papers.md)."""

import pytest
import torch

import models
from models.resnet_csra import ResNetCSRA

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def reference_resnet_keys(blocks: tuple[int, ...], num_heads: int) -> set[str]:
    """The reference key set written from the reference checkpoints' layout, not from the model."""
    keys = {"conv1.weight", *(f"bn1.{p}" for p in BN)}
    for layer, count in enumerate(blocks, start=1):
        for b in range(count):
            prefix = f"layer{layer}.{b}"
            for i in (1, 2, 3):
                keys.add(f"{prefix}.conv{i}.weight")
                keys.update(f"{prefix}.bn{i}.{p}" for p in BN)
        keys.add(f"layer{layer}.0.downsample.0.weight")
        keys.update(f"layer{layer}.0.downsample.1.{p}" for p in BN)
    keys.update(f"classifier.multi_head.{i}.head.weight" for i in range(num_heads))
    return keys


def test_msl_c_voc_key_set_equals_reference() -> None:
    state = models.create_model("msl-c-voc").state_dict()
    assert set(state) == reference_resnet_keys((3, 4, 23, 3), 1)
    assert tuple(state["classifier.multi_head.0.head.weight"].shape) == (20, 2048, 1, 1)
    assert not any(k.startswith("fc.") or k.startswith("module.") for k in state)


def test_msl_c_coco_has_six_heads_of_80_classes() -> None:
    state = models.create_model("msl-c-coco").state_dict()
    assert set(state) == reference_resnet_keys((3, 4, 23, 3), 6)
    for i in range(6):
        assert tuple(state[f"classifier.multi_head.{i}.head.weight"].shape) == (80, 2048, 1, 1)


def test_forward_equals_trunk_then_head() -> None:
    torch.manual_seed(0)
    model = models.create_model("resnet18-csra-128").eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        feats = model.layer4(model.layer3(model.layer2(model.layer1(
            model.maxpool(model.relu(model.bn1(model.conv1(x))))))))
        assert feats.shape == (2, 512, 4, 4)
        torch.testing.assert_close(model(x), model.classifier(feats))


@pytest.mark.parametrize("depth,dim", [(18, 512), (34, 512), (50, 2048)])
def test_depths_build_with_their_feature_width(depth: int, dim: int) -> None:
    model = ResNetCSRA(depth, num_classes=3)
    assert model.classifier.multi_head[0].head.weight.shape == (3, dim, 1, 1)


def test_unknown_depth_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="depth must be one of"):
        ResNetCSRA(42)
