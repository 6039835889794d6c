"""``costwarden demo``: the whole product on one machine with nothing else installed.

Starts the bundled mock upstream and a gateway on SQLite, creates a demo org and key, sends
requests in both wire formats (streamed and not), prints the spend table from the ledger and
keeps serving until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvicorn
from rich.console import Console

from costwarden.app.factory import create_app
from costwarden.app.logs import configure_logging
from costwarden.app.server import uvicorn_config
from costwarden.config.settings import load_settings
from costwarden.mock import serve_mock
from costwarden.mock.config import mock_gateway_toml
from costwarden.storage import repo
from costwarden.storage.usage import usage_report

_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "OpenAI chat",
        "/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Say hello to costwarden."}],
        },
    ),
    (
        "OpenAI chat, streamed",
        "/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "stream": True,
            "max_tokens": 12,
            "messages": [{"role": "user", "content": "Stream a short haiku."}],
        },
    ),
    (
        "OpenAI embeddings",
        "/v1/embeddings",
        {
            "model": "text-embedding-3-small",
            "input": ["budgets", "rate limits"],
        },
    ),
    (
        "Anthropic messages",
        "/v1/messages",
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "What does a cost gateway do?"}],
        },
    ),
    (
        "Anthropic messages, streamed",
        "/v1/messages",
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 16,
            "stream": True,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Count to five."}],
        },
    ),
]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_demo(*, data_dir: str, port: int, once: bool, console: Console) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(Path(data_dir), port, once, console))
    console.print("demo stopped.")


async def _demo(data: Path, port: int, once: bool, console: Console) -> None:
    data.mkdir(parents=True, exist_ok=True)
    if port and not _port_free(port):
        console.print(f"port {port} is busy; using a free one")
        port = 0
    async with serve_mock(host="127.0.0.1", port=0) as mock:
        config_path = data / "costwarden.toml"
        config_path.write_text(
            mock_gateway_toml(
                mock.base_url,
                f"sqlite:///{(data / 'costwarden.db').resolve()}",
                port=port or 4000,
                credentials=False,
                header=f"# Written by `costwarden demo`. Reuse it: "
                f"costwarden usage --config {config_path}\n",
            ),
            encoding="utf-8",
        )
        settings = load_settings(config_path)
        settings.server.port = port
        app = create_app(settings)
        configure_logging("warning", app.secrets())
        server = uvicorn.Server(uvicorn_config(app, settings))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                await serving
                raise SystemExit(3)
            await asyncio.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{bound}"
        key, record = await asyncio.to_thread(
            repo.create_key, app.engine, org="demo", project="quickstart", name="demo key"
        )
        app.keys.apply([record])
        console.print(f"[bold]costwarden demo[/]: gateway {base}, mock upstream {mock.base_url}")
        await _send_requests(base, key, console)
        await app.ledger.flush()
        report = await asyncio.to_thread(usage_report, app.engine, org="demo")
        from costwarden.cli.common import print_usage

        print_usage(report, console, title="demo spend (from the ledger)")
        _print_snippets(console, base, key, config_path)
        if once:
            server.should_exit = True
        await serving


async def _send_requests(base: str, key: str, console: Console) -> None:
    headers = {"authorization": f"Bearer {key}", "x-costwarden-tags": "source=demo"}
    async with aiohttp.ClientSession() as http:
        with console.status("sending demo requests…"):
            for label, path, body in _REQUESTS:
                async with http.post(base + path, data=orjson.dumps(body), headers=headers) as r:
                    raw = await r.read()
                    cost = r.headers.get("x-costwarden-cost-usd", "billed at stream end")
                    detail = "stream" if body.get("stream") else f"${cost}"
                    console.print(
                        f"  {label:<30} {r.status}  {len(raw):>6} bytes  {detail}",
                        highlight=False,
                    )


def _print_snippets(console: Console, base: str, key: str, config_path: Path) -> None:
    text = f"""Base URL: {base}/v1
Key:      {key}

curl {base}/v1/chat/completions \\
  -H "Authorization: Bearer {key}" -H "content-type: application/json" \\
  -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "hi"}}]}}'

from openai import OpenAI
client = OpenAI(base_url="{base}/v1", api_key="{key}")
print(client.chat.completions.create(model="gpt-4o-mini",
      messages=[{{"role": "user", "content": "hi"}}]).choices[0].message.content)

from anthropic import Anthropic
client = Anthropic(base_url="{base}", api_key="{key}")

Spend so far:  costwarden usage --config {config_path}
Press Ctrl-C to stop."""
    # Plain text, soft-wrapped: the snippets must survive copy-paste from any terminal width.
    console.rule("try it")
    console.print(text, highlight=False, soft_wrap=True, markup=False)
