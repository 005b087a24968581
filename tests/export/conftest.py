"""Export fixtures: a small random checkpoint in the DataParallel layout (``r18_store`` is in tests/conftest.py)."""

from pathlib import Path

import pytest

from export.random_weights import save_random

__all__ = ["save_random"]  # the export tests import it from here


@pytest.fixture(scope="session")
def r18_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet18-csra-128 with seed 0: the same weights as ``r18_store``'s entry, keys prefixed ``module.``."""
    return save_random("resnet18-csra-128", tmp_path_factory.mktemp("ckpt") / "r18.pth", prefix="module.")
