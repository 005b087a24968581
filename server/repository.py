"""The model repository, as Triton's repository extension exposes it: index, load and unload store entries while
serving, and (``--watch``) reload the entries whose files change.

A load reads the entry's manifest from the store again, builds and warms the new runner while the current version
keeps answering, then switches at once (``ModelRegistry.replace``): requests in flight finish on the old version,
which is then stopped and freed. A load that fails (a corrupt file, a manifest that no longer reads) leaves the
old version serving and says why, in the answer and in ``/models`` (``last_load_error``).

Version policy: a store entry may hold several versions (``store/<model>/<version>/``). By default a model
serves the highest (``{"latest": {"num_versions": 1}}``); a load naming a version (parameter ``version``) pins it
(``{"specific": {"versions": [...]}}``) until a load with ``"version": "latest"``. ``--watch`` follows the
policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from model_store.manifest import Manifest, ManifestError, entry_dir, list_entries, load_manifest, validate_name
from server.domain_errors import Conflict, InvalidInput, LoadFailed, NotFound
from server.registry import FAILED, LATEST, LOADING, READY, UNHEALTHY, UNLOADED, ModelRegistry
from server.settings import Settings

log = logging.getLogger("server.repository")
TRITON_STATES = {READY: "READY", UNHEALTHY: "READY", LOADING: "LOADING", FAILED: "UNAVAILABLE",
                 UNLOADED: "UNAVAILABLE"}
PARAMETERS = ("version",)

Signature = tuple[tuple[str, int, int], ...]


def signature(folder: Path) -> Signature:
    """What the watcher compares: every file under an entry's version folder, with its size and mtime."""
    try:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return tuple((str(p.relative_to(folder)), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    except OSError:  # removed while listed
        return ()


def load_parameters(body: Any) -> dict[str, Any]:
    """The parameters of a load request's JSON body (``{"parameters": {"version": "2"}}``); 400 for what this
    server does not take (Triton's ``config`` and ``file:`` overrides: models come only from the store)."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidInput("bad_request", "the body must be a JSON object such as {\"parameters\": {\"version\": "
                       "\"2\"}}, or empty")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("bad_request", "'parameters' must be a JSON object")
    unknown = sorted(key for key in parameters if key not in PARAMETERS and key != "unload_dependents")
    if unknown:
        raise InvalidInput("bad_request", f"parameter {unknown[0][:40]!r} is not supported: models load only from "
                       f"the store (parameters: {', '.join(PARAMETERS)})")
    version = parameters.get("version")
    if version is not None and not isinstance(version, str | int):
        raise InvalidInput("bad_request", "'parameters.version' must be a version name such as \"2\"")
    return {"version": None if version is None else str(version)}


class ModelRepository:
    """Index, load and unload the store's entries for one registry."""

    def __init__(self, registry: ModelRegistry, settings: Settings, reloadable: bool = True) -> None:
        self.registry, self.settings, self.reloadable = registry, settings, reloadable
        self.locks: dict[str, asyncio.Lock] = {}
        self.seen: dict[str, Signature] = {}  # the files each served (or failed) version was loaded from

    def _store_versions(self, name: str) -> list[str]:
        folder = self.settings.store / name
        return sorted(p.name for p in folder.iterdir() if (p / "manifest.json").is_file()) if folder.is_dir() else []

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every entry of the store and every model the registry knows, with Triton's state words."""
        try:
            names = {entry.parent.name for entry in list_entries(self.settings.store)}
        except ManifestError:
            names = set()
        rows = []
        for name in sorted(names | set(self.registry.states)):
            state = self.registry.states.get(name)
            manifest = self.registry.manifests.get(name)
            row: dict[str, Any] = {"name": name, "version": manifest.version if manifest else "",
                                   "state": TRITON_STATES.get(state, "UNAVAILABLE") if state else "UNAVAILABLE",
                                   "reason": self.registry.errors.get(name, "") if state != UNLOADED else "unloaded"}
            if state is None:
                row["reason"] = "in the store, not loaded"
            if not ready_only or row["state"] == "READY":
                rows.append(row)
        return rows

    def _refuse_behind_workers(self) -> None:
        if not self.reloadable:
            raise Conflict("not_supported", "models load and unload in the inference process; behind more than "
                           "one HTTP worker (--http-workers) restart the server to change them")

    def _entry(self, name: str, version: str | None) -> Path:
        try:
            validate_name(name)
            folder = entry_dir(self.settings.store, name, version)
        except (ManifestError, ValueError):
            folder = None
        if folder is None or not (folder / "manifest.json").is_file():
            wanted = f"version {version!r} of {name!r}" if version else repr(name)
            raise NotFound("unknown_model", f"the store {self.settings.store} holds no {wanted}; versions there: "
                           f"{', '.join(self._store_versions(name)) or 'none'}")
        return folder

    async def load(self, name: str, version: str | None = None) -> Manifest:
        """Serve the store's entry ``name`` (at ``version``, pinning it, or "latest"; default: the policy's),
        replacing the version served now once the new one is warm; 400 ``load_failed`` with the reason, the old one
        serving."""
        self._refuse_behind_workers()
        async with self.locks.setdefault(name, asyncio.Lock()):
            policy = self.registry.policies.get(name, LATEST)
            if version is not None:
                policy = LATEST if version == "latest" else {"specific": {"versions": [version]}}
            pinned = policy.get("specific", {}).get("versions", [None])[0]
            folder = self._entry(name, pinned)
            self.seen[name] = signature(folder)
            try:
                # as at start: the files the runner opens are verified (size, sha256) when it opens them
                manifest = load_manifest(folder, verify=False)
                if manifest.name != name:
                    raise ManifestError(f"{folder}: the manifest names model {manifest.name!r}, not {name!r}")
                await self.registry.replace(manifest)
                self._set_policy(name, policy)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if name in self.registry.runners:
                    self.registry.load_errors[name] = reason
                    detail = f"{reason}; version {self.registry.manifests[name].version} keeps serving"
                else:
                    self.registry.errors[name] = reason
                    detail = reason
                log.error("model %s: loading %s failed: %s", name, folder, reason)
                raise LoadFailed("load_failed", f"model {name!r} failed to load from {folder.name}/: {detail}") \
                    from None
            return manifest

    def _set_policy(self, name: str, policy: dict[str, Any]) -> None:
        if policy == LATEST:
            self.registry.policies.pop(name, None)
        else:
            self.registry.policies[name] = policy

    async def unload(self, name: str) -> None:
        """Stop serving ``name``; 404 when it is not served."""
        self._refuse_behind_workers()
        async with self.locks.setdefault(name, asyncio.Lock()):
            if name not in self.registry.runners and self.registry.states.get(name) not in (FAILED, LOADING):
                raise NotFound("unknown_model", f"model {name!r} is not loaded; loaded: "
                               f"{', '.join(self.registry.runners) or 'none'}")
            self.registry.remove(name)
            self.seen.pop(name, None)

    def _wanted(self, name: str) -> Path | None:
        """The folder the policy serves for ``name`` now (None when the store holds no such version)."""
        pinned = self.registry.policies.get(name, LATEST).get("specific", {}).get("versions", [None])[0]
        try:
            return entry_dir(self.settings.store, name, pinned)
        except (ManifestError, ValueError, OSError):
            return None

    async def poll(self) -> list[str]:
        """One look at the store: reload the served (or failed) models whose wanted version's files changed, load
        new entries (all, unless --models names some), unload those gone; the names acted on. A model unloaded
        through the API stays unloaded until loaded through it."""
        try:
            present = {entry.parent.name for entry in list_entries(self.settings.store)}
        except ManifestError:
            return []
        acted = []
        selected = set(self.settings.models) or present
        unloaded = {name for name, state in self.registry.states.items() if state == UNLOADED}  # stays so
        for name in sorted((set(self.registry.states) | (present & selected)) - unloaded):
            folder = self._wanted(name) if name in present else None
            if folder is None:
                if name in self.registry.runners:
                    log.info("model %s left the store; unloading it", name)
                    await self.unload(name)
                    acted.append(name)
                continue
            current = signature(folder)
            if current and current != self.seen.get(name):
                log.info("model %s: %s changed in the store; loading it", name, folder)
                with contextlib.suppress(LoadFailed, NotFound):  # logged and kept in /models; a change tries again
                    await self.load(name)
                acted.append(name)
        return acted

    def remember_started(self) -> None:
        """Record the files the models loaded at start came from, so that the watcher reloads only changes."""
        for name in self.registry.manifests:
            folder = self._wanted(name)
            if folder is not None:
                self.seen[name] = signature(folder)

    async def watch(self) -> None:
        """Poll the store every --watch-interval-s until cancelled."""
        self.remember_started()
        while True:
            await asyncio.sleep(self.settings.watch_interval_s)
            try:
                await self.poll()
            except Exception:  # a watcher that dies would silently stop following the store
                log.exception("watching the store failed; trying again in %.1f s", self.settings.watch_interval_s)
