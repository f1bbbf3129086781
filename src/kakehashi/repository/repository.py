"""Find models on disk (one ONNX file, one model folder, or a repository of them) and load their versions."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Collection
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from kakehashi.errors import InvalidInput, KakehashiError, ModelLoadError, NotFound, Unavailable
from kakehashi.memory import trim
from kakehashi.pipelines.config import PIPELINE_FILE
from kakehashi.pipelines.pipeline import Pipeline
from kakehashi.repository.config import ModelConfig, ServerDefaults, load_model_config
from kakehashi.repository.handle import ModelHandle
from kakehashi.servable import Servable
from kakehashi.settings import Limits

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
WARM_WAIT_SECONDS = 60.0  # how long a reload's new version may warm up before it takes over anyway
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
CONFIG_FILE = "model.yaml"


@dataclass
class ModelEntry:
    """A model found on disk: its versions' files and, once loaded, their handles; or a pipeline (its
    `pipeline.yaml` as `config_path`, served as version 1)."""

    name: str
    config_path: Path | None
    files: dict[int, Path]
    handles: dict[int, Servable] = field(default_factory=dict)
    error: str = ""
    pipeline: bool = False
    folder: Path | None = None  # the model's folder (None for a bare .onnx file)


def _model_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)


def checked_name(name: str) -> str:
    """`name` if it is a safe model name (letters, digits, `_ . -`, not starting with a dot); else 400."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"invalid model name {name[:80]!r}: use letters, digits, '_', '.' and '-' "
            f"(not starting with '.', no '..', at most 128 characters)"
        )
    return name


def _versions(folder: Path) -> dict[int, Path]:
    """Numbered version folders holding `model.onnx`; a bare `model.onnx` is version 1."""
    found = {
        int(d.name): d / MODEL_FILE
        for d in folder.iterdir()
        if d.is_dir() and d.name.isdigit() and (d / MODEL_FILE).is_file()
    }
    if not found and (folder / MODEL_FILE).is_file():
        found[1] = folder / MODEL_FILE
    return found


