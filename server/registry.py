"""The served models: manifests read (and verified) at start, runners loaded and warmed in the background."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from model_store.manifest import Manifest, ManifestError, Precision, list_entries, load_manifest
from server.allocator import trim_malloc
from server.domain_errors import InvalidInput, InvalidParameter, ModelBroken, NotFound, Unavailable
from server.precision import FP32_FILE, PrecisionError, Selection, settle
from server.prometheus import ServerMetrics
from server.recheck import recheck
from server.runner import ModelRunner, first_provider, load_backend, select_artifact
from server.runtimes import Backend
from server.settings import Settings

log = logging.getLogger("server.registry")

LOADING, READY, FAILED, UNHEALTHY, UNLOADED = "loading", "ready", "failed", "unhealthy", "unloaded"
LATEST = {"latest": {"num_versions": 1}}  # the default version policy: serve the store's highest version
PROBE_SECONDS = 5  # an unhealthy model lets one request through this often, to find out whether it recovered
RETIRE_GRACE_S = 0.5  # an evicted alternate keeps answering what it was given this long, and while it is busy


def _release(runner: ModelRunner) -> None:
    """Drop a stopped runner's session (its destructor runs in this thread, not on the event loop) and give its
    pages back to the system."""
    runner.backend = runner.serving = None  # the session and its arena go with the last reference
    trim_malloc()


def read_store(settings: Settings) -> tuple[dict[str, Manifest], dict[str, str]]:
    """The models to serve: their parsed manifests by name, and the selected entries that cannot be read (name ->
    why). Only the selected entries are read; their files are verified when the loader opens them. A missing
    store, an empty one, or a --models / --default-model naming no entry raise ManifestError or ValueError."""
    entries = {entry.parent.name: entry for entry in list_entries(settings.store)}
    if not entries:
        raise ManifestError(f"{settings.store}: no exported models (build some with `python -m export`)")
    if settings.models:
        unknown = [name for name in settings.models if name not in entries]
        if unknown:
            raise ValueError(f"--models names {', '.join(unknown)} not in {settings.store}; "
                             f"available: {', '.join(entries)}")
        entries = {name: entries[name] for name in settings.models}
    if settings.default_model is not None and settings.default_model not in entries:
        raise ValueError(f"--default-model {settings.default_model!r} is not served; available: {', '.join(entries)}")
    manifests, failures = {}, {}
    for name, entry in entries.items():
        try:
            manifests[name] = load_manifest(entry, verify=False)
        except ManifestError as exc:
            failures[name] = str(exc)
            log.error("model %s cannot be served: %s", name, exc)
    return manifests, failures


class ModelRegistry:
    """Name -> manifest and runner, with per-model state: loading, ready or failed."""

    reloadable = True  # models may be loaded and unloaded while serving (server.repository)

    def __init__(self, manifests: dict[str, Manifest], settings: Settings,
                 metrics: ServerMetrics | None = None, failures: dict[str, str] | None = None) -> None:
        self.manifests, self.settings, self.metrics = manifests, settings, metrics
        self.runners: dict[str, ModelRunner] = {}
        # (name, precision) loaded for comparisons, least recently used first; at most settings.max_alternates
        self.alternates: OrderedDict[tuple[str, str], ModelRunner] = OrderedDict()
        self.alternate_lock = asyncio.Lock()
        self.retiring: set[asyncio.Task] = set()  # evicted alternates finishing their last requests
        self.states = {**dict.fromkeys(manifests, LOADING), **dict.fromkeys(failures or {}, FAILED)}
        self.errors: dict[str, str] = dict(failures or {})
        self.probe_at: dict[str, float] = {}
        self.policies: dict[str, dict[str, Any]] = {}  # a model's version policy when not LATEST
        self.load_errors: dict[str, str] = {}  # why the last load of a model still served failed
        self.loaded_at: dict[str, float] = {}  # wall-clock time each served version started serving

    @property
    def ready(self) -> bool:
        """True when every model is loaded and warm (those unloaded on purpose do not count)."""
        return all(state in (READY, UNLOADED) for state in self.states.values())

    def _build(self, manifest: Manifest) -> ModelRunner:
        selection, backend = self._select(manifest)
        runner = ModelRunner(manifest, self.settings, self.metrics, on_health=self._health, selection=selection,
                             backend=backend)
        runner.warmup()
        return runner

    def _select(self, manifest: Manifest) -> tuple[Selection, Backend | None]:
        """What --precision serves, re-checked on this machine when the variant's verdict was measured on another
        one (server.recheck); the backend the check already opened for it, if any."""
        selection = select_artifact(manifest, self.settings)
        if selection.variant is None or self.settings.backend != "onnx":
            return selection, None
        opened: dict[str, Backend] = {}

        def opener(chosen: Selection):
            def open_backend() -> Backend:
                if chosen.file not in opened:
                    opened[chosen.file] = load_backend(manifest, self.settings, chosen)
                return opened[chosen.file]
            return open_backend

        fp32 = Selection(Precision.FP32, FP32_FILE, "re-check")
        check = recheck(manifest, selection.variant, first_provider(self.settings), opener(fp32), opener(selection))
        settled = settle(manifest, selection, self.settings.precision, check)
        if check.needed:
            log.info("model %s: %s variant %s (%.2f s); serving %s", manifest.name, selection.precision,
                     check.summary(), check.seconds, settled.precision)
        return settled, opened.get(settled.file)

    async def load(self) -> None:
        """Load and warm every model, one after the other, off the event loop."""
        loop = asyncio.get_running_loop()
        for name, manifest in self.manifests.items():
            try:
                runner = await loop.run_in_executor(None, self._build, manifest)
            except Exception as exc:
                self.states[name], self.errors[name] = FAILED, f"{type(exc).__name__}: {exc}"
                log.error("model %s failed to load: %s", name, self.errors[name])
                continue
            runner.start()
            self.runners[name] = runner
            self.states[name] = READY
            self.loaded_at[name] = time.time()
            log.info("model %s ready on %s", name, runner.backend.provider)

    async def replace(self, manifest: Manifest) -> None:
        """Serve ``manifest`` (a new version of a model, or a model not served yet): build and warm its runner off
        the event loop while the current one keeps answering, then switch at once. Requests that already hold the
        old runner finish on it; it is stopped and freed after them. Raises what the build raised, serving nothing
        new (the old version stays)."""
        name = manifest.name
        if name not in self.runners:
            self.states[name] = LOADING
        try:
            runner = await asyncio.get_running_loop().run_in_executor(None, self._build, manifest)
        except Exception:
            if name not in self.runners:
                self.states[name] = FAILED
            raise
        runner.start()
        old = self.runners.get(name)
        self.manifests[name], self.runners[name], self.states[name] = manifest, runner, READY
        self.loaded_at[name] = time.time()
        for key in (self.errors, self.load_errors, self.probe_at):
            key.pop(name, None)
        self._retire_model(name, old)
        log.info("model %s version %s ready on %s%s", name, manifest.version, runner.backend.provider,
                 f" (version {old.manifest.version} retired)" if old is not None else "")

    def remove(self, name: str) -> None:
        """Stop serving ``name``: new requests get 404 at once, those in flight finish, then its memory is freed."""
        old = self.runners.pop(name, None)
        self.manifests.pop(name, None)
        self.states[name] = UNLOADED
        for key in (self.errors, self.load_errors, self.probe_at, self.loaded_at):
            key.pop(name, None)
        self._retire_model(name, old)
        log.info("model %s unloaded", name)

    def _retire_model(self, name: str, served: ModelRunner | None) -> None:
        """Retire a model's served runner and every alternate loaded from it (they run the old files)."""
        old = [served] if served is not None else []
        for key in [key for key in self.alternates if key[0] == name]:
            old.append(self.alternates.pop(key))
        for runner in old:
            self._retire_later(runner)

    def _retire_later(self, runner: ModelRunner) -> None:
        task = asyncio.get_running_loop().create_task(self._retire(runner))
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)

    def _health(self, name: str, reason: str | None) -> None:
        """A runner's health changed: unhealthy with a reason, or healthy again."""
        if reason is None:
            self.states[name] = READY
            self.errors.pop(name, None)
            log.info("model %s is healthy again", name)
        else:
            self.states[name], self.errors[name] = UNHEALTHY, reason
            self.probe_at[name] = time.monotonic() + PROBE_SECONDS
            log.error("model %s is unhealthy: %s", name, reason)

    async def close(self) -> None:
        """Stop every runner."""
        for task in list(self.retiring):
            task.cancel()
        for runner in [*self.runners.values(), *self.alternates.values()]:
            await runner.stop()

    async def runner_at(self, name: str, precision: Precision) -> ModelRunner:
        """The runner of ``name`` at ``precision`` (fp32 or any variant the entry lists, accepted or rejected): the
        served one, or one loaded on first use and kept while it is among the ``max_alternates`` most recently used
        (the least recently used is evicted and closed); 422 for a precision the entry cannot run at."""
        served = self.runner(name)
        if precision == served.precision:
            return served
        key = (name, precision)
        async with self.alternate_lock:
            if key in self.alternates:
                self.alternates.move_to_end(key)
                return self.alternates[key]
            manifest = self.manifests[name]
            try:
                selection = select_artifact(manifest, self.settings, precision)
            except PrecisionError as exc:
                raise InvalidParameter("invalid_parameter", f"precision: {exc}") from None
            runner = await asyncio.get_running_loop().run_in_executor(None, self._build_alternate, manifest, selection)
            runner.start()
            self.alternates[key] = runner
            log.info("model %s also loaded at %s for comparisons", name, precision)
            while len(self.alternates) > self.settings.max_alternates:
                (old_name, old_precision), old = self.alternates.popitem(last=False)
                log.info("model %s at %s evicted (--max-alternates %d)", old_name, old_precision,
                         self.settings.max_alternates)
                self._retire_later(old)
            return runner

    def holds(self, runner: ModelRunner) -> bool:
        """True while ``runner`` is served or kept as an alternate (an evicted one is not)."""
        return any(r is runner for r in (*self.runners.values(), *self.alternates.values()))

    async def _retire(self, runner: ModelRunner) -> None:
        """Stop an evicted alternate once it has answered what it was given (at most the request timeout), so that
        its session's memory is freed."""
        await asyncio.sleep(RETIRE_GRACE_S)
        deadline = time.monotonic() + self.settings.timeout_ms / 1000.0
        while (runner.depth or (runner.batcher is not None and runner.batcher.running)) and \
                time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await runner.stop()
        await asyncio.get_running_loop().run_in_executor(None, _release, runner)

    def _build_alternate(self, manifest: Manifest, selection: Selection) -> ModelRunner:
        runner = ModelRunner(manifest, self.settings, self.metrics, selection=selection)
        runner.warmup(runs=1)
        return runner

    def default_for(self, tasks: tuple[str, ...]) -> str | None:
        """The model used when a request names none: --default-model if its task fits, else the first that fits."""
        default = self.settings.default_model
        if default in self.manifests and self.manifests[default].task in tasks:
            return default
        return next((name for name, m in self.manifests.items() if m.task in tasks), None)

    def _failed(self, name: str) -> ModelBroken:
        return ModelBroken("model_failed", f"model {name!r} failed to load: {self.errors[name]}")

    def manifest(self, name: str) -> Manifest:
        """The manifest of a served model, or 404 listing the served ones (500 for an entry that failed)."""
        if name not in self.manifests and self.states.get(name) == FAILED:  # its manifest could not be read
            raise self._failed(name)
        if self.states.get(name) == UNLOADED:
            raise NotFound("model_unloaded", f"model {name!r} was unloaded; POST "
                           f"/v2/repository/models/{name}/load serves it again")
        if name not in self.manifests:
            raise NotFound("unknown_model",
                           f"model {name!r} is not served; available: {', '.join(self.manifests)}")
        return self.manifests[name]

    def runner(self, name: str) -> ModelRunner:
        """The runner of a served model; 503 while it loads, 500 if it failed."""
        self.manifest(name)
        state = self.states[name]
        if state == LOADING:
            raise Unavailable("model_loading", f"model {name!r} is still loading; retry shortly",
                           retry_after=1)
        if state == FAILED:
            raise self._failed(name)
        if state == UNHEALTHY:
            now = time.monotonic()
            if now < self.probe_at.get(name, 0.0):
                raise Unavailable("model_unhealthy", f"model {name!r} is unhealthy: {self.errors[name]}; retry "
                               "later", retry_after=PROBE_SECONDS)
            self.probe_at[name] = now + PROBE_SECONDS  # this request is the probe
        return self.runners[name]

    def resolve(self, name: str | None, tasks: tuple[str, ...], endpoint: str) -> ModelRunner:
        """The runner for ``model=`` (or the default), checking that its task is one the endpoint serves."""
        if name is None:
            name = self.default_for(tasks)
            if name is None:
                raise NotFound("no_model_for_task", f"{endpoint} serves {' or '.join(tasks)} models; "
                               f"none is served (available: {', '.join(self.manifests)})")
        task = self.manifest(name).task
        if task not in tasks:
            fitting = [n for n, m in self.manifests.items() if m.task in tasks]
            raise InvalidInput("wrong_task", f"model {name!r} is a {task} model; {endpoint} serves "
                           f"{' or '.join(tasks)} models ({', '.join(fitting) or 'none served'})")
        return self.runner(name)

    @property
    def names(self) -> list[str]:
        """Every selected model, those that failed to load included."""
        return list(self.states)

    def describe(self, name: str) -> dict[str, Any]:
        """One model's manifest facts, state and runtime, for /models."""
        if name not in self.manifests:
            out = {"name": name, "state": self.states[name]}
            return {**out, "error": self.errors[name]} if name in self.errors else out
        m = self.manifests[name]
        document = m.to_json()
        out: dict[str, Any] = {
            "name": m.name, "version": m.version, "task": m.task, "state": self.states[name],
            "class_names": m.class_names, "activation": m.activation,
            "kind": m.kind.value, "threshold": m.kind.threshold(m.threshold),
            "threshold_source": m.threshold_source if m.kind.thresholded else "",
            "input": document["input"], "output": document["output"],
            "architecture": m.preset.summary(), "precision": m.precision,
            "files": sorted(m.files),
            "variants": [{"precision": v.precision, "file": v.file, "status": v.status, "reason": v.reason,
                          "measures": dict(v.measures), "measured_on": dict(v.machine)} for v in m.variants],
            "alternates": [precision for (model, precision) in self.alternates if model == name],
            "version_policy": self.policies.get(name, LATEST),
        }
        if name in self.loaded_at:
            out["loaded_at"] = self.loaded_at[name]
        if name in self.load_errors:
            out["last_load_error"] = self.load_errors[name]
        if name in self.runners:
            out.update(self.runners[name].describe())
        else:
            out.update({"backend": self.settings.backend, "provider": None, "providers": []})
        out.setdefault("batching", self.settings.batching())
        if name in self.errors:
            out["error"] = self.errors[name]
        return out
