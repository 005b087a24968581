"""Regenerate inferenceservice-v1beta1.json from a local copy of KServe's InferenceService CRD (no download here).

    git -C kserve show v0.20.0:config/crd/full/serving.kserve.io_inferenceservices.yaml > /tmp/isvc-crd.yaml
    python deploy/k8s/schemas/vendor_kserve_schema.py /tmp/isvc-crd.yaml v0.20.0 <commit>

Keeps only ``spec.versions[name=v1beta1].schema.openAPIV3Schema`` and drops its ``description`` texts (about two
thirds of the file, no effect on validation); every other keyword is kept as KServe wrote it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).with_name("inferenceservice-v1beta1.json")
SOURCE = "https://github.com/kserve/kserve/blob/{tag}/config/crd/full/serving.kserve.io_inferenceservices.yaml"


def without_descriptions(node: Any, in_properties: bool = False) -> Any:
    """The schema minus its ``description`` keywords (a property that is *named* description stays)."""
    if isinstance(node, dict):
        return {key: without_descriptions(value, in_properties=key == "properties" and not in_properties)
                for key, value in node.items() if in_properties or key != "description"}
    if isinstance(node, list):
        return [without_descriptions(item) for item in node]
    return node


def main(crd_path: str, tag: str, commit: str) -> None:
    text = Path(crd_path).read_bytes()
    crd = next(doc for doc in yaml.safe_load_all(text) if doc)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    schema = without_descriptions(version["schema"]["openAPIV3Schema"])
    comment = (f"openAPIV3Schema of the InferenceService CRD (serving.kserve.io/v1beta1), KServe {tag} "
               f"(commit {commit}), {SOURCE.format(tag=tag)} (sha256 {hashlib.sha256(text).hexdigest()}); "
               "description texts removed. Vendored so that "
               "tests/test_deploy_manifests.py validates offline: nothing is downloaded at test time.")
    OUT.write_text(json.dumps({"$comment": comment, **schema}, separators=(",", ":"), sort_keys=True) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
