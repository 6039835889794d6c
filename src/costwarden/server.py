"""Running the gateway under uvicorn (uvloop + httptools), with graceful SIGTERM.

uvicorn stops accepting connections on SIGTERM/SIGINT, lets in-flight requests finish, then
runs the app's shutdown, which drains the ledger: no usage record is lost.
"""

from __future__ import annotations

import logging

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
        log_config=None,
        server_header=False,
        date_header=False,
        backlog=4096,
        timeout_keep_alive=30,
    )


def serve(settings: Settings) -> None:
    app = create_app(settings)
    configure_logging(settings.server.log_level, app.secrets())
    server = uvicorn.Server(uvicorn_config(app, settings))
    logger.info("listening on http://%s:%d", settings.server.host, settings.server.port)
    server.run()
    if not server.started:
        raise SystemExit(3)
