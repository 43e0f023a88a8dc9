"""Showing broker and store addresses without their secrets.

One helper, used everywhere a URL or a connection option is printed (logs, errors, ``repr``,
``mesh config check``): the password, a token in the user part, and secret-looking query
parameters are replaced by ``***``; the scheme, user name, hosts, port and path stay readable.

>>> mask_url("amqp://guest:secret@127.0.0.1:5672/vhost")
'amqp://guest:***@127.0.0.1:5672/vhost'
>>> mask_url("nats://s3cr3ttoken@127.0.0.1:4222")
'nats://***@127.0.0.1:4222'
>>> mask_url("nats://a:1@h1:4222,nats://b:2@h2:4222")
'nats://a:***@h1:4222,nats://b:***@h2:4222'
>>> mask_url("postgresql://u@db/x?password=p&sslmode=require")
'postgresql://u@db/x?password=***&sslmode=require'
"""

from __future__ import annotations

import re

__all__ = ["SECRET_PARAMS", "mask_url"]

SECRET_PARAMS = frozenset({"password", "passwd", "pass", "token", "secret", "auth_token", "sasl_password", "key"})
"""Query parameters whose values are masked."""

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^@/?#,\s]*)@")
_QUERY = re.compile(r"(?P<sep>[?&;])(?P<name>[^=&;#\s]+)=(?P<value>[^&;#\s]*)")


def _userinfo(match: re.Match[str]) -> str:
    info = match.group("info")
    user, colon, _ = info.partition(":")
    if colon:
        return f"{match.group('scheme')}{user}:***@"
    return f"{match.group('scheme')}***@"  # a lone user part is a token (nats://TOKEN@host)


def _query(match: re.Match[str]) -> str:
    if match.group("name").lower() in SECRET_PARAMS:
        return f"{match.group('sep')}{match.group('name')}=***"
    return match.group(0)


def mask_url(url: object) -> str:
    """The URL (or comma-separated URLs) with every credential replaced by ``***``."""
    if url is None:
        return ""
    text = str(url)
    return _QUERY.sub(_query, _USERINFO.sub(_userinfo, text))
