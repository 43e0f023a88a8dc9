"""Every README code block that is a program runs (extracted and executed, as doctests are)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
PROGRAMS = [b for b in BLOCKS if "__main__" in b]


def test_the_readme_has_programs() -> None:
    assert PROGRAMS, "the 'few lines' service is a program"


@pytest.mark.parametrize("source", PROGRAMS, ids=[f"block{i}" for i in range(len(PROGRAMS))])
def test_readme_program_runs(source: str, tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(source)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "prog.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    if "print(" in source:
        assert result.stdout.strip(), "the program prints what it handled"


def test_readme_first_commands_name_real_files() -> None:
    top = (ROOT / "README.md").read_text().split("```", 2)[1]
    assert "examples/shop.py" in top and (ROOT / "examples" / "shop.py").is_file()
