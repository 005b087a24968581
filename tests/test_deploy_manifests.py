"""deploy/k8s: every manifest validates offline against its schema, the checks can fail, and the manifests agree.

Core kinds (PVC, Deployment, Service, HPA) are checked with ``kubernetes_validate``'s bundled schemas in strict mode
(unknown fields are errors), against the oldest Kubernetes the manifests target and the newest bundled. The KServe
InferenceService is a CRD: it is checked with ``jsonschema`` against KServe's vendored openAPIV3Schema
(deploy/k8s/schemas), tightened the same way. Nothing is downloaded.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, latest_version, major_minor
from packaging.version import Version

from server.settings import Settings, env_name, parse_settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
ISVC_SCHEMA = K8S / "schemas" / "inferenceservice-v1beta1.json"
CORE = ("pvc.yaml", "deployment.yaml", "service.yaml", "hpa.yaml")
ISVC = "inferenceservice.yaml"
# 1.31: the oldest Kubernetes the manifests target (lifecycle.preStop.sleep is on by default from 1.30).
VERSIONS = ("1.31", latest_version())
PORT = 8000  # the server's port when the Dockerfile cannot say (the Dockerfile's EXPOSE wins)
UID = 10001
MIN_STARTUP_SECONDS = 600  # model warm-up, TensorRT engine builds included, may take minutes


Mutation = Callable[[dict[str, Any]], None]


def load(name: str) -> dict[str, Any]:
    """The one object a manifest file holds."""
    docs = [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    assert len(docs) == 1, f"{name} holds {len(docs)} objects, expected one"
    return docs[0]


def container(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod spec's only container (the server)."""
    containers = pod["containers"]
    assert len(containers) == 1, f"expected one container, got {[c['name'] for c in containers]}"
    return containers[0]


def deployment_pod() -> dict[str, Any]:
    return load("deployment.yaml")["spec"]["template"]["spec"]


def isvc_pod() -> dict[str, Any]:
    """The predictor, which carries the pod spec's fields (containers, volumes, securityContext) in KServe."""
    return load(ISVC)["spec"]["predictor"]


def resolve_port(port: int | str, ctr: dict[str, Any]) -> int:
    """A probe's or Service's port (number or container port name) as a number."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in ctr["ports"] if "name" in p}
    assert port in named, f"port name {port!r} is not one of the container's ports {named}"
    return named[port]


def env_values(ctr: dict[str, Any]) -> dict[str, str]:
    """The container's env values: literal ones, and a stand-in for each required Secret key (an optional one may be
    absent at run time, so it is left out)."""
    values = {e["name"]: e["value"] for e in ctr.get("env", []) if "value" in e}
    for e in ctr.get("env", []):
        secret = e.get("valueFrom", {}).get("secretKeyRef")
        if secret is not None and not secret.get("optional", False):
            values[e["name"]] = f"<secret {secret['name']}/{secret['key']}>"
    return values


def dockerfile_text() -> str | None:
    return DOCKERFILE.read_text() if DOCKERFILE.is_file() else None


def exposed_port() -> int:
    """The Dockerfile's EXPOSE port, or PORT without a Dockerfile."""
    text = dockerfile_text()
    if text is None:
        return PORT
    ports = re.findall(r"^\s*EXPOSE\s+(\d+)", text, re.MULTILINE)
    assert len(ports) == 1, f"expected one EXPOSE in the Dockerfile, found {ports}"
    return int(ports[0])


