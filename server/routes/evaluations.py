"""/evaluations: start, watch, cancel and read dataset-level robustness evaluations run as background jobs."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Path
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from common.datasets import AnnotationTooLarge
from robustness.corruptions import parse_corruptions, parse_severities
from robustness.evaluation import EvaluationCancelled, EvaluationConfig, EvaluationError, check_compatible
from robustness.evaluation.conditions import parse_occlusion
from server.dependencies import ContextDep, require_api_key
from server.errors import ApiError
from server.evaluations import EvaluationJob, EvaluationJobs, ServedModel, TooManyEvaluationsError, load_eval_set
from server.middleware import MAX_MODEL_NAME_LENGTH
from server.responses import JSONResponse
from server.routes.examples import ERRORS

router = APIRouter(tags=["evaluations"], dependencies=[Depends(require_api_key)])
JobId = Path(..., min_length=1, max_length=32, pattern=r"^[0-9a-f]+$", description="the job id POST returned")
MAX_BOOTSTRAP = 2000


class EvaluationRequest(BaseModel):
    """What to evaluate: a served model (and optionally a second one on the same perturbed images) on a dataset."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1, max_length=MAX_MODEL_NAME_LENGTH, description="a served model")
    compare: str | None = Field(None, min_length=1, max_length=MAX_MODEL_NAME_LENGTH,
                                description="a second served model of the same task and classes: paired differences")
    data: str = Field(..., min_length=1, max_length=256,
                      description="a dataset folder (or annotation file) relative to the server's --data-dir")
    occlusion: str = Field("all", max_length=64, description="hole-ratio buckets: all | high | none | b1,b3,...")
    corruptions: str = Field("all", max_length=512, description="all | none | comma-separated corruption names")
    severities: str = Field("1-5", max_length=32, description="1-5, 3 or 1,3,5")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    limit: int | None = Field(None, ge=1, description="the first N test images (at most --max-eval-images)")
    bootstrap: int = Field(200, ge=0, le=MAX_BOOTSTRAP, description="bootstrap resamples for the 95% CIs")
    checks: bool = Field(True, description="run the invariance and direction checks (needs ground-truth maps)")


def _config(body: EvaluationRequest, limit: int) -> EvaluationConfig:
    try:
        config = EvaluationConfig(occlusion=parse_occlusion(body.occlusion),
                                  corruptions=parse_corruptions(body.corruptions),
                                  severities=parse_severities(body.severities), seed=body.seed,
                                  bootstrap=body.bootstrap, limit=limit, checks=body.checks)
        config.validate()
        return config
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None


@router.post("/evaluations", status_code=202, summary="Start a dataset-level robustness evaluation",
             description="Runs `python -m robustness evaluate` on served models as a background job: the clean test "
                         "split, one seeded irregular mask per image per hole-ratio bucket, and the ImageNet-C "
                         "corruptions at each severity; metrics with bootstrap 95% CIs, P / mPC / rPC, and with "
                         "`compare` paired differences on identical perturbed images. One job runs at a time; "
                         "poll `GET /evaluations/{id}`, stop it with `DELETE`. A full queue answers 429 before "
                         "the dataset is read; an annotation file over `--max-annotation-bytes` answers 413; a "
                         "job's work is limited to `--eval-timeout-s`.\n\n"
                         "`curl -X POST localhost:8000/evaluations -H 'content-type: application/json' "
                         "-d '{\"model\": \"demo-classifier\", \"data\": \"classification\", \"limit\": 50, "
                         "\"corruptions\": \"fog,snow\"}'`",
             responses={**ERRORS, 429: {"description": "too many evaluations queued"}})
