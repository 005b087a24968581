"""FastAPI dependencies: the settings, the model registry, the metrics, the decode pool and the in-flight
budget of this app.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, which
costs a thread hop per dependency per request for what is only an attribute lookup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import Annotated

from fastapi import Depends, Request

from model_store.manifest import Precision
from server.admission import InflightBudget, close_request_ticket
from server.errors import api_key_error
from server.evaluations import EvaluationJobs
from server.pipeline import RequestPipeline
from server.prometheus import ServerMetrics
from server.registry import ModelRegistry
from server.runner import ModelRunner
from server.settings import Settings


class ServerContext:
    """What an inference route needs, injected as one dependency (each dependency costs per request): the settings,
    the served models, the metrics, the decode pool, one in-flight budget for every model's pipeline (``/metrics``
    reads it at each scrape), and the evaluation jobs."""

    def __init__(self, settings: Settings, registry: ModelRegistry, metrics: ServerMetrics,
                 decode_pool: Executor) -> None:
        self.settings, self.registry, self.metrics, self.decode_pool = settings, registry, metrics, decode_pool
        self.budget = InflightBudget(settings.max_inflight_bytes, settings.max_inflight_pixels)
        self.evaluations = EvaluationJobs(settings.max_eval_queue, settings.max_eval_history, settings.eval_timeout_s,
                                          settings.data_dir)
        metrics.watch_inflight(self.budget)

    def pipeline(self, model: str | None, tasks: tuple[str, ...], endpoint: str) -> RequestPipeline:
        """The request pipeline of ``model=`` (or the endpoint's default model), checking its task."""
        return self._pipeline_of(self.registry.resolve(model, tasks, endpoint))

    def pipeline_by_name(self, name: str) -> RequestPipeline:
        """The request pipeline of a served model, by name, whatever its task."""
        return self._pipeline_of(self.registry.runner(name))

    async def pipeline_at(self, pipeline: RequestPipeline, precision: Precision | None) -> RequestPipeline:
        """The same model's pipeline at another precision (fp32 or a listed variant); itself for None."""
        if precision is None:
            return pipeline
        return self._pipeline_of(await self.registry.runner_at(pipeline.name, precision))

    def _pipeline_of(self, runner: ModelRunner) -> RequestPipeline:
        """The runner's request pipeline, made on first use and kept on the runner: the registry's runners (served
        and alternates) are the one cache of (model, precision), and a retired runner takes its pipeline along."""
        if runner.pipeline is None:
            runner.pipeline = RequestPipeline(runner, self.settings, self.metrics, self.decode_pool, self.budget)
        return runner.pipeline


async def get_context(request: Request) -> AsyncIterator[ServerContext]:
    """This app's server context; when the request ends (answered, failed or abandoned), whatever it still
    holds of the in-flight budget is given back."""
    try:
        yield request.app.state.context
    finally:
        close_request_ticket(request.scope)


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.context.settings


async def get_registry(request: Request) -> ModelRegistry:
    """The served models."""
    return request.app.state.context.registry


async def get_metrics(request: Request) -> ServerMetrics:
    """This app's Prometheus metrics."""
    return request.app.state.context.metrics


ContextDep = Annotated[ServerContext, Depends(get_context)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[ServerMetrics, Depends(get_metrics)]


async def require_api_key(request: Request) -> None:
    """With --api-key set, demand ``Authorization: Bearer <key>``; 401 otherwise (the middleware has already
    refused such requests before their body was read; this keeps the rule on the routes themselves)."""
    settings: Settings = request.app.state.context.settings
    error = api_key_error(settings.api_key, request.headers.get("authorization", ""))
    if error is not None:
        raise error
