"""Signed events through real brokers: every bad input of issue 18 is dead-lettered with its own
reason and counted while the consumer keeps running; invocation ACLs, topic scopes and key
rotation act on the verified signer."""

from __future__ import annotations

from typing import Any

import pytest

from mesh import App, Context, Event, PermissionDenied
from mesh.config.models import SecurityConfig
from mesh.security.guard import ScopeError, Security
from mesh_plugins.signing import rejections
from tests.security.support import Keys, config, keypair
from tests.support import BrokerSpec, unique, wait_for

pytestmark = pytest.mark.timeout(180)


def signer(keys: Keys, app: str, key_id: str) -> Security:
    return Security(app, SecurityConfig.model_validate({"signing": {"key": keys.pairs[key_id][0], "key_id": key_id}}))


def bad_events(keys: Keys) -> list[tuple[str, Event]]:
    """(expected code, event) for every bad input of the issue, plus an unsigned event."""
    orders = signer(keys, "orders", "orders-1")
    out: list[tuple[str, Event]] = []

    def fresh(**ext: Any) -> Event:
        return Event("shop.order", "/orders", {"n": 1}, extensions={"exta": "v1", **ext})

    forger = Security("orders", SecurityConfig.model_validate({"signing": {"key": keypair()[0], "key_id": "orders-1"}}))
    out.append(("bad_signature", forger.sign(fresh())))
    tampered = orders.sign(fresh())
    out.append(("tampered", tampered.replace(data={"n": 2})))
    out.append(("tampered", orders.sign(fresh()).with_extensions(exta="v2")))
    stranger = Security("orders", SecurityConfig.model_validate({"signing": {"key": keypair()[0], "key_id": "who-1"}}))
    out.append(("unknown_key", stranger.sign(fresh())))
    out.append(("bad_signedextattrs", orders.sign(fresh()).with_extensions(signedextattrs="exta,id")))
    out.append(("not_base64", fresh(dssematerial="!!not base64!!")))
    spoof = signer(keys, "billing", "billing-1").sign(fresh())  # billing's key, orders' source
    out.append(("wrong_source", spoof))
    out.append(("unsigned", fresh()))
    return out


async def test_every_bad_input_is_dead_lettered_with_its_reason(broker_spec: BrokerSpec) -> None:
    keys = Keys(orders=["orders-1"], billing=["billing-1"])
    ns = unique("sg") + "."
    consumer = App("consumer", config=config(broker_spec, ns, keys.security(None)))
    plain = App("plain", config=config(broker_spec, ns))  # no security: forges, and reads the dead letters
    handled: list[tuple[Any, str | None]] = []
    dead: list[Event] = []

    @consumer.subscribe("orders")
    async def on_order(order: dict[str, Any], ctx: Context) -> None:
        handled.append((order, ctx.sender))

    @plain.subscribe("orders.dlq")
    async def on_dead(event: Event) -> None:
        dead.append(event)

    cases = bad_events(keys)
    good = signer(keys, "orders", "orders-1").sign(Event("shop.order", "/orders", {"n": 99}))
    async with plain, consumer:
        for _, event in cases:
            await plain.broker.publish("orders", event)
        await plain.broker.publish("orders", good)
        await wait_for(lambda: len(dead) == len(cases) and handled, timeout=60, what="dead letters and the good one")
    assert handled == [({"n": 99}, "orders")], "the consumer kept running and the good event got through"
    reasons = {e.id: str(e.extensions["mesherror"]) for e in dead}
    for code, event in cases:
        assert reasons[event.id].startswith(code + ":"), (code, reasons[event.id])
    expected: dict[str, int] = {}
    for code, _ in cases:
        expected[code] = expected.get(code, 0) + 1
    assert dict(rejections(consumer.runtime)) == expected
    assert all("dssematerial" in e.extensions for e in dead if e.extensions.get("mesherror", "").startswith("tampered"))


