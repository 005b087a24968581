"""The pipeline's import rules: data flows one way, and the server reads the store only through its contract."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "models", "robustness", "training", "export", "model_store", "server", "loadtests", "benchmarks")
# What each folder may import from the project (itself included). `common` (labels, image preparation, scores, label
# PNGs, dataset readers, the model-kind vocabulary) imports nothing else, and every folder may import it. Libraries
# import no stage (the store's torch-free contract is not a stage: offline evaluation reads an exported model through
# it, as the server does); `models` needs only the shared labels, not the occlusion science; export writes the store's
# contract; the server and the load tests read the store only through model_store, never through export.
ALLOWED = {
    "common": {"common"},
    "robustness": {"common", "robustness", "model_store"},
    "models": {"common", "models"},
    "model_store": {"common", "model_store"},
    "training": {"common", "training", "models", "robustness"},
    "export": {"common", "export", "models", "robustness", "model_store"},
    "server": {"common", "server", "robustness", "model_store"},
    "loadtests": {"common", "loadtests", "server", "model_store", "export", "training", "models", "robustness"},
    "benchmarks": set(PACKAGES),
}


def project_imports(path: Path) -> set[str]:
    """The project packages a file imports, at any depth (imports inside functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & set(PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_a_folder_imports_only_what_its_place_in_the_pipeline_allows(package: str) -> None:
    wrong = {f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}"
             for path in sorted((ROOT / package).rglob("*.py"))
             if (bad := project_imports(path) - ALLOWED[package])}
    assert not wrong, "; ".join(sorted(wrong))


def test_the_rules_catch_a_backward_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from export.pipeline import export_entry\n    import server.main\n")
    assert project_imports(module) == {"export", "server"}
