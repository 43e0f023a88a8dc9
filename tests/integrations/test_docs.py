"""Every program in docs/integrations.md runs (extracted and executed, as the README's are)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "integrations.md").read_text()
PROGRAMS = [b for b in re.findall(r"```python\n(.*?)```", DOC, re.S) if "__main__" in b]


def test_the_doc_has_a_program_per_integration() -> None:
    assert len(PROGRAMS) >= 4


@pytest.mark.memory
@pytest.mark.parametrize("source", PROGRAMS, ids=[f"block{i}" for i in range(len(PROGRAMS))])
def test_doc_program_runs(source: str, tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(source)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "prog.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_the_files_the_doc_names_exist() -> None:
    for name in ("Dockerfile", "examples/kubernetes/deployment.yaml", "examples/fastapi_app.py", "examples/shop.py"):
        assert name in DOC and (ROOT / name).is_file(), name
