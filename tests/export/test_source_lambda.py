"""An inferred export config takes CSRA lambda from the architecture AND the head count (CSRA, docs/papers.md)."""

from pathlib import Path

import pytest

from export.source import resolve_source
from models import default_lam
from tests.export.conftest import save_random


@pytest.mark.parametrize(("preset", "heads", "lam"), [
    ("resnet18-csra-128", 1, 0.1),
    ("resnet18-csra-128", 6, 0.4),
    ("vit-tiny-csra", 1, 0.3),
    ("vit-tiny-csra", 8, 1.0),
])
def test_inferred_lambda_follows_the_head_count(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                preset: str, heads: int, lam: float) -> None:
    checkpoint = save_random(preset, tmp_path / "plain.pth", heads=heads)
    source = resolve_source(checkpoint)
    assert source.origin == "inferred"
    assert source.preset.heads == heads and source.preset.lam == lam
    note = capsys.readouterr().err
    assert f"using {lam}" in note and "reference value" in note


def test_other_head_counts_fall_back_to_the_architecture_default(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    source = resolve_source(save_random("resnet18-csra-128", tmp_path / "h4.pth", heads=4))
    assert source.preset.heads == 4 and source.preset.lam == 0.1
    assert "no reference value for resnet_csra with 4 heads" in capsys.readouterr().err
    assert default_lam("vit_csra", 2) == (0.3, False) and default_lam("vit_csra", 8) == (1.0, True)


def test_an_explicit_lambda_wins_and_prints_no_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = resolve_source(save_random("resnet18-csra-128", tmp_path / "h6.pth", heads=6), lam=0.25)
    assert source.preset.lam == 0.25
    assert "lambda" not in capsys.readouterr().err
