"""The secrets API and stores: env, file (folder, JSON, YAML), dotenv, plugin stores, allowed and
denied lists; and no secret value in logs, errors, reprs or ``mesh config check``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mesh import App, Event, hookimpl
from mesh.cli import cli
from mesh.components import Registry
from mesh.config import load_config
from mesh.errors import ConfigError
from mesh.security.guard import Security
from mesh.security.secrets import SecretAccessDenied, SecretNotFound
from tests.security.support import Keys, keypair
from tests.support import BrokerSpec, wait_for


def memory(spec: BrokerSpec, **more: Any) -> dict[str, Any]:
    return {"broker": spec.config(), "presence": {"enabled": False}, **more}


async def test_every_store_type_through_app_secrets(
    memory_spec: BrokerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "db-password").write_text("folder-secret\n")
    (tmp_path / "s.json").write_text(json.dumps({"api-token": "json-secret", "n": 5}))
    (tmp_path / "s.yaml").write_text("smtp: yaml-secret\n")
    (tmp_path / ".env").write_text("# comment\nexport A='dotenv a'\nB=plain # trailing\nC=\"q\"\n")
    monkeypatch.setenv("MESHTEST_PASSWORD", "env-secret")
    secrets = {
        "vault": {"type": "file", "path": str(folder), "allowed": ["db-*"]},
        "json": {"type": "file", "path": str(tmp_path / "s.json")},
        "yaml": {"type": "file", "path": str(tmp_path / "s.yaml"), "denied": ["other"]},
        "dot": {"type": "dotenv", "path": str(tmp_path / ".env")},
        "env": {"prefix": "MESHTEST_"},
        "vendor": {"type": "vendor", "region": "eu"},
    }

    class VendorStore:
        @hookimpl
        def mesh_register_components(self, registry: Registry) -> None:
            def factory(settings: Mapping[str, Any]) -> Callable[[str], str]:
                return lambda name: f"{name}@{settings['region']}"

            registry.add_secret_store("vendor", factory)

    app = App("svc", config=memory(memory_spec, secrets=secrets), plugins=[VendorStore()])
    assert await app.secrets.get("vault", "db-password") == "folder-secret"
    assert await app.secrets.get("json", "api-token") == "json-secret"
    assert await app.secrets.get("json", "n") == "5"
    assert await app.secrets.get("yaml", "smtp") == "yaml-secret"
    assert await app.secrets.get_many("dot", ["A", "B", "C"]) == {"A": "dotenv a", "B": "plain", "C": "q"}
    assert await app.secrets.get("env", "PASSWORD") == "env-secret"
    assert await app.secrets.get("vendor", "key") == "key@eu"
    with pytest.raises(SecretAccessDenied, match="'api-key' is not allowed from store 'vault'"):
        await app.secrets.get("vault", "api-key")
    with pytest.raises(SecretAccessDenied):
        await app.secrets.get("yaml", "other")
    with pytest.raises(SecretNotFound, match="no secret store 'nope'"):
        await app.secrets.get("nope", "x")
    with pytest.raises(SecretNotFound, match="'missing' from store 'json'"):
        await app.secrets.get("json", "missing")


def test_the_old_secrets_shape_and_allowed_lists_apply_to_secret_refs(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k\n")
    (tmp_path / "other").write_text("o\n")
    ref = {"secretKeyRef": {"store": "file", "name": "key"}}
    cfg = load_config({"secrets": {"file": {"path": str(tmp_path)}}, "plugins": {"config": {"x": {"v": ref}}}})
    assert cfg.plugins.config["x"]["v"] == "k"
    named = {"vault": {"type": "file", "path": str(tmp_path), "allowed": ["key"]}}
    with pytest.raises(ConfigError, match="'other' is not allowed from store 'vault'"):
        load_config(
            {
                "secrets": named,
                "plugins": {"config": {"x": {"v": {"secretKeyRef": {"store": "vault", "name": "other"}}}}},
            }
        )


async def test_no_secret_value_in_logs_errors_reprs_or_config_check(
    memory_spec: BrokerSpec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = Keys(billing=["billing-1"])
    private = keys.pairs["billing-1"][0]
    aes = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="  # base64 of 32 'A's
    (tmp_path / "billing-ed25519").write_text(private + "\n")
    (tmp_path / "aes").write_text(aes)
    (tmp_path / "db-password").write_text("hunter2-very-secret\n")
    values = [private, aes, "hunter2-very-secret"]
    security = {
        "signing": {"key": {"secretKeyRef": {"store": "vault", "name": "billing-ed25519"}}, "key_id": "billing-1"},
        "trust": keys.trust(),
        "require_signed": True,
        "encryption": {"keys": {"k1": {"secretKeyRef": {"store": "vault", "name": "aes"}}}, "topics": {"pay": "k1"}},
    }
    conf = memory(memory_spec, secrets={"vault": {"type": "file", "path": str(tmp_path)}}, security=security)
    caplog.set_level(logging.DEBUG)
    app = App("billing", config=conf)
    forger = App("orders", config=memory(memory_spec))
    dead: list[Event] = []

    @app.subscribe("pay")
    async def on_pay(event: Event) -> None:
        raise RuntimeError("handler failed")

    @forger.subscribe("pay.dlq")
    async def on_dead(event: Event) -> None:
        dead.append(event)

    async with forger, app:
        password = await app.secrets.get("vault", "db-password")
        await app.publish("pay", {"card": "4111"}, type="t")  # encrypted, signed, fails, dead-lettered
        fake = Security(
            "billing", load_config({"security": {"signing": {"key": keypair()[0], "key_id": "billing-1"}}}).security
        )
        await forger.broker.publish("pay", fake.sign(Event("t", "/billing", {"x": 1})))
        await wait_for(lambda: len(dead) == 2, what="both dead letters")
        with pytest.raises(SecretNotFound) as missing:
            await app.secrets.get("vault", "nothing-here")
    assert password == "hunter2-very-secret"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"secrets: {{vault: {{type: file, path: {tmp_path}}}}}\n"
        "security: {signing: {key: {secretKeyRef: {store: vault, name: db-password}}, key_id: x}}\n"
    )
    with pytest.raises(ConfigError) as bad_key:
        App("billing", config=str(bad))
    good = tmp_path / "good.yaml"
    good.write_text(
        f"secrets: {{vault: {{type: file, path: {tmp_path}}}}}\n"
        "security: {signing: {key: {secretKeyRef: {store: vault, name: billing-ed25519}}, key_id: x}}\n"
    )
    runner = CliRunner()
    checks = [runner.invoke(cli, ["config", "check", str(p)]) for p in (good, bad)]
    assert checks[0].exit_code == 0
    texts = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    texts += [repr(app.config), str(app.config), repr(app.secrets), repr(app.plugin_state["signing"]), repr(app)]
    texts += [str(missing.value), str(bad_key.value), *(c.output for c in checks)]
    texts += [json.dumps(e.attributes(), default=str) for e in dead]
    assert any("rejected" in t for t in texts), "the failing run logged its rejection"
    for text in texts:
        for value in values:
            assert value not in text
    assert dead[0].data != {"card": "4111"}, "the dead letter of an encrypted event stays encrypted"