def image_argv() -> list[str]:
    """The server flags in the image's exec-form CMD (``python -m server ...``), [] when there are none."""
    text = dockerfile_text() or ""
    cmds = re.findall(r"^\s*CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    if not cmds:
        return []
    argv = json.loads(cmds[-1])
    return argv[argv.index("server") + 1:] if "server" in argv else []


def effective_settings(ctr: dict[str, Any]) -> Settings:
    """What the server runs with in this pod: the image's CMD flags over the container's SERVER_* env."""
    return parse_settings(image_argv(), env_values(ctr))


# --- schema validation: core kinds ------------------------------------------------------------------------------


def test_versions_are_bundled() -> None:
    assert Version(VERSIONS[0]) in {Version(major_minor(v)) for v in all_versions()}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", CORE)
def test_core_manifest_validates_strictly(name: str, version: str) -> None:
    assert kubernetes_validate.validate(load(name), version, strict=True) == major_minor(version)


def _rename(key: str, new: str) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        ctr = container(d["spec"]["template"]["spec"])
        ctr[new] = ctr.pop(key)
    return mutate


def _set_port_as_string(d: dict[str, Any]) -> None:
    container(d["spec"]["template"]["spec"])["ports"][0]["containerPort"] = "8000"


def _set_env_int(d: dict[str, Any]) -> None:
    env = container(d["spec"]["template"]["spec"])["env"]
    next(e for e in env if e["name"] == "SERVER_PORT")["value"] = 8000  # an unquoted number in YAML


def _set_service_port_string(d: dict[str, Any]) -> None:
    d["spec"]["ports"][0]["port"] = "80"


def _typo_hpa(d: dict[str, Any]) -> None:
    d["spec"]["scaleTargetRefs"] = d["spec"].pop("scaleTargetRef")


def _hpa_replicas_string(d: dict[str, Any]) -> None:
    d["spec"]["maxReplicas"] = "4"


def _pvc_access_mode_scalar(d: dict[str, Any]) -> None:
    d["spec"]["accessModes"] = "ReadWriteMany"


# (test id, file, mutation, a fragment of the expected error)
BROKEN_CORE: list[tuple[str, str, Mutation, str]] = [
    ("readinessProbes-typo", "deployment.yaml", _rename("readinessProbe", "readinessProbes"), "readinessProbes"),
    ("securitycontext-typo", "deployment.yaml", _rename("securityContext", "securitycontext"), "securitycontext"),
    ("containerPort-string", "deployment.yaml", _set_port_as_string, "'8000' is not of type 'integer'"),
    ("env-value-int", "deployment.yaml", _set_env_int, "8000 is not of type 'string'"),
    ("service-port-string", "service.yaml", _set_service_port_string, "'80' is not of type 'integer'"),
    ("scaleTargetRefs-typo", "hpa.yaml", _typo_hpa, "scaleTargetRef"),
    ("maxReplicas-string", "hpa.yaml", _hpa_replicas_string, "'4' is not of type 'integer'"),
    ("accessModes-scalar", "pvc.yaml", _pvc_access_mode_scalar, "'ReadWriteMany' is not of type 'array'"),
]


@pytest.mark.parametrize(("name", "mutate", "expected"), [case[1:] for case in BROKEN_CORE],
                         ids=[case[0] for case in BROKEN_CORE])
def test_a_broken_core_manifest_is_rejected(name: str, mutate: Mutation, expected: str) -> None:
    resource = copy.deepcopy(load(name))
    mutate(resource)
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(resource, VERSIONS[-1], strict=True)
    assert expected in str(caught.value)


def test_strict_mode_is_what_catches_a_typo() -> None:
    """Without strict mode an unknown field passes: the API server would silently drop the misspelt probe."""
    resource = copy.deepcopy(load("deployment.yaml"))
    _rename("readinessProbe", "readinessProbes")(resource)
    kubernetes_validate.validate(resource, VERSIONS[-1], strict=False)


# --- schema validation: the KServe InferenceService (a CRD) -----------------------------------------------------


def vendored_schema() -> dict[str, Any]:
    return json.loads(ISVC_SCHEMA.read_text())


def strict(schema: Any) -> Any:
    """The schema with unknown fields forbidden wherever it lists properties and does not keep unknown fields.

    A CRD's structural schema prunes unknown fields silently; this mirrors the API server's strict field validation
    (as kubernetes_validate's strict schemas do for core kinds).
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: ({prop: strict(sub) for prop, sub in value.items()} if key == "properties" else strict(value))
           for key, value in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


ISVC_VALIDATOR = jsonschema.Draft4Validator(strict(vendored_schema()))  # OpenAPI 3.0 schemas are draft-4 shaped


def isvc_errors(resource: dict[str, Any], validator: jsonschema.protocols.Validator = ISVC_VALIDATOR) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(resource)]


def test_vendored_schema_is_a_valid_schema_with_its_provenance() -> None:
    schema = vendored_schema()
    jsonschema.Draft4Validator.check_schema(schema)
    assert "KServe v0.20.0" in schema["$comment"]
    assert "1fb781055dd1567164358233e1125142ca6ef1fe" in schema["$comment"]
    assert (K8S / "schemas" / "README.md").is_file()
    assert "predictor" in schema["properties"]["spec"]["required"]


def test_inferenceservice_validates_strictly() -> None:
    resource = load(ISVC)
    assert (resource["apiVersion"], resource["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert isvc_errors(resource) == []


def _isvc_rename_probe(d: dict[str, Any]) -> None:
    ctr = container(d["spec"]["predictor"])
    ctr["readinessProbes"] = ctr.pop("readinessProbe")


def _isvc_port_string(d: dict[str, Any]) -> None:
    container(d["spec"]["predictor"])["ports"][0]["containerPort"] = "8000"


def _isvc_protocol_on_custom_predictor(d: dict[str, Any]) -> None:
    d["spec"]["predictor"]["protocolVersion"] = "v2"


def _isvc_unnamed_container(d: dict[str, Any]) -> None:
    del container(d["spec"]["predictor"])["name"]


def _isvc_bad_scale_metric(d: dict[str, Any]) -> None:
    d["spec"]["predictor"]["scaleMetric"] = "gpu"


BROKEN_ISVC: list[tuple[Mutation, str]] = [
    (_isvc_rename_probe, "'readinessProbes' was unexpected"),
    (_isvc_port_string, "'8000' is not of type 'integer'"),
    (_isvc_protocol_on_custom_predictor, "'protocolVersion' was unexpected"),
    (_isvc_unnamed_container, "'name' is a required property"),
    (_isvc_bad_scale_metric, "'gpu' is not one of"),
]


@pytest.mark.parametrize(("mutate", "expected"), BROKEN_ISVC, ids=[m.__name__ for m, _ in BROKEN_ISVC])
def test_a_broken_inferenceservice_is_rejected(mutate: Mutation, expected: str) -> None:
    resource = copy.deepcopy(load(ISVC))
    mutate(resource)
    errors = isvc_errors(resource)
    assert any(expected in error for error in errors), errors


def test_without_tightening_the_crd_schema_misses_a_typo() -> None:
    resource = copy.deepcopy(load(ISVC))
    _isvc_rename_probe(resource)
    assert isvc_errors(resource, jsonschema.Draft4Validator(vendored_schema())) == []


# --- consistency between the manifests, the Dockerfile and the server's settings --------------------------------


def test_kustomization_lists_the_core_manifests_but_not_the_inferenceservice() -> None:
    kustomization = load("kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(CORE)
    assert ISVC not in kustomization["resources"]
    assert all((K8S / name).is_file() for name in kustomization["resources"])


def test_the_kustomization_assembles_exactly_the_four_core_kinds() -> None:
    """What `kubectl apply -k` would apply, read from the listed files (no kubectl needed, nothing skipped)."""
    kustomization = load("kustomization.yaml")
    kinds = sorted(doc["kind"] for name in kustomization["resources"]
                   for doc in yaml.safe_load_all((K8S / name).read_text()) if doc)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PersistentVolumeClaim", "Service"]


def test_service_selects_the_deployments_pods_on_the_container_port() -> None:
    deployment, service = load("deployment.yaml"), load("service.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["type"] == "ClusterIP"
    http, grpc = service["spec"]["ports"]
    assert (http["name"], http["port"]) == ("http", 80)
    pod = container(deployment["spec"]["template"]["spec"])
    assert resolve_port(http["targetPort"], pod) == exposed_port()
    assert (grpc["name"], grpc["port"], grpc["appProtocol"]) == ("grpc", 8001, "grpc")
    assert resolve_port(grpc["targetPort"], pod) == effective_settings(pod).grpc_port == 8001


def test_hpa_scales_the_deployment() -> None:
    deployment, hpa = load("deployment.yaml"), load("hpa.yaml")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] == 1 <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in container(deployment["spec"]["template"]["spec"])["resources"]["requests"]  # utilisation's base


def test_the_container_port_is_the_images_port() -> None:
    expected = exposed_port()
    assert expected == PORT
    for ctr in (container(deployment_pod()), container(isvc_pod())):
        assert ctr["ports"][0]["containerPort"] == expected
        assert [p["containerPort"] for p in ctr["ports"][1:]] in ([], [effective_settings(ctr).grpc_port])
        assert effective_settings(ctr).port == expected
        assert effective_settings(ctr).host == "0.0.0.0"


def test_deployment_probes() -> None:
    ctr = container(deployment_pod())
    paths = {probe: ctr[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert paths == {"readinessProbe": "/ready", "livenessProbe": "/health", "startupProbe": "/ready"}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert resolve_port(ctr[probe]["httpGet"]["port"], ctr) == exposed_port()


def test_inferenceservice_speaks_v2() -> None:
    ctr = container(isvc_pod())
    assert ctr["name"] == "kserve-container"
    assert env_values(ctr)["PROTOCOL"] == "v2"
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert ctr["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert resolve_port(ctr[probe]["httpGet"]["port"], ctr) == exposed_port()
    annotations = load(ISVC)["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"


@pytest.mark.parametrize("pod", [deployment_pod, isvc_pod], ids=["deployment", "inferenceservice"])
def test_startup_probe_allows_for_warm_up(pod: Callable[[], dict[str, Any]]) -> None:
    probe = container(pod())["startupProbe"]
    budget = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    assert budget >= MIN_STARTUP_SECONDS


def dockerfile_uid() -> int | None:
    """The uid the Dockerfile gives its user (``useradd --uid N`` or ``USER N``), None when it does not say."""
    text = dockerfile_text() or ""
    found = re.findall(r"--uid[ =](\d+)", text) + re.findall(r"^\s*USER\s+(\d+)", text, re.MULTILINE)
    return int(found[-1]) if found else None


@pytest.mark.parametrize("pod", [deployment_pod, isvc_pod], ids=["deployment", "inferenceservice"])
def test_pod_runs_unprivileged(pod: Callable[[], dict[str, Any]]) -> None:
    spec = pod()
    assert dockerfile_uid() in (None, UID)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == UID
    sc = container(spec)["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert spec["automountServiceAccountToken"] is False


@pytest.mark.parametrize("pod", [deployment_pod, isvc_pod], ids=["deployment", "inferenceservice"])
def test_model_store_and_scratch_volumes(pod: Callable[[], dict[str, Any]]) -> None:
    spec = pod()
    ctr = container(spec)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
    assert all(m["name"] in volumes for m in mounts.values())
    settings = effective_settings(ctr)
    store = mounts[str(settings.store)]  # the store the server reads is the mounted volume
    assert store["readOnly"] is True
    claim = volumes[store["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == load("pvc.yaml")["metadata"]["name"]
    assert claim["readOnly"] is True
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]  # evaluation reports go to a temp dir
    assert settings.trt_cache_dir is not None
    writable = [path for path, m in mounts.items() if "emptyDir" in volumes[m["name"]]]
    assert any(settings.trt_cache_dir.is_relative_to(path) for path in writable)


@pytest.mark.parametrize("pod", [deployment_pod, isvc_pod], ids=["deployment", "inferenceservice"])
def test_env_configures_the_server(pod: Callable[[], dict[str, Any]]) -> None:
    ctr = container(pod())
    known = {env_name(name) for name in Settings.__dataclass_fields__}
    names = [e["name"] for e in ctr["env"]]
    assert len(names) == len(set(names))
    unknown = {name for name in names if name.startswith("SERVER_")} - known
    assert not unknown, f"not server settings: {unknown}"
    env = env_values(ctr)
    assert env["SERVER_HOST"] == "0.0.0.0"
    assert int(env["SERVER_PORT"]) == exposed_port()
    settings = parse_settings([], env)  # the env alone is a complete, valid configuration
    assert settings.api_key is not None  # the API key Secret is required: the server binds 0.0.0.0
    assert (settings.host, settings.port, str(settings.store)) == ("0.0.0.0", exposed_port(), "/app/model_store")
    cpu_limit = float(ctr["resources"]["limits"]["cpu"])
    assert 1 <= settings.decode_threads <= cpu_limit
    assert 1 <= settings.intra_op_threads <= cpu_limit


@pytest.mark.parametrize("pod", [deployment_pod, isvc_pod], ids=["deployment", "inferenceservice"])
def test_resources_request_a_gpu_cpu_and_memory(pod: Callable[[], dict[str, Any]]) -> None:
    resources = container(pod())["resources"]
    for kind in ("requests", "limits"):
        assert resources[kind]["nvidia.com/gpu"] == 1
        assert {"cpu", "memory"} <= resources[kind].keys()


@pytest.mark.parametrize(("annotations", "pod"),
                         [(lambda: load("deployment.yaml")["spec"]["template"]["metadata"]["annotations"],
                           deployment_pod),
                          (lambda: isvc_pod()["annotations"], isvc_pod)],
                         ids=["deployment", "inferenceservice"])
def test_prometheus_scrapes_the_metrics_endpoint(annotations: Callable[[], dict[str, str]],
                                                 pod: Callable[[], dict[str, Any]]) -> None:
    found = annotations()
    assert found["prometheus.io/scrape"] == "true"
    assert found["prometheus.io/path"] == "/metrics"
    assert int(found["prometheus.io/port"]) in [p["containerPort"] for p in container(pod())["ports"]]
