"""Running the gateway under uvicorn (uvloop + httptools), with graceful SIGTERM.

uvicorn stops accepting connections on SIGTERM/SIGINT, lets in-flight requests finish, then
runs the app's shutdown, which drains the ledger: no usage record is lost.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn

from costwarden.app import CostwardenApp, create_app
from costwarden.logs import configure_logging
from costwarden.settings import Settings

logger = logging.getLogger(__name__)


def uvicorn_config(app: CostwardenApp, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        # Nothing reads the client's address, so trusting X-Forwarded-For from a local
        # proxy would buy nothing and cost a middleware call on every request.
        proxy_headers=False,
        log_config=None,
        server_header=False,
        date_header=False,
        backlog=4096,
        timeout_keep_alive=30,
    )


class _Server(uvicorn.Server):
    """Ends live event streams (``/admin/events``) when a shutdown signal arrives: uvicorn
    waits for open responses to finish before it shuts the app down, and an event stream
    never finishes by itself, so one open dashboard would otherwise hold SIGTERM up until
    the supervisor kills the process, ledger rows unwritten."""

    def __init__(self, config: uvicorn.Config, app: CostwardenApp) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # A signal handler may run in the middle of the loop's own work: schedule, not call.
        loop.call_soon_threadsafe(self._app.events.close)


def serve(settings: Settings) -> None:
    app = create_app(settings)
    configure_logging(settings.server.log_level, app.secrets())
    server = _Server(uvicorn_config(app, settings), app)
    logger.info("listening on http://%s:%d", settings.server.host, settings.server.port)
    server.run()
    if not server.started:
        raise SystemExit(3)
