"""Checkpoints load strictly and safely; ``infer_config`` reads the architecture from keys alone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from models.checkpoint import CheckpointError, infer_state_dict_config

ROOT = Path(__file__).resolve().parents[2]


def test_module_prefixed_reference_checkpoint_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = models.create_model("msl-c-voc")
    path = tmp_path / "msl_c_voc.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    target = models.load_checkpoint(models.create_model("msl-c-voc"), path)
    for key in ("classifier.multi_head.0.head.weight", "layer3.22.bn3.running_var"):
        assert torch.equal(target.state_dict()[key], source.state_dict()[key])


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_state_dict_is_found(tmp_path: Path, wrapper: str) -> None:
    source = models.create_model("resnet18-csra-128")
    path = tmp_path / "ckpt.pth"
    torch.save({wrapper: source.state_dict(), "epoch": 3}, path)
    loaded = models.load_checkpoint(models.create_model("resnet18-csra-128"), path)
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_pickle_with_a_callable_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": RunsCode()}, path)
    with pytest.raises(CheckpointError, match=r"refused, the file would execute pickled code \(posix\.system\)"):
        models.read_state_dict(path)


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path: Path) -> None:
    state = models.create_model("resnet18-csra-128").state_dict()
    state.pop("layer1.0.conv1.weight")
    state["fc.weight"] = torch.zeros(10, 512)
    state["classifier.multi_head.0.head.weight"] = torch.zeros(7, 512, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        models.load_checkpoint(models.create_model("resnet18-csra-128"), path)
    msg = str(info.value)
    assert "1 missing key(s): layer1.0.conv1.weight" in msg
    assert "1 unexpected key(s): fc.weight" in msg
    assert "classifier.multi_head.0.head.weight: checkpoint (7, 512, 1, 1) vs model (10, 512, 1, 1)" in msg


def test_non_checkpoint_files_are_clear_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        models.read_state_dict(text)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        models.read_state_dict(tmp_path / "missing.pth")
    torch.save({"epoch": 3}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match="no state_dict found"):
        models.read_state_dict(tmp_path / "meta.pth")


@pytest.mark.parametrize("name", sorted(n for n, p in models.PRESETS.items() if p.task == "classification"))
def test_infer_config_recovers_every_preset(name: str) -> None:
    preset = models.get_preset(name)
    # Building ViT-L/ResNet-101 just for shapes is slow; a meta-device model has the same keys and shapes.
    with torch.device("meta"):
        state = models.create_model(name).state_dict()
    config = infer_state_dict_config(state)
    assert config["heads"] == preset.heads
    assert config["num_classes"] == preset.num_classes
    assert config["arch"] == preset.arch
    if preset.arch == "resnet_csra":
        assert config["depth"] == preset.arch_args["depth"]
    elif preset.arch == "vit_csra":
        from models.vit_csra import VIT_VARIANTS

        width, depth, num_heads = VIT_VARIANTS[preset.arch_args["variant"]]
        assert (config["embed_dim"], config["depth"], config["num_heads"]) == (width, depth, num_heads)
        assert config["base_size"] == 224


def test_infer_config_reads_a_saved_file(tmp_path: Path) -> None:
    path = tmp_path / "coco.pth"
    torch.save(models.create_model("resnet18-csra", num_classes=80, heads=6).state_dict(), path)
    config = models.infer_config(path)
    assert (config["family"], config["depth"], config["heads"], config["num_classes"]) == ("resnet", 18, 6, 80)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "models", *args], capture_output=True, text=True, cwd=ROOT)


def test_inspect_cli_prints_the_architecture(tmp_path: Path) -> None:
    path = tmp_path / "voc.pth"
    torch.save(models.create_model("resnet18-csra-128").state_dict(), path)
    result = run_cli("inspect", str(path))
    assert result.returncode == 0, result.stderr
    assert "depth             18" in result.stdout
    assert "num_classes       10" in result.stdout
    assert "resnet18-csra" in result.stdout


def test_inspect_cli_one_line_error_on_non_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0not really a jpeg")
    result = run_cli("inspect", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
