"""postgres-in (LISTEN/NOTIFY) and postgres-out (exec, query) against the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from mesh import Event
from mesh.bindings import BindingError
from mesh.codecs import to_structured
from tests.bindings.conftest import PG_URL, MakeApp, need
from tests.support import unique, wait_for

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg() -> AsyncIterator[asyncpg.Connection]:
    need(PG_URL, 5432, "postgresql")
    conn = await asyncpg.connect(PG_URL)
    yield conn
    await conn.close()


async def test_postgres_in_turns_notifications_into_events(make_app: MakeApp, pg: asyncpg.Connection) -> None:
    topic, channel = unique("orders"), unique("ch").replace("-", "_")
    options = {"type": "postgres-in", "url": PG_URL, "channel": channel, "topic": topic, "event_type": "order.new"}
    app, got = await make_app({"neworders": options}, listen=topic)
    await pg.execute("select pg_notify($1, $2)", channel, '{"order": 1}')
    await pg.execute(
        "select pg_notify($1, $2)",
        channel,
        to_structured(Event("order.paid", "/shop", {"order": 2}, id="ce-2")).decode(),
    )
    await pg.execute("select pg_notify($1, $2)", channel, "plain text")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="payload string too long"):
        await pg.execute("select pg_notify($1, $2)", channel, "x" * 8001)
    await pg.execute("select pg_notify($1, $2)", channel, '{"order": 3}')
    await wait_for(lambda: len(got.events) == 4, what="four events")
    first, second, third, fourth = got.events
    assert (first.type, first.data, first.subject) == ("order.new", {"order": 1}, channel)
    assert (second.id, second.type, second.data) == ("ce-2", "order.paid", {"order": 2})
    assert third.data == "plain text" and fourth.data == {"order": 3}
    stats = app.bindings.bindings["neworders"].stats
    # counted once the publish returned, which may be after the subscriber already has the event
    await wait_for(lambda: (stats.received, stats.emitted, stats.wrapped) == (4, 4, 3), what="the counts (4, 4, 3)")


async def test_postgres_out_exec_query_and_from_topic(make_app: MakeApp, pg: asyncpg.Connection) -> None:
    table, topic = unique("ledger").replace("-", "_"), unique("ledger")
    await pg.execute(f"create table {table} (id int primary key, amount int)")
    try:
        bindings = {
            "ledger": {"type": "postgres-out", "url": PG_URL},
            "ledger_feed": {
                "type": "postgres-out",
                "url": PG_URL,
                "from_topic": topic,
                "sql": f"insert into {table} values ($1, $2) on conflict do nothing",
            },
        }
        app, _ = await make_app(bindings)
        ledger = app.binding("ledger")
        result = await ledger.invoke("exec", {"sql": f"insert into {table} values ($1, $2)", "params": [1, 2]})
        assert result == {"status": "INSERT 0 1", "rows": 1}
        await app.publish(topic, [2, 5], type="ledger.entry")
        await wait_for(lambda: app.binding("ledger_feed").stats.invoked == 1, what="the driven insert")
        rows = await ledger.invoke("query", {"sql": f"select id, amount from {table} order by id"})
        assert rows == [{"id": 1, "amount": 2}, {"id": 2, "amount": 5}]
        with pytest.raises(BindingError, match="UniqueViolation"):
            await ledger.invoke("exec", {"sql": f"insert into {table} values (1, 1)"})
        with pytest.raises(BindingError, match="data must be"):
            await ledger.invoke("query", "select 1")
        assert orjson.dumps(rows)
    finally:
        await pg.execute(f"drop table if exists {table}")
