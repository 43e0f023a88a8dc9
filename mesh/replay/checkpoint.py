"""Where replays keep their checkpoints and dead-letter topics their marks.

Two kinds of values, each a small JSON document by name:

- ``replay``: one checkpoint per replay name (its settings, the cursor after the last finished
  batch, counts, whether it finished), written after every batch;
- ``dlq:<topic>``: one mark per dead letter that was redriven or purged, so ``mesh dlq`` shows
  and redrives only what is still pending (a redrive that stopped half way just runs again).

They live in the archive database (``<table>_state``) when an archive is configured, so every
operator sharing the archive sees them; otherwise in JSON files under the state directory:
``$MESH_STATE_DIR``, else ``$XDG_STATE_HOME/mesh``, else ``~/.local/state/mesh``. A file is
replaced atomically (written, flushed to disk, renamed), so a replay killed at any moment leaves
the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import asyncio
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from mesh.archive import ArchiveStore

__all__ = ["ArchiveState", "FileState", "StateStore", "default_state_dir"]


def default_state_dir() -> Path:
    """``$MESH_STATE_DIR``, else ``$XDG_STATE_HOME/mesh``, else ``~/.local/state/mesh``."""
    explicit = os.environ.get("MESH_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) / "mesh" if xdg else Path.home() / ".local" / "state" / "mesh"


class StateStore(ABC):
    """JSON documents by kind and name, written durably."""

    @abstractmethod
    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """A document, or ``None``."""

    @abstractmethod
    async def put_many(self, kind: str, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Store documents of one kind together (all or none)."""

    async def put(self, kind: str, name: str, value: dict[str, Any]) -> None:
        """Store one document."""
        await self.put_many(kind, [(name, value)])

    @abstractmethod
    async def all(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every document of a kind, by name."""

    @abstractmethod
    async def delete(self, kind: str, name: str) -> None:
        """Forget a document."""

    def describe(self) -> str:
        return type(self).__name__


class ArchiveState(StateStore):
    """State in the archive database (table ``<table>_state``)."""

    def __init__(self, store: ArchiveStore) -> None:
        self.store = store

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        raw = await self.store.get_state(kind, name)
        return None if raw is None else _load(raw)

    async def put_many(self, kind: str, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        await self.store.put_states(kind, [(name, orjson.dumps(value).decode()) for name, value in items])

    async def all(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: _load(raw) for name, raw in (await self.store.list_state(kind)).items()}

    async def delete(self, kind: str, name: str) -> None:
        await self.store.delete_state(kind, name)

    def describe(self) -> str:
        return f"the archive ({self.store.url})"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class FileState(StateStore):
    """State in one JSON file per kind under a directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_state_dir()
        self._lock = asyncio.Lock()

    def _file(self, kind: str) -> Path:
        return self.directory / f"{_UNSAFE.sub('_', kind)}.json"

    def _read(self, kind: str) -> dict[str, dict[str, Any]]:
        path = self._file(kind)
        try:
            doc = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            from mesh.replay.errors import ReplayError

            raise ReplayError(f"cannot read the replay state file {path}: {exc}") from exc
        return doc if isinstance(doc, dict) else {}

    def _write(self, kind: str, doc: dict[str, dict[str, Any]]) -> None:
        path = self._file(kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        async with self._lock:
            return (await asyncio.to_thread(self._read, kind)).get(name)

    async def put_many(self, kind: str, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if not items:
            return
        async with self._lock:

            def update() -> None:
                doc = self._read(kind)
                doc.update(dict(items))
                self._write(kind, doc)

            await asyncio.to_thread(update)

    async def all(self, kind: str) -> dict[str, dict[str, Any]]:
        async with self._lock:
            return await asyncio.to_thread(self._read, kind)

    async def delete(self, kind: str, name: str) -> None:
        async with self._lock:

            def update() -> None:
                doc = self._read(kind)
                if doc.pop(name, None) is not None:
                    self._write(kind, doc)

            await asyncio.to_thread(update)

    def describe(self) -> str:
        return f"files in {self.directory}"


def _load(raw: str) -> dict[str, Any]:
    value = orjson.loads(raw)
    return value if isinstance(value, dict) else {}
