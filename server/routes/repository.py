"""Triton's model repository extension under ``/v2/repository``: index, load and unload, behind the API key.

``tritonclient.http``'s ``get_model_repository_index``, ``load_model`` and ``unload_model`` work against it.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request

from server.dependencies import require_api_key
from server.errors import ApiError
from server.repository import ModelRepository, load_parameters
from server.responses import JSONResponse
from server.routes.examples import REPOSITORY_INDEX
from server.shapes.kserve import RepositoryLoaded, RepositoryRow, RepositoryUnloaded
from server.shapes.schema import json_content
from server.uploads import read_body

router = APIRouter(prefix="/v2/repository", tags=["model-repository"], dependencies=[Depends(require_api_key)])
ModelName = Path(..., description="a model in the store", examples=["demo-classifier"])


async def get_repository(request: Request) -> ModelRepository:
    """This app's model repository."""
    return request.app.state.repository


RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]


async def json_body(request: Request) -> Any:
    """The request's JSON body; None when it is empty; 400 when it is not JSON."""
    body = await read_body(request)
    if not body.strip():
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc}") from None


@router.post("/index", summary="Every model in the store, with its state",
             responses={200: json_content(list[RepositoryRow], example=REPOSITORY_INDEX)})
async def index(request: Request, repository: RepositoryDep) -> JSONResponse:
    """Triton's index: name, version, state (READY, LOADING, UNAVAILABLE) and reason; ``{"ready": true}`` lists
    only the ready ones."""
    body = await json_body(request)
    ready = body.get("ready", False) if isinstance(body, dict) else False
    if not isinstance(ready, bool):
        raise ApiError(400, "bad_request", "'ready' must be true or false")
    return JSONResponse(repository.index(ready))


@router.post("/models/{model}/load", summary="Load or reload a model from the store, switching when it is warm",
             responses={200: json_content(RepositoryLoaded)})
async def load(request: Request, repository: RepositoryDep, model: str = ModelName) -> JSONResponse:
    """Read the entry again and serve it once warm; the version served now answers until then, and keeps serving
    if the new one fails (400 ``load_failed`` with the reason). ``{"parameters": {"version": "2"}}`` pins a
    version."""
    parameters = load_parameters(await json_body(request))
    manifest = await repository.load(model, parameters.get("version"))
    return JSONResponse({"name": model, "version": manifest.version, "state": "READY"})


@router.post("/models/{model}/unload", summary="Stop serving a model and free its memory",
             responses={200: json_content(RepositoryUnloaded)})
async def unload(request: Request, repository: RepositoryDep, model: str = ModelName) -> JSONResponse:
    """New requests get 404 at once; those in flight finish; then its sessions are closed."""
    load_parameters(await json_body(request))
    await repository.unload(model)
    return JSONResponse({"name": model, "state": "UNAVAILABLE"})
