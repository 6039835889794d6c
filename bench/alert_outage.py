#!/usr/bin/env python
"""An alert's webhook receiver down for minutes: the alert arrives once after it is back.

    python bench/alert_outage.py [--down 120]

One real gateway process (``costwarden serve``, embedded SQLite, the default retry schedule:
10 s, then doubling) and a signature-verifying webhook receiver that answers 503 for
``--down`` seconds. Two requests spend half of a $2 daily budget, which fires the 50 % alert at
once; the receiver comes back after ``--down`` seconds. Prints every attempt of the delivery
log, when the alert arrived, and how many verified copies the receiver got (it must be one).
The test suite checks the same with a 0.2 s schedule; this is the real one, in real time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from standardwebhooks import Webhook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import (  # noqa: E402
    PRICEY,
    free_port,
    gateway_toml,
    spawn_gateway,
    stop_gateway,
    wait_healthy,
)

from costwarden.alerts.model import Channel  # noqa: E402
from costwarden.mock import serve_mock  # noqa: E402
from costwarden.mock.server import MockState  # noqa: E402
from costwarden.storage import alert_deliveries as deliveries  # noqa: E402
from costwarden.storage import alerts as store  # noqa: E402
from costwarden.storage import repo  # noqa: E402
from costwarden.storage.db import create_engine_for  # noqa: E402
from costwarden.storage.migrate import migrate  # noqa: E402
from costwarden.storage.policy import set_limits  # noqa: E402

SECRET = "whsec_" + base64.b64encode(b"alert-outage-bench-key-0123456789").decode()


async def main(down: float) -> int:
    verified: list[float] = []
    refused: list[float] = []
    started = time.monotonic()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if time.monotonic() - started < down:
            refused.append(time.monotonic() - started)
            return web.Response(status=503)
        Webhook(SECRET).verify(body, dict(request.headers))
        verified.append(time.monotonic() - started)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    tmp = Path(tempfile.mkdtemp(prefix="costwarden-alert-outage-"))
    url = f"sqlite:///{tmp / 'cw.db'}"
    engine = create_engine_for(url)
    migrate(engine)
    key, _ = repo.create_key(engine, org="acme")
    set_limits(engine, org="acme", scope="org", subject="", amounts={"daily_usd": "2"})
    store.save_channel(
        engine,
        Channel(id="", name="ops", type="webhook", url=f"http://127.0.0.1:{hook_port}/hook",
                secret=SECRET),
        actor="bench",
    )  # fmt: skip
    # About $1 a request with PRICEY's prices and 1,000-token answers: 50 % of $2 at once.
    async with serve_mock(state=MockState(output_tokens=1000)) as mock:
        port = free_port()
        config = tmp / "gw.toml"
        config.write_text(gateway_toml(mock.base_url, url, port=port, extra=PRICEY))
        proc = spawn_gateway(config, tmp / "gw.log")
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(base, proc, tmp / "gw.log")
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{base}/v1/chat/completions", json=body,
                    headers={"authorization": f"Bearer {key}"},
                ) as r:
                    print(f"request: {r.status}, cost ${r.headers.get('x-costwarden-cost-usd')}")
            print(f"receiver down for {down:.0f} s; waiting for the alert...")
            deadline = down + 300
            while not verified and time.monotonic() - started < deadline:
                await asyncio.sleep(1)
            await asyncio.sleep(15)  # any duplicate would come now
        finally:
            stop_gateway(proc)
            await runner.cleanup()
    (alert,) = store.list_alerts(engine)
    (log,) = deliveries.delivery_log(engine, alert_id=alert.id)
    engine.dispose()
    print(f"alert {alert.id}: {alert.title}")
    for attempt in log["attempts"]:
        print(f"  attempt {attempt['attempt']} at {attempt['at']}: status {attempt['status']}"
              f" {attempt['error'] or ''}")
    print(f"refused while down: {len(refused)} (at {', '.join(f'{t:.0f}' for t in refused)} s)")
    print(f"verified copies received: {len(verified)}"
          + (f", the first {verified[0]:.0f} s after the start" if verified else ""))
    return 0 if len(verified) == 1 and log["state"] == "delivered" else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--down", type=float, default=120.0)
    sys.exit(asyncio.run(main(parser.parse_args().down)))
