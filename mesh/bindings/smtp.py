"""``smtp-out``: send mail with aiosmtplib.

``send`` (or ``create``) takes ``{to, subject, body}`` plus optional ``cc``, ``bcc``, ``html``,
``reply_to`` (``to``/``cc``/``bcc``: one address or a list); ``metadata`` may give the same keys
and wins. It returns once the server accepted the message (``{"accepted": [...], "message_id"}``);
a refused recipient or an unreachable server raises :class:`~mesh.bindings.BindingError`. A
``from_topic`` event's data is the mail; its id becomes the ``Message-ID`` (so a redelivered event
can be recognised by mail filters), SMTP itself having no deduplication.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, ClassVar

import aiosmtplib
from opentelemetry.trace import SpanKind

from mesh.bindings.base import BindingError, BindingFeatures, OutputBinding, span
from mesh.bindings.options import SmtpOutOptions
from mesh.event import Event

__all__ = ["SmtpOut"]


def _addresses(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise BindingError(f"an address list must be a string or a list of strings, not {value!r}")


class SmtpOut(OutputBinding[SmtpOutOptions]):
    """Send mail through an SMTP server."""

    type = "smtp-out"
    features = BindingFeatures(
        direction="output",
        operations=frozenset({"send", "create"}),
        delivery="returns once the SMTP server accepted the message; errors raise",
    )
    default_operation: ClassVar[str] = "send"

    def message(self, data: Any, metadata: dict[str, Any]) -> EmailMessage:
        """The mail for ``data`` overlaid with ``metadata``."""
        fields = {**(data if isinstance(data, dict) else {"body": data}), **metadata}
        to = _addresses(fields.get("to"))
        if not to:
            raise BindingError(f"smtp-out {self.name!r}: no recipient ('to')")
        msg = EmailMessage()
        msg["From"] = self.options.sender
        msg["To"] = ", ".join(to)
        if fields.get("cc"):
            msg["Cc"] = ", ".join(_addresses(fields["cc"]))
        if fields.get("reply_to"):
            msg["Reply-To"] = str(fields["reply_to"])
        msg["Subject"] = str(fields.get("subject", ""))
        event = metadata.get("event")
        domain = self.options.sender.rpartition("@")[2] or None
        if isinstance(event, Event):
            msg["Message-ID"] = f"<{event.id}@{domain or 'mesh'}>"
        else:
            msg["Message-ID"] = make_msgid(domain=domain)
        msg.set_content(str(fields.get("body") or ""))
        if fields.get("html"):
            msg.add_alternative(str(fields["html"]), subtype="html")
        return msg

    async def call(self, operation: str, data: Any, metadata: dict[str, Any]) -> Any:
        """Send one message."""
        fields = {**(data if isinstance(data, dict) else {"body": data}), **metadata}
        msg = self.message(data, metadata)
        recipients = _addresses(fields.get("to")) + _addresses(fields.get("cc")) + _addresses(fields.get("bcc"))
        o = self.options
        attributes = {"server.address": o.host, "server.port": o.port}
        with span("smtp send", SpanKind.CLIENT, attributes):
            try:
                errors, response = await aiosmtplib.send(
                    msg,
                    recipients=list(dict.fromkeys(recipients)),
                    hostname=o.host,
                    port=o.port,
                    username=o.username,
                    password=o.password,
                    start_tls=o.starttls,
                    use_tls=o.use_tls,
                    timeout=o.timeout,
                )
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise BindingError(f"smtp-out {self.name!r}: {type(exc).__name__}: {exc}") from exc
        return {
            "accepted": [r for r in recipients if r not in errors],
            "refused": {r: str(e) for r, e in errors.items()},
            "message_id": msg["Message-ID"],
            "response": response,
        }
