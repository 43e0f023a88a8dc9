"""Config: YAML, substitution, secrets, validation with paths, the JSON Schema, ``mesh config check``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mesh.cli import cli
from mesh.config import MeshConfig, config_schema, load_config
from mesh.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    return path


def test_no_file_means_memory_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MESH_CONFIG", raising=False)
    cfg = load_config()
    assert cfg.broker.type == "memory" and cfg.broker.options == {}


def test_mesh_config_env_and_local_file_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "broker: {type: memory, options: {name: local}}\n")
    monkeypatch.delenv("MESH_CONFIG", raising=False)
    assert load_config().broker.options == {"name": "local"}
    other = tmp_path / "other.yaml"
    other.write_text("broker: {type: memory, options: {name: other}}\n")
    monkeypatch.setenv("MESH_CONFIG", str(other))
    assert load_config().broker.options == {"name": "other"}


def test_substitution_with_defaults_and_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "broker:\n  type: ${KIND:memory}\n  url: memory://${HUB}\n  options:\n    retention: ${KEEP}\n    name: $${literal}\n",
    )
    cfg = load_config(path, env={"HUB": "h1", "KEEP": "5"})
    assert cfg.broker.url == "memory://h1"
    assert cfg.broker.options == {"retention": 5, "name": "${literal}"}


def test_every_problem_is_reported_with_path_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "broker:\n  type: memory\n  url: ${MISSING}\n  options:\n    retention: lots\n    bogus: 1\n"
        "defaults:\n  retry: {attempts: 0, initial: soon}\nsurprise: true\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    text = str(info.value)
    assert str(path) in text
    for expected in (
        "broker.url (line 3): environment variable 'MISSING' is not set",
        "broker.options.retention (line 5)",
        "broker.options.bogus (line 6): unknown key",
        "defaults.retry.attempts (line 8)",
        "defaults.retry.initial (line 8): not a duration",
        "surprise (line 9): unknown key",
    ):
        assert expected in text, expected
    assert len(info.value.problems) == 6


def test_unknown_broker_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"broker\.type"):
        load_config({"broker": {"type": "kafkaa"}})


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line \d+: invalid YAML"):
        load_config(write(tmp_path, "broker:\n  type: [memory\n"))


def test_secrets_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hub").write_text("from-file\n")
    monkeypatch.setenv("HUB_URL", "memory://from-env")
    cfg = load_config(
        {
            "secrets": {"file": {"path": str(tmp_path / "secrets")}},
            "broker": {
                "url": {"secretKeyRef": {"store": "env", "name": "HUB_URL"}},
                "options": {"name": {"secretKeyRef": {"store": "file", "name": "hub"}}},
            },
        }
    )
    assert cfg.broker.url == "memory://from-env" and cfg.broker.options == {"name": "from-file"}


def test_unresolvable_secrets_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(
            {
                "secrets": {"file": {"path": str(tmp_path)}},
                "broker": {
                    "url": {"secretKeyRef": {"store": "env", "name": "NOPE"}},
                    "namespace": {"secretKeyRef": {"store": "vault", "name": "x"}},
                    "options": {"name": {"secretKeyRef": {"store": "file", "name": "../etc/passwd"}}},
                },
            }
        )
    text = str(info.value)
    assert "broker.url.secretKeyRef: secret 'NOPE' from store 'env'" in text
    assert "unknown secret store 'vault'" in text
    assert "plain file name" in text


def test_subscription_settings_overlay_defaults() -> None:
    cfg = load_config(
        {
            "defaults": {"concurrency": 2, "retry": {"attempts": 4}},
            "subscriptions": {"pay": {"dead_letter": "pay.failed"}},
        }
    )
    pay = cfg.for_topic("pay")
    assert (pay.concurrency, pay.retry.attempts if pay.retry else None, pay.dead_letter) == (2, 4, "pay.failed")
    assert cfg.for_topic("other").dead_letter is None


def test_durations_accept_units() -> None:
    retry = load_config({"defaults": {"retry": {"initial": "250ms", "max": "2m"}}}).defaults.retry
    assert retry is not None and (retry.initial, retry.max) == (0.25, 120.0)


def test_models_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        MeshConfig().broker.type = "kafka"  # type: ignore[misc]


def test_json_schema_in_schemas_is_current() -> None:
    committed = (ROOT / "schemas" / "mesh-config.schema.json").read_text()
    assert committed == config_schema(), "regenerate with: mesh config schema > schemas/mesh-config.schema.json"


def test_every_example_config_is_valid() -> None:
    files = sorted((ROOT / "examples" / "config").glob("*.yaml"))
    assert files
    for path in files:
        load_config(path, env={})


def test_cli_config_check(tmp_path: Path) -> None:
    runner = CliRunner()
    good = write(tmp_path, "broker: {type: memory}\n")
    result = runner.invoke(cli, ["config", "check", str(good)])
    assert result.exit_code == 0 and "ok:" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("broker: {type: memory, options: {retention: x}}\n")
    result = runner.invoke(cli, ["config", "check", str(bad)])
    assert result.exit_code == 1
    assert "broker.options.retention (line 1)" in result.output
    assert "Traceback" not in result.output


def test_a_misspelt_key_is_reported_at_its_own_path_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(
        "broker:\n  type: redis\n  optons: {}\ndefaults:\n  retry: {attemps: 3}\n"
        "subscriptions:\n  orders: {concurency: 2}\nbrokr2: 1\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "broker.optons (line 3): unknown key; did you mean 'options'?" in text
    assert "defaults.retry.attemps (line 5): unknown key; did you mean 'attempts'?" in text
    assert "subscriptions.orders.concurency (line 7): unknown key; did you mean 'concurrency'?" in text
    path.write_text("broker:\n  type: redis\n  options: {bach: 3}\n")
    with pytest.raises(ConfigError, match=r"broker\.options\.bach \(line 3\): unknown key; did you mean 'batch'\?"):
        load_config(path)
