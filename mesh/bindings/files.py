"""File bindings: ``files-in`` (a watched folder) and ``files-out`` (create, get, delete, list).

``files-in`` scans its folder every ``poll`` seconds, oldest file first:

=======================================  ===================================================
file                                     outcome
=======================================  ===================================================
``*.json`` holding a CloudEvent          published as it is, then moved to ``processed/``
other ``*.json``                         wrapped (``subject`` = file name), then moved
any other file                           wrapped as bytes (``application/octet-stream``)
``*.json`` that is not valid JSON, or    moved to ``failed/`` with ``<name>.reason``; counted
an invalid CloudEvent, or unreadable     as rejected
broker does not confirm                  left in place, tried again at the next scan
=======================================  ===================================================

A file is moved aside only after its event was confirmed, so a crash in between publishes it
again at the next start with the same id (a hash of name, size and modification time), which
idempotent consumers drop. Names starting with ``.`` or ending in ``.tmp`` are skipped: write
there and rename into place.

``files-out`` writes atomically (a temporary file renamed into place). ``create`` takes data
(JSON unless ``bytes``/``str``) and ``metadata['name']`` (default ``<uuid>.json``); ``get``,
``delete`` take ``metadata['name']``; ``list`` returns the names. A ``from_topic`` event is written
as structured JSON to ``<event id>.json`` (so a redelivery rewrites the same file).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Any, ClassVar

import orjson

from mesh.bindings.base import BindingError, BindingFeatures, InputBinding, OutputBinding, json_by_default
from mesh.bindings.options import FilesInOptions, FilesOutOptions
from mesh.codecs import from_dict, to_structured
from mesh.codecs.data import json_dumps
from mesh.errors import DecodeError, InvalidEvent
from mesh.event import Event

__all__ = ["FilesIn", "FilesOut"]

log = logging.getLogger("mesh.bindings")


class _Bad(Exception):
    """The file cannot become an event."""


class FilesIn(InputBinding[FilesInOptions]):
    """Watch a folder; each file becomes an event, then moves aside (see the module docstring)."""

    type = "files-in"
    features = BindingFeatures(
        direction="input",
        delivery="moved to processed/ only after the broker confirmed; bad files to failed/ with the reason",
    )

    def __init__(self, name: str, options: FilesInOptions, runtime: Any) -> None:
        super().__init__(name, options, runtime)
        self.folder = Path(options.path)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the folders and begin scanning."""
        for sub in ("", self.options.processed, self.options.failed):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self._task = asyncio.get_running_loop().create_task(self._scan_loop(), name=f"binding {self.name}")

    async def stop(self) -> None:
        """Stop scanning (a file in hand is left in place if its event was not confirmed)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _scan_loop(self) -> None:
        while True:
            try:
                await self.scan()
            except Exception:
                log.exception("files-in %s: scan failed", self.name)
            await asyncio.sleep(self.options.poll)

    def _candidates(self) -> list[Path]:
        files = [
            p
            for p in self.folder.glob(self.options.pattern)
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith((".tmp", ".reason"))
        ]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    async def scan(self) -> None:
        """Publish every file there now, oldest first."""
        for path in self._candidates():
            self.stats.add("received")
            try:
                event = self._event(path)
            except _Bad as exc:
                self.stats.add("rejected")
                self._move(path, self.options.failed)
                (self.folder / self.options.failed / f"{path.name}.reason").write_text(f"{exc}\n")
                log.warning("files-in %s: %s moved to %s/: %s", self.name, path.name, self.options.failed, exc)
                continue
            try:
                await self.emit(event)
            except Exception as exc:
                log.warning("files-in %s: %s not confirmed (%s); trying again later", self.name, path.name, exc)
                return  # keep the order: the rest waits for the next scan
            self._move(path, self.options.processed)

    def _event(self, path: Path) -> Event:
        try:
            body = path.read_bytes()
            stat = path.stat()
        except OSError as exc:
            raise _Bad(f"cannot read: {exc.strerror}") from None
        digest = hashlib.sha256(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:32]
        if path.suffix.lower() != ".json":
            self.stats.add("wrapped")
            return self.wrap(body, subject=path.name, id=digest, datacontenttype="application/octet-stream")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _Bad(f"not valid JSON: {exc}") from None
        if isinstance(data, dict) and "specversion" in data:
            try:
                return json_by_default(from_dict(data))
            except (DecodeError, InvalidEvent) as exc:
                raise _Bad(f"not a valid CloudEvent: {exc}") from None
        self.stats.add("wrapped")
        return self.wrap(data, subject=path.name, id=digest, datacontenttype="application/json")

    def _move(self, path: Path, sub: str) -> None:
        target = self.folder / sub / path.name
        if target.exists():
            target = target.with_name(f"{path.stem}.{uuid.uuid4().hex[:8]}{path.suffix}")
        os.replace(path, target)


class FilesOut(OutputBinding[FilesOutOptions]):
    """Files in a folder: ``create``, ``get``, ``delete``, ``list`` (see the module docstring)."""

    type = "files-out"
    features = BindingFeatures(
        direction="output",
        operations=frozenset({"create", "get", "delete", "list"}),
        delivery="create returns after an atomic rename; from_topic rewrites <event id>.json on redelivery",
    )
    default_operation: ClassVar[str] = "create"

    def __init__(self, name: str, options: FilesOutOptions, runtime: Any) -> None:
        super().__init__(name, options, runtime)
        self.folder = Path(options.path)

    async def start(self) -> None:
        """Create the folder."""
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, name: Any) -> Path:
        if not isinstance(name, str) or not name or "/" in name or name in (".", "..") or "\0" in name:
            raise BindingError(f"files-out {self.name!r}: metadata['name'] must be a plain file name, not {name!r}")
        return self.folder / name

    async def call(self, operation: str, data: Any, metadata: dict[str, Any]) -> Any:
        """Do one file operation."""
        if operation == "list":
            return sorted(p.name for p in self.folder.iterdir() if p.is_file() and not p.name.endswith(".tmp"))
        event = metadata.get("event")
        if operation == "create":
            if isinstance(event, Event):
                name, body = f"{event.id}.json", to_structured(event)
            else:
                name = metadata.get("name") or f"{uuid.uuid4().hex}.json"
                body = data if isinstance(data, bytes) else data.encode() if isinstance(data, str) else json_dumps(data)
            path = self._path(name)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(body)
            os.replace(tmp, path)
            return {"name": path.name, "size": len(body)}
        path = self._path(metadata.get("name"))
        try:
            if operation == "get":
                return path.read_bytes()
            path.unlink()
            return {"name": path.name}
        except FileNotFoundError:
            raise BindingError(f"files-out {self.name!r}: no file {path.name!r}") from None
