"""The answers of /, /health, /ready and /models."""

from __future__ import annotations

from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict

from common.kinds import Activation, Task
from server.shapes.schema import closed

ModelState = Literal["loading", "ready", "failed", "unhealthy", "unloaded"]


@closed
class Endpoint(TypedDict):
    """An endpoint and a working curl command for it."""

    endpoint: str
    curl: str


@closed
class IndexResponse(TypedDict):
    """The service, where its documentation is, whether it is ready, and how to call each endpoint."""

    service: str
    docs: str
    ready: bool
    endpoints: list[Endpoint]


@closed
class Health(TypedDict):
    """The process answers."""

    status: Literal["ok"]


@closed
class Readiness(TypedDict):
    """Every model is warm: each model's state."""

    ready: bool
    models: dict[str, ModelState]


@closed
class NotReady(TypedDict):
    """503 while a model loads (or after one failed): the error body plus each model's state."""

    error: str
    detail: str
    ready: bool
    models: dict[str, ModelState]


@closed
class Batching(TypedDict):
    """How a model's requests are batched and bounded; ``buckets`` are the padded batch sizes (none on a CPU)."""

    max_batch: int
    max_delay_ms: float
    queue_size: int
    workers: int
    timeout_ms: float
    buckets: NotRequired[list[int]]


@closed
class Variant(TypedDict):
    """A lower-precision artifact of the entry and the accuracy guard's verdict on it."""

    precision: str
    file: str
    status: str
    reason: str
    measures: dict[str, float | None]
    measured_on: dict[str, Any]


@closed
class Served(TypedDict):
    """The precision served, asked for and chosen, and why; the guard's figures when a variant is served."""

    requested: str
    served: str
    file: str
    reason: str
    status: NotRequired[str]
    measures: NotRequired[dict[str, float | None]]
    measured_on: NotRequired[dict[str, Any]]
    checks: NotRequired[dict[str, Any]]


@closed
class ModelDescription(TypedDict):
    """A model of the store: its manifest's facts, its state and how it runs."""

    name: str
    version: str
    task: Task
    state: ModelState
    class_names: list[str]
    activation: Activation
    kind: Literal["multi-label classifier", "single-label classifier", "segmenter"]
    threshold: float | None
    threshold_source: str  # how a trainer chose the threshold on its validation split; empty where it is the preset's
    input: dict[str, Any]  # the manifest's input block: tensor name, size, mean and std
    output: dict[str, Any]  # the manifest's output block: tensor name, kind, activation
    architecture: dict[str, Any]
    precision: str
    files: list[str]
    variants: list[Variant]
    alternates: list[str]
    version_policy: dict[str, Any]
    loaded_at: NotRequired[float]  # Unix time of the last (re)load
    last_load_error: NotRequired[str]
    backend: str
    provider: str | None
    providers: list[str]
    batching: Batching
    served: NotRequired[Served]
    device_prepare: NotRequired[str | None]
    error: NotRequired[str]


@closed
class BrokenModel(TypedDict):
    """A model whose manifest could not be read: its state and why."""

    name: str
    state: ModelState
    error: NotRequired[str]


@closed
class Defaults(TypedDict):
    """The model each task's routes use when none is named."""

    classification: str | None
    segmentation: str | None


@closed
class ModelsResponse(TypedDict):
    """Every served model, the default of each task, and the server's settings (the API key left out)."""

    models: list[ModelDescription | BrokenModel]
    defaults: Defaults
    settings: dict[str, Any]
