"""smtp-out against a local aiosmtpd server, by call and driven by a topic."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from mesh.bindings import BindingError
from tests.bindings.conftest import MakeApp
from tests.support import free_port, unique, wait_for


class Inbox:
    """An aiosmtpd handler keeping what it received."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


async def test_smtp_out_sends_by_call_and_from_topic(make_app: MakeApp, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    topic = unique("mail")
    options = {"type": "smtp-out", "host": "127.0.0.1", "port": port, "from": "shop@example.com", "from_topic": topic}
    app, _ = await make_app({"mailer": options})
    result = await app.binding("mailer").invoke(
        "send", {"to": "ada@example.com", "cc": ["bob@example.com"], "subject": "Order", "body": "Thanks"}
    )
    assert result["accepted"] == ["ada@example.com", "bob@example.com"]
    sent = await app.publish(topic, {"to": "eve@example.com", "subject": "Shipped", "body": "On its way"}, type="mail")
    await wait_for(lambda: len(inbox.mails) == 2, what="two mails")
    rcpt, raw = inbox.mails[0]
    mail = message_from_bytes(raw)
    assert rcpt == ["ada@example.com", "bob@example.com"]
    assert (mail["From"], mail["Subject"], mail.get_payload().strip()) == ("shop@example.com", "Order", "Thanks")
    driven = message_from_bytes(inbox.mails[1][1])
    assert driven["Subject"] == "Shipped" and driven["Message-ID"] == f"<{sent.id}@example.com>"
    with pytest.raises(BindingError, match="no recipient"):
        await app.binding("mailer").invoke("send", {"subject": "x"})


async def test_smtp_out_unreachable_server_raises(make_app: MakeApp) -> None:
    app, _ = await make_app({"mailer": {"type": "smtp-out", "port": free_port(), "from": "a@b.c", "timeout": 2}})
    with pytest.raises(BindingError, match="smtp-out 'mailer'"):
        await app.binding("mailer").invoke("send", {"to": "x@y.z", "body": "hi"})
    assert app.binding("mailer").stats.errors == 1
