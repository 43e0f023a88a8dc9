"""The long fuzz campaign of the codecs: tests/fuzz with many examples, round after round.

    python -m benchmarks.fuzz --minutes 30 [--examples 2000]

Each round runs ``pytest tests/fuzz`` in a fresh process with ``MESH_FUZZ_EXAMPLES`` examples
per test and a new hypothesis seed, until the time is up; the first failure stops the campaign
and prints the failing example (hypothesis keeps it in ``.hypothesis/`` so the CI-sized run
replays it). The invariant checked: for any input, every decoding entry point returns an event
or raises ``DecodeError``, and whatever it returns can be encoded again (see docs/fuzzing.md).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_round(examples: int, seed: int, timeout: float) -> int | None:
    """One pytest run of tests/fuzz; its exit code, or None when the time ran out first."""
    env = {**os.environ, "MESH_FUZZ_EXAMPLES": str(examples)}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-o", "timeout=0"]
    command += [f"--hypothesis-seed={seed}", "tests/fuzz"]
    try:
        return subprocess.run(command, cwd=ROOT, env=env, timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        return None


def main(argv: list[str] | None = None) -> int:
    """Fuzz until ``--minutes`` have passed or a test fails; the exit code says which."""
    parser = argparse.ArgumentParser(description="Long fuzz campaign of every codec entry point")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to fuzz")
    parser.add_argument("--examples", type=int, default=2000, help="examples per test and round")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.minutes * 60
    rounds = 0
    while (left := deadline - time.monotonic()) > 1:
        seed = random.randrange(2**32)
        print(f"round {rounds + 1}: seed {seed}, {args.examples} examples per test", flush=True)
        code = run_round(args.examples, seed, left)
        if code is None:
            break
        if code != 0:
            print(f"FAILED in round {rounds + 1} (seed {seed}): see the example above", flush=True)
            return 1
        rounds += 1
    print(f"done: {rounds} full round(s) of {args.examples} examples per test, no failure", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
