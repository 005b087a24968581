"""Build the FastAPI app: one settings object, one model registry, one router per resource."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from model_store.manifest import Manifest
from server.banner import banner
from server.dependencies import ServerContext
from server.errors import register_error_handlers
from server.grpc_server import start_grpc, stop_grpc
from server.middleware import RequestLimitsMiddleware, RequestLogMiddleware
from server.prometheus import ServerMetrics
from server.registry import ModelRegistry, read_store
from server.repository import ModelRepository
from server.responses import JSONResponse
from server.routes import evaluations, page, predict, robustness, segment, status, v2
from server.routes import repository as model_repository
from server.settings import Settings
from server.tracing import Tracing

log = logging.getLogger("server")
DOCS_STATIC_PATH = "/docs-static"  # Swagger UI's and ReDoc's own files, served here instead of from a CDN

DESCRIPTION = """Multi-label recognition (`/predict`), segmentation (`/segment`) and occlusion robustness
(`/robustness`) for models exported to the model store, with dynamic batching on ONNX Runtime, the
KServe v2 protocol under `/v2`, and Prometheus metrics at `/metrics`. Every error is
`{"error": code, "detail": text}`."""


def create_app(settings: Settings, manifests: dict[str, Manifest] | None = None,
               show_banner: bool = False, registry: ModelRegistry | None = None,
               tracing: Tracing | None = None) -> FastAPI:
    """The app for these settings and manifests (default: the store's, read and verified now); models load and
    warm after start-up. ``registry`` replaces the one built here (an HTTP worker's, whose models run in the
    inference process); ``tracing`` the tracer built from the settings (shut down with the app)."""
    tracing = tracing or Tracing.from_settings(settings)
    metrics = ServerMetrics()
    manifests, failures = read_store(settings) if manifests is None else (manifests, {})
    registry = registry or ModelRegistry(manifests, settings, metrics, failures)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def load() -> None:
            await registry.load()
            if registry.ready:
                log.info("all models ready")
            if show_banner:
                providers = {name: r.backend.provider for name, r in registry.runners.items()}
                print(banner(settings, registry.manifests, providers), flush=True)

        grpc_server = await start_grpc(app.state.context, repository, tracing) if settings.grpc_port else None
        loading = asyncio.create_task(load(), name="load-models")
        watching = asyncio.create_task(repository.watch(), name="watch-store") if settings.watch else None
        try:
            yield
        finally:
            if grpc_server is not None:
                await stop_grpc(grpc_server)
            for task in (loading, watching):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            app.state.context.evaluations.close()
            await registry.close()
            decode_pool.shutdown(wait=False, cancel_futures=True)
            tracing.shutdown()  # flushes the spans still buffered

    app = FastAPIOffline(title="occlusion-serve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                         default_response_class=JSONResponse, static_url=DOCS_STATIC_PATH)
    decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
    app.state.context = ServerContext(settings, registry, metrics, decode_pool)
    app.state.tracing = tracing
    app.state.repository = repository = ModelRepository(registry, settings, registry.reloadable)
    register_error_handlers(app)
    for router in (page.router, status.router, status.protected, predict.router, segment.router, robustness.router,
                   evaluations.router, v2.router, v2.models, model_repository.router):
        app.include_router(router)
    app.mount(page.STATIC_PATH, page.static_files(), name="static")  # the web page's files
    app.add_middleware(RequestLimitsMiddleware, max_bytes=settings.max_body_bytes,
                       max_concurrent=settings.max_concurrent, api_key=settings.api_key,
                       budget=app.state.context.budget, read_timeout_s=settings.read_timeout_s,
                       hosts=settings.host_patterns)
    # outermost: sees every response, 413s included
    app.add_middleware(RequestLogMiddleware, metrics=metrics, tracing=tracing)
    return app
