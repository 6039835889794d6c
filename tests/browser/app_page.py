"""An app's page embedding the degradation banner as docs/status.md tells (served from
another loopback origin than the gateway's), plus a log of the ``costwarden-status`` events
it dispatches (``window.statuses``)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tests.browser.conftest import Serve

APP_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Acme Assistant</title>
<script src="{gateway}/v1/costwarden/banner.js" defer></script>
<style>
  body {{ margin: 0; font: 16px/1.5 system-ui, sans-serif; color: #1b1b1f; background: #f6f7f9; }}
  header {{ padding: .9em 1.5em; background: #1f2a44; color: #fff; font-weight: 600; }}
  main {{ max-width: 720px; margin: 2em auto; padding: 0 1em; }}
  .msg {{ background: #fff; border: 1px solid #dde1e6; border-radius: 8px; padding: .8em 1em;
          margin: .8em 0; }}
  .me {{ background: #e8f0fe; border-color: #c6d7fb; margin-left: 4em; }}
  textarea {{ width: 100%; box-sizing: border-box; height: 4.5em; font: inherit; padding: .6em;
             border: 1px solid #c1c7cd; border-radius: 8px; }}
</style>
</head>
<body>
<header>Acme Assistant</header>
<costwarden-banner src="{gateway}/v1/costwarden/status/events" key="{key}"></costwarden-banner>
<main>
  <div class="msg me">Can you summarise yesterday's support tickets?</div>
  <div class="msg">Sure: 42 tickets, most about password resets. Three are still open.</div>
  <textarea placeholder="Ask the assistant..."></textarea>
</main>
<script>
  window.statuses = [];
  document.addEventListener("costwarden-status", (e) => window.statuses.push(e.detail.status));
</script>
</body>
</html>
"""


async def app_site(serve: Serve, gateway: str, key: str) -> str:
    """The app's page, served from another loopback origin than the gateway's."""

    async def index(request: Request) -> Response:
        return HTMLResponse(APP_PAGE.format(gateway=gateway, key=key))

    return await serve(Starlette(routes=[Route("/", index)]))