async def start(body: EvaluationRequest, ctx: ContextDep) -> JSONResponse:
    """Validate the request, take a place in the queue, then list the dataset and queue the job."""
    settings, jobs = ctx.settings, ctx.evaluations
    if settings.http_workers > 1:  # a job and its report live in one process; the next GET may reach another
        raise ApiError(409, "evaluations_need_one_process", f"this server runs {settings.http_workers} HTTP "
                       "workers, and an evaluation's job and report live in one of them; run evaluations on a "
                       "server started with --http-workers 1, or with `python -m robustness evaluate`")
    names = [body.model] + ([body.compare] if body.compare else [])
    runners = [ctx.registry.runner(name) for name in names]
    manifest = runners[0].manifest
    for other in runners[1:]:
        if (other.manifest.task, other.manifest.class_names) != (manifest.task, manifest.class_names):
            raise ApiError(422, "invalid_parameter", f"compare: {other.name} ({other.manifest.task}, "
                           f"{other.manifest.num_classes} classes) does not answer the same question as "
                           f"{manifest.name} ({manifest.task}, {manifest.num_classes} classes)")
    limit = min(body.limit or settings.max_eval_images, settings.max_eval_images)
    config = _config(body, limit)
    job = EvaluationJob(models=tuple(names), data=body.data, config=config)
    try:
        jobs.open(job)  # before a byte of the dataset is read: a flood on a full queue costs nothing
    except TooManyEvaluationsError as exc:
        raise ApiError(429, "too_many_evaluations", str(exc), headers={"Retry-After": "10"}) from None
    try:
        eval_set = await asyncio.get_running_loop().run_in_executor(
            jobs.loader, load_eval_set, settings.data_dir, body.data, manifest.task, limit,
            settings.max_annotation_bytes, job.checkpoint)
        models = [ServedModel(runner, asyncio.get_running_loop(), job.stop) for runner in runners]
        check_compatible(models, eval_set, config)
    except EvaluationCancelled:  # cancelled, or out of time, while it loaded: the job says which
        pass
    except BaseException as exc:
        jobs.discard(job)
        raise _dataset_error(exc, jobs) from None
    else:
        jobs.submit(job, models, eval_set)
    return JSONResponse(job.describe(with_report=False), status_code=202,
                        headers={"Location": f"/evaluations/{job.id}"})


def _dataset_error(exc: BaseException, jobs: EvaluationJobs) -> BaseException:
    """The client's error for a dataset that could not be loaded, naming paths relative to --data-dir."""
    if isinstance(exc, AnnotationTooLarge):
        return ApiError(413, "annotation_too_large", jobs.relative(f"data: {exc} (--max-annotation-bytes)"))
    if isinstance(exc, FileNotFoundError):
        return ApiError(404, "dataset_not_found", jobs.relative(str(exc)))
    if isinstance(exc, EvaluationError):
        return ApiError(422, "invalid_parameter", jobs.relative(str(exc)))
    if isinstance(exc, ValueError):
        return ApiError(422, "invalid_parameter", jobs.relative(f"data: {exc}"))
    return exc


def _job(ctx: ContextDep, job_id: str) -> EvaluationJob:
    job = ctx.evaluations.get(job_id)
    if job is None:
        raise ApiError(404, "evaluation_not_found", f"no evaluation {job_id!r} (finished jobs are forgotten after "
                       f"{ctx.settings.max_eval_history} newer ones)")
    return job


@router.get("/evaluations", summary="Every evaluation the server remembers, newest first", responses=ERRORS)
async def list_jobs(ctx: ContextDep) -> JSONResponse:
    """Status and progress of each job, without the reports."""
    return JSONResponse({"evaluations": [job.describe(with_report=False) for job in ctx.evaluations.list()]})


@router.get("/evaluations/{job_id}", summary="One evaluation: status, progress, and its report when done",
            responses=ERRORS)
async def get_job(ctx: ContextDep, job_id: str = JobId) -> JSONResponse:
    """The job, with its report once done (or its error once failed)."""
    return JSONResponse(_job(ctx, job_id).describe())


@router.delete("/evaluations/{job_id}", summary="Cancel an evaluation", responses=ERRORS)
async def cancel_job(ctx: ContextDep, job_id: str = JobId) -> JSONResponse:
    """A queued job never starts; a running one stops after its current image. Finished jobs are unchanged."""
    _job(ctx, job_id)
    return JSONResponse(ctx.evaluations.cancel(job_id).describe(with_report=False))


@router.get("/evaluations/{job_id}/files/{name}", summary="A file an evaluation wrote: report.md, report.json, plots",
            responses=ERRORS)
async def job_file(ctx: ContextDep, job_id: str = JobId,
                   name: str = Path(..., max_length=128, description="a name from the job's links.files")
                   ) -> FileResponse:
    """Only the files the job itself listed are served."""
    job = _job(ctx, job_id)
    if name not in job.files:
        raise ApiError(404, "file_not_found", f"evaluation {job_id} has no file {name!r}; it has "
                       f"{', '.join(sorted(job.files)) or 'none yet'}")
    return FileResponse(job.files[name])
