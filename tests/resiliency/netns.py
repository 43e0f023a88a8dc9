"""A network namespace joined to the host by a veth pair, a TCP forwarder into it, and partitions.

Brokers listen on 127.0.0.1 only, so a process in the namespace reaches them through a
:class:`Forwarder` in this process, listening on the host end of the veth. A partition makes both
ends of the veth drop every packet (a ``pfifo`` queue of length 0: no reset, no error, packets
vanish, as on a cut link); healing removes the queues and TCP retransmits what was held back.
Names are unique per use, and everything is removed at exit, also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import shutil
import subprocess
from collections.abc import Iterator

__all__ = ["Forwarder", "Netns", "netns", "netns_available"]


def _run(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=20)


def netns_available() -> str | None:
    """Why namespaces cannot be used here (``None``: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "the ip and tc commands are missing"
    return None


class Netns:
    """One namespace ``name`` with ``inside`` (its veth end's address) and ``host`` (the host end's)."""

    def __init__(self, name: str, host_if: str, ns_if: str, host: str, inside: str) -> None:
        self.name, self.host_if, self.ns_if, self.host, self.inside = name, host_if, ns_if, host, inside
        self.partitioned = False

    def partition(self) -> None:
        """Drop every packet both ways (no reset: the peers only see silence)."""
        _run("tc", "qdisc", "add", "dev", self.host_if, "root", "pfifo", "limit", "0")
        _run("tc", "qdisc", "add", "dev", self.ns_if, "root", "pfifo", "limit", "0", ns=self.name)
        self.partitioned = True

    def heal(self) -> None:
        """Let packets through again."""
        _run("tc", "qdisc", "del", "dev", self.host_if, "root", check=False)
        _run("tc", "qdisc", "del", "dev", self.ns_if, "root", ns=self.name, check=False)
        self.partitioned = False

    def command(self, *args: str) -> list[str]:
        """``args`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]


def _free_subnet() -> ipaddress.IPv4Network:
    used = _run("ip", "-o", "-4", "addr").stdout
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.231.{random.randrange(256)}.{random.randrange(0, 256, 4)}/30")
        if f" {net[1]}/" not in used and f" {net[2]}/" not in used:
            return net
    raise RuntimeError("no free /30 in 10.231.0.0/16")


@contextlib.contextmanager
def netns() -> Iterator[Netns]:
    """A fresh namespace and veth pair (names unique per use), removed at exit."""
    tag = f"{os.getpid() % 10000:04d}{random.randrange(16**4):04x}"
    name, host_if, ns_if = f"mr{tag}", f"vh{tag}", f"vn{tag}"
    net = _free_subnet()
    host, inside = str(net[1]), str(net[2])
    try:
        _run("ip", "netns", "add", name)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", name)
        _run("ip", "addr", "add", f"{host}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "addr", "add", f"{inside}/30", "dev", ns_if, ns=name)
        _run("ip", "link", "set", ns_if, "up", ns=name)
        _run("ip", "link", "set", "lo", "up", ns=name)
        yield Netns(name, host_if, ns_if, host, inside)
    finally:
        _run("ip", "netns", "del", name, check=False)  # takes its veth end, and so the pair, with it
        _run("ip", "link", "del", host_if, check=False)


class Forwarder:
    """TCP from ``listen_host``:<port> to 127.0.0.1:``target_port`` (in this process's event loop)."""

    def __init__(self, listen_host: str, target_port: int) -> None:
        self.listen_host, self.target_port = listen_host, target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Forwarder:
        self._server = await asyncio.start_server(self._accept, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.close()
