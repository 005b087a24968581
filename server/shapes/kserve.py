"""The JSON answers of the KServe v2 protocol under /v2, and of Triton's model repository extension."""

from __future__ import annotations

from typing import Literal, NotRequired

from typing_extensions import TypedDict

from common.kinds import Activation, Task
from server.shapes.schema import closed


@closed
class V2Live(TypedDict):
    """The process answers."""

    live: bool


@closed
class V2ServerMetadata(TypedDict):
    """The server's name, protocol version and extensions."""

    name: str
    version: str
    extensions: list[str]


@closed
class V2Tensor(TypedDict):
    """A tensor's name, datatype and shape (-1: any size)."""

    name: str
    datatype: Literal["FP32"]
    shape: list[int]


@closed
class V2Parameters(TypedDict):
    """How to read the output: it is raw logits; apply the activation."""

    task: Task
    activation: Activation
    output_kind: str


@closed
class V2ModelMetadata(TypedDict):
    """A model's input and output tensors."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]
    parameters: V2Parameters


@closed
class V2ModelReady(TypedDict):
    """Whether one model is warm (200) or still loading (503)."""

    name: str
    ready: bool


@closed
class V2OutputTensor(TypedDict):
    """The output tensor, its data flat in row-major order."""

    name: str
    datatype: Literal["FP32"]
    shape: list[int]
    data: list[float]


@closed
class V2InferResponse(TypedDict):
    """The raw logits of a v2 inference request; ``id`` echoes the request's."""

    model_name: str
    model_version: str
    id: NotRequired[str]
    outputs: list[V2OutputTensor]


@closed
class RepositoryRow(TypedDict):
    """A model of the store in Triton's words: READY, LOADING or UNAVAILABLE, and why."""

    name: str
    version: str
    state: Literal["READY", "LOADING", "UNAVAILABLE"]
    reason: str


@closed
class RepositoryLoaded(TypedDict):
    """A model loaded (or reloaded) and serving."""

    name: str
    version: str
    state: Literal["READY"]


@closed
class RepositoryUnloaded(TypedDict):
    """A model no longer served."""

    name: str
    state: Literal["UNAVAILABLE"]