def _is_model_folder(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() or (folder / PIPELINE_FILE).is_file() or bool(_versions(folder))


def discover(path: Path) -> list[ModelEntry]:
    """Models at `path`: an `.onnx` file, a model folder, or a repository folder of models."""
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or directory")
    if path.is_file():
        return [ModelEntry(_model_name(path.stem), None, {1: path})]
    if _is_model_folder(path):
        return [_entry(path)]
    entries = []
    for child in sorted(path.iterdir()):
        if child.is_file() and child.suffix == ".onnx":
            entries.append(ModelEntry(_model_name(child.stem), None, {1: child}))
        elif child.is_dir() and _is_model_folder(child):
            entries.append(_entry(child))
    if not entries:
        raise ModelLoadError(f"{path}: no models found (expected *.onnx files or <name>/<version>/model.onnx)")
    return entries


def _stat(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except OSError:
        return (0, 0)
    return (info.st_mtime_ns, info.st_size)


def fingerprint(entry: ModelEntry) -> tuple:
    """What a change on disk alters: the version files and `model.yaml` (modification time and size)."""
    config = _stat(entry.config_path) if entry.config_path else None
    return config, tuple((version, _stat(path)) for version, path in sorted(entry.files.items()))


def _entry(folder: Path) -> ModelEntry:
    if (folder / PIPELINE_FILE).is_file():
        return ModelEntry(_model_name(folder.name), folder / PIPELINE_FILE, {}, pipeline=True)
    config = folder / CONFIG_FILE
    return ModelEntry(_model_name(folder.name), config if config.is_file() else None, _versions(folder), folder=folder)


class ModelRepository:
    """The served models by name and version; loading is blocking and done off the event loop."""

    def __init__(
        self,
        path: Path,
        compute: Executor,
        limits: Limits,
        defaults: ServerDefaults = ServerDefaults(),
        name: str | None = None,
    ) -> None:
        """`name` serves the single model at `path` under that name (e.g. KServe's InferenceService name,
        whatever the folder is called)."""
        self.path = path
        self.compute = compute
        self._limits = limits
        self._defaults = defaults
        self._name = checked_name(name) if name else None
        self.entries: dict[str, ModelEntry] = {entry.name: entry for entry in self._discover()}
        self._on_disk = {name: fingerprint(entry) for name, entry in self.entries.items()}
        self._expected = set(self.entries)  # the models that must be READY for the server to be ready
        # one change at a time: the startup load, a load or reload, an unload, a poll pass, the final close
        self._changing = asyncio.Lock()

    def _discover(self) -> list[ModelEntry]:
        entries = discover(self.path)
        if self._name is None:
            return entries
        if len(entries) != 1:
            raise ModelLoadError(
                f"{self.path} holds {len(entries)} models ({', '.join(e.name for e in entries)}); "
                f"a model name ('{self._name}') can only be given to a single model"
            )
        entries[0].name = self._name
        return entries

    def load_all(self) -> None:
        """Load every model's selected versions, then the pipelines over them; failures are recorded, never
        raised. Blocking: for a caller with no event loop running yet; a server uses `load_at_start`."""
        for entry in sorted(self.entries.values(), key=lambda entry: entry.pipeline):
            self._load(entry)

    async def load_at_start(self) -> None:
        """`load_all` off the event loop, holding the lock, so a load or unload sent meanwhile waits for it."""
        async with self._changing:
            await asyncio.to_thread(self.load_all)

    def _load(self, entry: ModelEntry) -> None:
        if entry.pipeline:
            assert entry.config_path is not None
            pipeline = Pipeline(entry.name, entry.config_path, self.get, self.compute, self._limits)
            entry.handles[pipeline.version] = pipeline
            pipeline.load()
            return
        try:
            config = load_model_config(entry.config_path) if entry.config_path else ModelConfig()
            config = self._defaults.apply(config)
        except ModelLoadError as exc:
            entry.error = exc.message
            log.error("model %s not loaded: %s", entry.name, exc.message)
            return
        versions = config.version_policy.select(list(entry.files))
        if not versions:
            entry.error = f"no version on disk matches the version policy ({sorted(entry.files)} on disk)"
            log.error("model %s not loaded: %s", entry.name, entry.error)
            return
        for version in versions:
            handle = ModelHandle(
                entry.name,
                version,
                entry.files[version],
                config,
                self.compute,
                self._limits,
                entry.folder,
                self.get,
                self._defaults.measure_in_background,
            )
            entry.handles[version] = handle
            handle.load()

    async def load(self, name: str, parameters: Collection[str] = ()) -> None:
        """(Re)load `name` from disk beside what serves now, then swap, so no request sees a gap.

        A reload whose versions all fail leaves the served versions in place and raises `ModelLoadError`.
        Triton's load `parameters` (a config or files sent with the request) are refused: models load as on disk.
        """
        if parameters:
            raise InvalidInput(
                f"load parameters {sorted(parameters)} are not supported: Kakehashi loads a model "
                f"as it is on disk (change its files or model.yaml there, then load)"
            )
        checked_name(name)
        async with self._changing:
            await self._reload(name)

    async def _reload(self, name: str) -> None:
        fresh = {entry.name: entry for entry in self._discover()}.get(name)
        if fresh is None:
            raise NotFound(f"no model '{name}' in the repository {self.path}")
        self._on_disk[name] = fingerprint(fresh)
        await asyncio.to_thread(self._load, fresh)
        old = self.entries.get(name)
        failed = not any(handle.ready for handle in fresh.handles.values())
        if failed:
            reason = fresh.error or "; ".join(h.reason for h in fresh.handles.values() if h.reason)
            if old is not None and any(handle.ready for handle in old.handles.values()):
                old.error = f"reload failed, previous versions still serving: {reason}"
                for handle in old.handles.values():
                    handle.publish_state()  # a failed version shares its series with the one still serving
                raise ModelLoadError(f"model '{name}' failed to load: {reason}; the previous versions keep serving")
            self.entries[name] = fresh
            raise ModelLoadError(f"model '{name}' failed to load: {reason}")
        if old is not None:  # the new versions take over once every instance is warm; the old ones serve meanwhile
            await self._wait_warm(fresh)
        self.entries[name] = fresh
        self._expected.add(name)
        if old is not None:
            for handle in old.handles.values():
                await handle.close()  # drains what it already queued
            for handle in fresh.handles.values():
                handle.publish_state()  # an old handle of the same version just published UNLOADED
        log.info("model %s loaded: version(s) %s", name, ", ".join(str(v) for v in sorted(fresh.handles)))

    async def _wait_warm(self, entry: ModelEntry) -> None:
        """Wait until every version of `entry` is warm, `WARM_WAIT_SECONDS` at most in all (its warm-up runs at a
        lower priority: a busy server may hold it back for long, and a reload holds every other load meanwhile);
        past that it takes over warming as it serves, and the log says so."""
        started = time.monotonic()
        for version, handle in entry.handles.items():
            left = max(0.0, started + WARM_WAIT_SECONDS - time.monotonic())
            if not await asyncio.to_thread(handle.wait_warm, left):
                log.warning(
                    "model %s version %s: still warming up after %.1f s; it takes over now and warms as it serves",
                    entry.name,
                    version,
                    time.monotonic() - started,
                )

    async def unload(self, name: str) -> None:
        """Stop serving `name`: new requests get 503; queued and running ones are answered first."""
        async with self._changing:
            await self._unload(name)

    async def _unload(self, name: str) -> None:
        entry = self._entry(name)  # under the lock: the entry a reload just installed, not the one it replaced
        self._expected.discard(name)
        handles, entry.handles, entry.error = entry.handles, {}, "unloaded"
        for handle in handles.values():
            await handle.close()
        log.info("model %s unloaded", name)

    async def poll(self) -> None:
        """Load models added on disk, reload changed ones (new version, new `model.yaml`), unload removed ones.

        A failing load is logged and shown in the index; it is retried only after the files change again.
        """
        on_disk = {entry.name: fingerprint(entry) for entry in await asyncio.to_thread(self._discover)}
        async with self._changing:
            for name, current in on_disk.items():
                if self._on_disk.get(name) != current:
                    log.info("model %s changed on disk: loading", name)
                    try:
                        await self._reload(name)
                    except KakehashiError as exc:
                        log.error("model %s: %s", name, exc.message)
            for name in set(self._on_disk) - set(on_disk):
                del self._on_disk[name]
                if name in self.entries:
                    log.info("model %s removed from disk: unloading", name)
                    await self._unload(name)

    async def watch(self, seconds: float) -> None:
        """`poll` every `seconds` until cancelled; a failed scan (e.g. the folder is gone) is logged and retried,
        an unexpected error with its traceback."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.poll()
            except KakehashiError as exc:
                log.error("repository poll: %s", exc.message)
            except Exception:
                log.exception("repository poll failed; retrying in %s s", seconds)

    def abandon_queued(self, reason: str) -> int:
        """Answer every request still queued, in every model, 503 with `reason`; how many."""
        return sum(handle.abandon_queued(reason) for handle in self.versions_of())

    async def rest(self) -> bool:
        """Requests stopped: every model's runtimes give back their scratch memory, then the process what it freed;
        False if a model was loading or measuring (it is asked again at the next rest). In a thread (a release may
        wait for a run to end), never beside a load, unload or close: models are not closed under a release."""
        async with self._changing:
            handles = [handle for handle in self.versions_of() if isinstance(handle, ModelHandle)]
            work = asyncio.ensure_future(asyncio.to_thread(_rest, handles))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait({work})  # the runtimes must not be mid-run when the models close
                raise

    async def close_all(self) -> None:
        """Stop every loaded version (running batches finish first), after any load or unload under way."""
        async with self._changing:
            for entry in self.entries.values():
                for handle in entry.handles.values():
                    await handle.close()

    @property
    def ready(self) -> bool:
        """True when at least one model is READY (a ready version) and so is every expected model: those found at
        start, and those loaded since (API or poller). An unload on purpose (API, or removed from disk) takes a
        model off the expected list, so it never keeps the server unready; a load that fails for a model not
        expected leaves readiness alone. Zero READY models is never ready."""
        ready = {name for name, entry in self.entries.items() if any(h.ready for h in entry.handles.values())}
        return bool(ready) and self._expected <= ready

    def _entry(self, name: str) -> ModelEntry:
        entry = self.entries.get(checked_name(name))
        if entry is None:
            raise NotFound(f"unknown model '{name}'")  # never the served names: this answer may reach anyone
        return entry

    def get(self, name: str, version: str | int | None = None) -> Servable:
        """The handle for `name` at `version` (the newest served one if None); raises `NotFound`."""
        entry = self._entry(name)
        if version in (None, ""):
            if not entry.handles:
                raise Unavailable(f"model '{name}' is not ready: {entry.error or 'still loading'}")
            ready = [v for v, h in entry.handles.items() if h.ready]
            return entry.handles[max(ready or entry.handles)]
        if not str(version).isdigit() or len(str(version)) > 18:
            raise InvalidInput(
                f"invalid version {str(version)[:80]!r} of model '{name}': versions are positive integers"
            )
        number = int(version)
        handle = entry.handles.get(number)
        if handle is None:
            served = ", ".join(str(v) for v in sorted(entry.handles)) or "none"
            raise NotFound(f"model '{name}' has no version {number}; served versions: {served}")
        return handle

    def versions_of(self, name: str | None = None, version: str | None = None) -> list[Servable]:
        """The loaded handles of every model (no `name`), of one model, or of one `version` of it."""
        if not name:
            return [handle for entry in self.entries.values() for handle in entry.handles.values()]
        if version:
            return [self.get(name, version)]
        return list(self._entry(name).handles.values())

    def index(self, ready_only: bool = False) -> list[dict]:
        """Every model and version (or only the ready ones) with its state and, if not ready, the reason; a
        reload that failed while older versions keep serving is the reason on their rows."""
        rows = []
        for entry in self.entries.values():
            if not entry.handles:
                state = "UNLOADED" if entry.error == "unloaded" else ("UNAVAILABLE" if entry.error else "LOADING")
                rows.append({"name": entry.name, "state": state, "reason": entry.error})
            for version, handle in sorted(entry.handles.items()):
                rows.append(
                    {
                        "name": entry.name,
                        "version": str(version),
                        "state": handle.state.value,
                        "reason": handle.reason or entry.error,
                    }
                )
        return [row for row in rows if row["state"] == "READY"] if ready_only else rows


def _rest(handles: list[ModelHandle]) -> bool:
    """Every model gives back its scratch memory, then the process; nothing while one model settles: the releases'
    runs would slow its timings (measuring runs below the server's priority)."""
    if any(handle.settling for handle in handles):
        return False
    for handle in handles:
        try:
            handle.release_memory()
        except Exception:  # memory kept is no fault of a request's: log it and go on
            log.exception("model %s version %s: giving back memory failed", handle.name, handle.version)
    trim()
    return True
