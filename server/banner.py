"""Working curl examples for every endpoint, printed at start and served at ``/``."""

from __future__ import annotations

from collections.abc import Mapping

from model_store.manifest import Manifest, ModelKind
from server.settings import Settings

SAMPLE = "photo.jpg"


def base_url(settings: Settings) -> str:
    """The URL clients use (an unspecified bind address is reached through localhost)."""
    host = "localhost" if settings.host in ("0.0.0.0", "::", "127.0.0.1") else settings.host
    return f"http://{host}:{settings.port}"


def curl_examples(settings: Settings, manifests: Mapping[str, Manifest]) -> list[tuple[str, str]]:
    """(endpoint, command) pairs that work against this server as configured."""
    url = base_url(settings)
    auth = ' -H "Authorization: Bearer $SERVER_API_KEY"' if settings.api_key else ""
    def first(*kinds: ModelKind, besides: Manifest | None = None) -> Manifest | None:
        return next((m for kind in kinds for m in manifests.values() if m.kind is kind and m is not besides), None)

    classifier = first(ModelKind.MULTI_LABEL, ModelKind.SINGLE_LABEL)
    segmenter = first(ModelKind.SEGMENTER)
    single_label = first(ModelKind.SINGLE_LABEL, besides=classifier)
    any_model = classifier or segmenter or next(iter(manifests.values()), None)
    out = [
        ("GET /health", f"curl -s {url}/health"),
        ("GET /ready", f"curl -s {url}/ready"),
        ("GET /models", f"curl -s{auth} {url}/models"),
        ("GET /metrics", f"curl -s {url}/metrics"),
    ]
    if classifier is not None:
        out += [
            ("POST /predict", f"curl -s{auth} -F file=@{SAMPLE} '{url}/predict?model={classifier.name}&top_k=5'"),
            ("POST /predict (raw body)", f"curl -s{auth} -H 'Content-Type: image/jpeg' --data-binary @{SAMPLE} "
                                         f"'{url}/predict?scores=true'"),
        ]
    if single_label is not None:
        out.append(("POST /predict (single-label)",
                    f"curl -s{auth} -F file=@{SAMPLE} '{url}/predict?model={single_label.name}&top_k=3'"))
    if segmenter is not None:
        out += [
            ("POST /segment", f"curl -s{auth} -F file=@{SAMPLE} '{url}/segment?model={segmenter.name}' -o mask.png"),
            ("POST /segment (json)",
             f"curl -s{auth} -F file=@{SAMPLE} '{url}/segment?model={segmenter.name}&format=json'"),
            ("POST /segment (overlay)",
             f"curl -s{auth} -F file=@{SAMPLE} '{url}/segment?model={segmenter.name}&format=overlay' -o overlay.png"),
        ]
    if any_model is None:  # every entry failed to load: only the status endpoints answer
        return out
    out.append(("POST /robustness", f"curl -s{auth} -F file=@{SAMPLE} "
                                    f"'{url}/robustness?model={any_model.name}&mask_ratio=high&n=16&seed=0'"))
    height, width = any_model.input.size
    out += [
        ("GET /v2/health/ready", f"curl -s {url}/v2/health/ready"),
        ("GET /v2/models/{m}", f"curl -s{auth} {url}/v2/models/{any_model.name}"),
        ("POST /v2/models/{m}/infer",
         "python3 -c 'import json; print(json.dumps({\"inputs\": [{\"name\": \"images\", \"shape\": "
         f"[1, 3, {height}, {width}], \"datatype\": \"FP32\", \"data\": [0.5] * {3 * height * width}}}]}}))' "
         f"| curl -s{auth} -H 'Content-Type: application/json' -d @- {url}/v2/models/{any_model.name}/infer"),
    ]
    return out


def banner(settings: Settings, manifests: Mapping[str, Manifest], providers: Mapping[str, str]) -> str:
    """The start-up text: what is served, on what, and how to call it."""
    lines = [f"occlusion-serve ready on {base_url(settings)}  (docs: {base_url(settings)}/docs)"]
    for name, m in manifests.items():
        height, width = m.input.size
        lines.append(f"  model {name} v{m.version}: {m.kind.value}, {len(m.class_names)} classes, {height}x{width}, "
                     f"{providers.get(name, 'not loaded')}")
    lines.append("try:")
    lines += [f"  {command}" for _, command in curl_examples(settings, manifests)]
    return "\n".join(lines)
