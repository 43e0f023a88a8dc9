"""One App instance firing jobs, for the multi-process tests: ``python -m tests.jobs.worker CONFIG_JSON``.

Prints ``ready <instance id>`` once started and runs until SIGTERM (a clean stop) or SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import sys

from mesh import App


async def main(config: str) -> None:
    conf = json.loads(config)
    app = App(conf.pop("app"), config=conf)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(15, stop.set)
    async with app:
        print("ready", app.instance_id, flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