async def test_acl_scopes_and_rotation_act_on_the_verified_signer(broker_spec: BrokerSpec) -> None:
    keys = Keys(orders=["orders-1", "orders-2"], billing=["billing-1"], audit=["audit-1"])
    ns = unique("id") + "."
    scopes = {"publish": {"orders": ["orders", "orders.*"], "audit": ["audit"]}, "subscribe": {"audit": ["audit"]}}
    extra = {"invoke": {"allow": {"charge": ["orders"]}}}
    billing = App("billing", config=config(broker_spec, ns, keys.security("billing-1", scopes=scopes), **extra))
    old = App("orders", config=config(broker_spec, ns, keys.security("orders-1", scopes=scopes)))
    new = App("orders", config=config(broker_spec, ns, keys.security("orders-2", scopes=scopes)))
    audit = App("audit", config=config(broker_spec, ns, keys.security("audit-1", scopes=scopes)))
    plain = App("plain", config=config(broker_spec, ns))
    senders: list[str | None] = []
    dead: list[Event] = []

    @billing.subscribe("orders.created")
    async def on_created(ctx: Context) -> None:
        senders.append(ctx.sender)

    @billing.method()
    async def charge(amount: int, ctx: Context) -> str:
        return f"{ctx.sender} charged {amount}"

    @plain.subscribe("orders.created.dlq")
    async def on_dead(event: Event) -> None:
        dead.append(event)

    async with plain, billing, old, new, audit:
        await old.publish("orders.created", {"n": 1}, type="t")  # the old key still verifies (rotation)
        await new.publish("orders.created", {"n": 2}, type="t")
        await wait_for(lambda: len(senders) == 2, timeout=60, what="both keys' events")
        assert senders == ["orders", "orders"]
        assert await new.invoke("billing", "charge", 5, timeout=30) == "orders charged 5"
        with pytest.raises(PermissionDenied):
            await audit.invoke("billing", "charge", 5, timeout=30)  # signed by audit: not on the ACL
        with pytest.raises(ScopeError):
            await audit.publish("orders.created", {"n": 3}, type="t")  # its own publish scope
        forged = signer(keys, "audit", "audit-1")
        forged.scopes = SecurityConfig().scopes  # a signer that ignores its scopes
        await plain.broker.publish("orders.created", forged.sign(Event("t", "/audit", {"n": 4})))
        await wait_for(lambda: len(dead) == 1, timeout=60, what="the out-of-scope event's dead letter")
    assert str(dead[0].extensions["mesherror"]).startswith("scope:")
    assert rejections(billing.runtime)["scope"] == 1
    assert senders == ["orders", "orders"]


async def test_subscribe_scope_stops_an_app_at_start(memory_spec: BrokerSpec) -> None:
    keys = Keys(audit=["audit-1"])
    scopes = {"subscribe": {"audit": ["audit"]}}
    app = App("audit", config=config(memory_spec, "", keys.security("audit-1", scopes=scopes)))

    @app.subscribe("payments")
    async def on_payment(event: Event) -> None: ...

    with pytest.raises(Exception, match="may not subscribe to 'payments'"):
        await app.start()


async def test_an_unsigned_request_is_answered_permission_denied(memory_spec: BrokerSpec) -> None:
    keys = Keys(billing=["billing-1"])
    billing = App("billing", config=config(memory_spec, "", keys.security("billing-1")))
    caller = App("orders", config=config(memory_spec, ""))

    @billing.method()
    async def charge(amount: int) -> int:
        return amount

    async with billing, caller:
        with pytest.raises(PermissionDenied, match="unsigned"):
            await caller.invoke("billing", "charge", 1, timeout=10)
    assert rejections(billing.runtime)["unsigned"] == 1


async def test_a_forged_heartbeat_does_not_make_an_app_look_live(memory_spec: BrokerSpec) -> None:
    from mesh.extensions import PRESENCE_TOPIC
    from mesh.invoke.presence import HEARTBEAT

    keys = Keys(billing=["billing-1"])
    caller = App("orders", config=config(memory_spec, "", keys.security(None)))
    intruder = App("intruder", config=config(memory_spec, ""))
    async with caller, intruder:
        await caller.presence.listen()
        forged = Event(
            HEARTBEAT,
            "/billing",
            {"app": "billing", "instance": "billing-x", "version": "0", "methods": [], "subscriptions": []},
            subject="billing-x",
        )
        await intruder.broker.publish_ephemeral(PRESENCE_TOPIC, forged)
        billing = App("billing", config=config(memory_spec, "", keys.security("billing-1")))

        @billing.method()
        async def charge(amount: int) -> int:
            return amount

        async with billing:  # the real, signed heartbeat is believed
            await wait_for(lambda: caller.presence.has_live("billing"), what="billing's signed heartbeat")
            assert [i.instance for i in caller.presence.live("billing")] == [billing.instance_id]
