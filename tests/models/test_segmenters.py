"""Segmenters: logits at the input resolution for any size, DeepLab-V2's ASPP rates, presets, export."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.export import Dim

import models.segmenters as segmenters
from common.labels import EMBEDDED_CLASSES, VOC_CLASSES
from models import create_model, get_preset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def deeplabv2_r18() -> nn.Module:
    torch.manual_seed(0)
    return create_model("deeplabv2-r18").eval()


@pytest.mark.parametrize(
    ("name", "num_classes", "first_classes"),
    [
        ("deeplabv2-r18", 11, ("background", "circle")),
        ("deeplabv2-r18-os16", 11, ("background", "circle")),
        ("deeplabv2-r101", 21, ("background", "aeroplane")),
        ("fcn-r50", 11, ("background", "circle")),
        ("deeplabv3-r50", 11, ("background", "circle")),
    ],
)
def test_presets_describe_segmenters_with_background_first(name: str, num_classes: int, first_classes) -> None:
    preset = get_preset(name)
    assert preset.task == "segmentation"
    assert preset.num_classes == num_classes
    assert preset.class_names[:2] == first_classes
    assert preset.dynamic_size is True
    assert preset.mean == (0.485, 0.456, 0.406) and preset.std == (0.229, 0.224, 0.225)


def test_embedded_and_voc_class_lists_follow_background() -> None:
    assert get_preset("deeplabv2-r18").class_names[1:] == EMBEDDED_CLASSES
    assert get_preset("deeplabv2-r101").class_names[1:] == VOC_CLASSES


@pytest.mark.parametrize(("height", "width"), [(96, 96), (128, 160)])
def test_deeplabv2_logits_match_input_size(deeplabv2_r18: nn.Module, height: int, width: int) -> None:
    with torch.no_grad():
        out = deeplabv2_r18(torch.rand(2, 3, height, width))
    assert out.shape == (2, 11, height, width)


@pytest.mark.parametrize(("output_stride", "expected"), [(8, (16, 20)), (16, (8, 10)), (32, (4, 5))])
def test_dilated_trunk_reaches_its_output_stride(output_stride: int, expected: tuple[int, int]) -> None:
    trunk = segmenters.DilatedResNet(18, output_stride).eval()
    with torch.no_grad():
        features = trunk(torch.rand(1, 3, 128, 160))
    assert features.shape == (1, 512, *expected)


def test_output_stride_8_dilates_layer3_by_2_and_layer4_by_4() -> None:
    trunk = segmenters.DilatedResNet(18, 8)
    layer3 = {m.dilation for m in trunk.layer3.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)}
    layer4 = {m.dilation for m in trunk.layer4.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)}
    strides = {m.stride for layer in (trunk.layer3, trunk.layer4) for m in layer.modules() if isinstance(m, nn.Conv2d)}
    assert layer3 == {(2, 2)} and layer4 == {(4, 4)} and strides == {(1, 1)}


def test_aspp_has_four_3x3_branches_with_rates_6_12_18_24(deeplabv2_r18: nn.Module) -> None:
    branches = deeplabv2_r18.classifier.branches
    assert tuple(b.dilation[0] for b in branches) == (6, 12, 18, 24)
    assert tuple(b.padding[0] for b in branches) == (6, 12, 18, 24)
    assert {b.kernel_size for b in branches} == {(3, 3)}
    assert {(b.in_channels, b.out_channels) for b in branches} == {(512, 11)}


def test_aspp_output_is_the_sum_of_its_branches(deeplabv2_r18: nn.Module) -> None:
    features = torch.randn(1, 512, 9, 7)
    aspp = deeplabv2_r18.classifier
    with torch.no_grad():
        expected = sum(nn.functional.conv2d(features, b.weight, b.bias, padding=b.padding, dilation=b.dilation)
                       for b in aspp.branches)
        assert torch.allclose(aspp(features), expected, atol=1e-6)


def test_eval_forward_is_deterministic_and_seeded_builds_agree(deeplabv2_r18: nn.Module) -> None:
    x = torch.rand(1, 3, 64, 72)
    torch.manual_seed(0)
    twin = create_model("deeplabv2-r18").eval()
    with torch.no_grad():
        first, second, other = deeplabv2_r18(x), deeplabv2_r18(x), twin(x)
    assert torch.equal(first, second)
    assert torch.equal(first, other)


def test_deeplabv2_exports_with_dynamic_height_and_width(deeplabv2_r18: nn.Module) -> None:
    spec = {"x": {0: Dim("batch", min=1, max=8), 2: Dim("height", min=33, max=512), 3: Dim("width", min=33, max=512)}}
    exported = torch.export.export(deeplabv2_r18, (torch.rand(2, 3, 64, 80),), dynamic_shapes=spec).module()
    x = torch.rand(3, 3, 72, 100)
    with torch.no_grad():
        assert torch.allclose(exported(x), deeplabv2_r18(x), atol=1e-5)


@pytest.mark.parametrize("name", ["fcn-r50", "deeplabv3-r50"])
def test_torchvision_segmenters_return_a_logits_tensor_at_input_size(name: str) -> None:
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 40, 56))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 11, 40, 56)
    assert not any(k.startswith("aux_classifier") for k in model.state_dict())


def test_num_classes_override_resizes_the_aspp() -> None:
    model = create_model("deeplabv2-r18", num_classes=5)
    assert {b.out_channels for b in model.classifier.branches} == {5}


@pytest.mark.parametrize(("kwargs", "message"), [({"depth": 19}, "depth"), ({"output_stride": 4}, "output_stride")])
def test_bad_trunk_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        segmenters.DilatedResNet(**kwargs)


def test_unknown_torchvision_segmenter_raises_value_error() -> None:
    with pytest.raises(ValueError, match="pspnet/resnet50"):
        segmenters.TorchvisionSegmenter("pspnet", "resnet50", 3)
