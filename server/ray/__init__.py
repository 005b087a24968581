"""The server on Ray Serve: the same FastAPI app (``create_app``) as a Ray Serve ingress deployment, one per replica.

Run it:

* anywhere, on a local Ray started on this machine (no dashboard, HTTP on 127.0.0.1, Ctrl-C stops everything)::

      python -m server.ray --config deploy/ray/serve.yaml --replicas 2 --num-cpus 1 --num-gpus 0 --store model_store

  ``--replicas``, ``--num-gpus``, ``--port``, ``--store`` and ``--arg KEY=VALUE`` override the YAML, so the file
  written for a GPU cluster (autoscaling, one GPU per replica) also serves on a laptop; ``--address`` joins a
  running cluster instead (``python -m server.ray --help``).
* on a Ray cluster, with Ray's own tools: ``serve run deploy/ray/serve.yaml`` or ``serve deploy deploy/ray/serve.yaml``.

The YAML's ``import_path`` is ``server.ray:build_app`` and its ``args`` are the server's settings, named as the
fields of ``Settings`` (``store``, ``models``, ``max_batch``...; ``SERVER_*`` variables apply as for
``python -m server``). Each replica builds its own app, hence its own ModelRegistry and ModelRunners (the class the
plain server runs): routes, error bodies and limits are the plain server's, counted per replica. Unset
``intra_op_threads`` and ``decode_threads`` follow the replica's ``num_cpus`` rather than every core of the node.

Model loading: Ray Serve 2.60 runs the app's lifespan in each replica (uvicorn's ``LifespanOn``) once the app is
built. The plain server's lifespan loads models in the background so that ``/ready`` can answer 503 meanwhile; Ray
has no readiness probe and routes to a replica as soon as its start-up completes, so here the lifespan's start-up
also waits until every model is loaded or has failed. ``serve.run`` returns, and a replica takes traffic, only then.

Each answer carries the replica's id in an ``X-Replica-Id`` header, and ``/metrics`` adds
``replica_info{app=...,deployment=...,replica=...} 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI
from prometheus_client import Gauge
from ray import serve
from ray.serve import Application
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.logs import configure_logging
from server.main import create_app
from server.registry import LOADING, ModelRegistry
from server.settings import OPTIONS, Settings, settings_from

REPLICA_HEADER = "X-Replica-Id"
DEPLOYMENT = "OcclusionServe"
# Above the server's default --queue-size (64): a replica's own queue, not Ray's proxy, decides when to shed (503).
MAX_ONGOING_REQUESTS = 128
FIELDS = {name for name, _, _ in OPTIONS.values()}


def settings_from_args(args: Mapping[str, Any]) -> Settings:
    """Settings from the YAML's ``args`` (Settings field names; dashes allowed), then ``SERVER_*`` variables."""
    values: dict[str, str] = {}
    for key, value in args.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise ValueError(f"application arg {key!r} is not a server setting; known: {', '.join(sorted(FIELDS))}")
        if value is not None:
            values[name] = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return settings_from(argparse.Namespace(**values))


def replica_settings(args: Mapping[str, Any]) -> Settings:
    """This replica's settings: unset runtime and decode threads follow the CPUs Ray reserved for it."""
    settings = settings_from_args(args)
    cpus = math.ceil(ray.get_runtime_context().get_assigned_resources().get("CPU", 0))
    if cpus < 1:
        return settings
    return dataclasses.replace(settings, intra_op_threads=settings.intra_op_threads or max(1, cpus // settings.workers),
                               decode_threads=settings.decode_threads or cpus)


class ReplicaIdMiddleware:
    """Adds ``X-Replica-Id`` to every HTTP answer."""

    def __init__(self, app: ASGIApp, replica_id: str) -> None:
        self.app, self.header = app, (REPLICA_HEADER.lower().encode(), replica_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; tag the response's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, tagged)


async def models_settled(registry: ModelRegistry, poll_seconds: float = 0.05) -> None:
    """Return once no model is loading any more (each is ready or failed)."""
    while LOADING in registry.states.values():
        await asyncio.sleep(poll_seconds)


def replica_app(settings: Settings, replica_id: str, app_name: str = "", deployment: str = DEPLOYMENT) -> FastAPI:
    """The plain server's app, plus the replica id (header and gauge) and a start-up that waits for the models."""
    app = create_app(settings)
    context = app.state.context
    gauge = Gauge("replica_info", "The Ray Serve replica that answered this scrape (always 1)",
                  ["app", "deployment", "replica"], registry=context.metrics.registry)
    gauge.labels(app=app_name, deployment=deployment, replica=replica_id).set(1)
    app.add_middleware(ReplicaIdMiddleware, replica_id=replica_id)  # outermost: 413s and 503s carry it too
    lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def loaded_lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            await models_settled(context.registry)
            yield state

    app.router.lifespan_context = loaded_lifespan
    return app


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=MAX_ONGOING_REQUESTS)
@serve.ingress()
class OcclusionServe:
    """One replica: its own app built from the application's args, with its own registry and runners."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Called by Ray Serve in the replica after ``__init__``; Ray then runs the app's lifespan start-up."""
        settings = replica_settings(self.args)
        configure_logging(settings.log_level)
        context = serve.get_replica_context()
        return replica_app(settings, context.replica_tag, context.app_name, context.deployment)


def absolute_paths(args: Mapping[str, Any]) -> dict[str, Any]:
    """The args with ``store`` and ``data_dir`` made absolute here, where the YAML's relative paths mean something."""
    out = dict(args)
    for key in ("store", "data_dir", "data-dir"):
        if out.get(key) is not None:
            out[key] = str(Path(str(out[key])).expanduser().resolve())
    return out


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application for the YAML's ``args`` (``import_path: server.ray:build_app``); bad args raise here."""
    return application(args)


def application(args: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> Application:
    """``build_app`` with deployment options (``num_replicas``, ``ray_actor_options``...) applied in code."""
    settings_from_args(args)  # fail before any replica starts
    deployment = OcclusionServe.options(**options) if options else OcclusionServe
    return deployment.bind(absolute_paths(args))
