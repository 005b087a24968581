"""``create_model`` builds presets that carry their metadata, and overrides change it."""

import pytest
import torch

import models
from common.labels import COCO_CLASSES, VOC_CLASSES, WIDER_ATTRIBUTES


@pytest.mark.parametrize(
    "name,heads,lam,size,classes,mean",
    [
        ("msl-c-voc", 1, 0.1, 448, VOC_CLASSES, 0.0),
        ("msl-c-coco", 6, 0.4, 448, COCO_CLASSES, 0.0),
        ("msl-v-voc", 1, 0.3, 224, VOC_CLASSES, 0.0),
        ("msl-v-coco", 8, 1.0, 224, COCO_CLASSES, 0.0),
        ("msl-v-wider", 1, 0.3, 224, WIDER_ATTRIBUTES, 0.5),
    ],
)
def test_reference_presets(name: str, heads: int, lam: float, size: int, classes: tuple, mean: float) -> None:
    p = models.get_preset(name)
    assert (p.heads, p.lam, p.image_size, p.class_names, p.threshold) == (heads, lam, size, classes, 0.5)
    assert p.mean == (mean,) * 3 and p.std == ((0.5,) * 3 if mean else (1.0,) * 3)


def test_class_lists_have_reference_lengths_and_order() -> None:
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    assert len(COCO_CLASSES) == 80 and COCO_CLASSES[0] == "person" and COCO_CLASSES[-1] == "toothbrush"
    assert len(WIDER_ATTRIBUTES) == 14


def test_overrides_change_classes_heads_lam_and_size() -> None:
    model = models.create_model("resnet18-csra", num_classes=3, heads=4, lam=0.7, image_size=160)
    p = model.preset
    assert (p.num_classes, p.heads, p.lam, p.image_size) == (3, 4, 0.7, 160)
    assert p.class_names == ("class_0", "class_1", "class_2")
    assert len(model.classifier.multi_head) == 4
    assert model.classifier.multi_head[0].lam == 0.7
    assert model(torch.rand(1, 3, 160, 160)).shape == (1, 3)


def test_preset_metadata_is_json_ready() -> None:
    d = models.create_model("vit-tiny-csra").preset.to_dict()
    assert d["num_classes"] == 10 and d["dynamic_size"] is True and d["arch"] == "vit_csra"


def test_unknown_preset_and_override_are_clear_errors() -> None:
    with pytest.raises(KeyError, match=r"unknown model preset 'nope'; known presets: .*msl-c-voc"):
        models.create_model("nope")
    with pytest.raises(TypeError, match="unknown override"):
        models.create_model("resnet18-csra", depth=7)
