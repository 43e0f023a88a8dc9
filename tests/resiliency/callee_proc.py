"""A callee instance in its own process (run inside a network namespace by the partition tests).

``python -m tests.resiliency.callee_proc <app id>`` with the config as JSON in ``MESH_TEST_CONFIG``;
prints ``ready <instance id>`` once serving, and stops when its stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from mesh import App


async def main(app_id: str) -> None:
    app = App(app_id, config=json.loads(os.environ["MESH_TEST_CONFIG"]))

    @app.method("echo", idempotent=True)
    async def echo(n: int) -> dict[str, object]:
        return {"n": n, "by": app.instance_id}

    async with app:
        print("ready", app.instance_id, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
        os._exit(0)  # a partitioned broker connection would hold a clean stop for its full timeout


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
