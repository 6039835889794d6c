"""``serve --workers N``: N gateway processes on one port, under uvicorn's own supervisor.

The supervisor process (this one) checks the settings, runs the migrations once, binds the
port, makes a run directory, then starts N workers with uvicorn's ``Multiprocess``
supervisor, which ``uvicorn --workers`` uses too. Each worker is a fresh interpreter (spawn,
not fork: no engine, pool or thread of the supervisor's is inherited) that builds its own app
from the settings and serves the port with the same server as ``serve`` with one worker
(``server.GatewayServer``, our protocol class, our lifespan).

**The port.** On Linux every worker listens on a socket of its own, bound with SO_REUSEPORT,
and the kernel hashes each new connection to one of them; the supervisor holds one more bound
(never listening) so the port stays ours while a worker is replaced. Measured against one
listening socket shared by the workers (as gunicorn and plain ``uvicorn --workers`` do), with
keep-alive clients: 64 connections opened at once went 275/45, 80/240 and 220/100 to the two
workers on the shared socket, 130/190, 160/160 and 185/135 with SO_REUSEPORT; a shared socket
goes to whichever worker wakes first, and a client's pooled connections stay where they
landed (a test once saw 500 requests on 20 connections all served by one worker). The price:
connections still waiting to be accepted by a worker that dies are reset, where a shared
socket would hand them to another. Elsewhere than Linux the workers share one socket.

- **SIGTERM / SIGINT**: the supervisor forwards SIGTERM to every worker and waits for them;
  each stops accepting, finishes its requests and drains its ledger, as one process does.
- **A worker that dies** (crash, OOM kill, SIGKILL) or stops answering the supervisor's
  health check (``HEALTHCHECK_SECONDS``) is killed if need be and replaced; its metrics socket
  is removed. A worker that fails its startup (exit status 3: database unreachable, port...)
  would fail the same way again: the supervisor stops the others and exits with status 3.
- **SIGHUP, SIGTTIN, SIGTTOU** (uvicorn's rolling restart and resizing) are ignored, with a
  log line: not supported here.

Why this supervisor rather than gunicorn's or a pre-fork of our own: it is the server we
already run and pin (no new dependency), it keeps our protocol class and lifetimes as they
are, and it forwards SIGTERM, health-checks and restarts workers. Granian would replace our
protocol class (its HTTP layer is its own). docs/scale-out.md has the figures.

Without Redis the budget and rate-limit counters are in each process's memory, so N workers
could each spend a hard budget in full: ``--workers`` > 1 then refuses to start.
"""

from __future__ import annotations

import logging
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import uvicorn
from sqlalchemy.exc import SQLAlchemyError
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from costwarden.app.factory import create_app
from costwarden.app.logs import configure_logging
from costwarden.app.server import GatewayServer, uvicorn_config
from costwarden.app.worker_metrics import socket_path
from costwarden.config.settings import Settings
from costwarden.core.errors import ConfigError
from costwarden.storage.migrate import migrate

logger = logging.getLogger(__name__)

# How long a worker may take to answer the supervisor's health check (a ping on a pipe,
# answered by a thread of the worker) before it is killed and replaced. Generous: a new
# worker answers only once it has imported everything and built its app, which takes a few
# seconds on a busy machine.
HEALTHCHECK_SECONDS = 30
# Each worker listens on a socket of its own (SO_REUSEPORT, Linux): the kernel hashes each
# new connection to one of them. Elsewhere the workers share the supervisor's socket.
REUSE_PORT = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def listener(host: str, port: int, *, reuse_port: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT: every worker listens on one of
    its own, and the kernel spreads new connections evenly over them. Without
    ``reuse_port``: a probe, which fails while any server listens on the port -- another
    gateway's SO_REUSEPORT workers included, which the same user's sockets could otherwise
    join unnoticed."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def workers_problem(settings: Settings) -> str | None:
    """Why ``settings`` cannot run ``server.workers`` processes, or None."""
    workers = settings.server.workers
    if workers > 1 and not settings.redis.url:
        return (
            f"{workers} workers need [redis] url (or COSTWARDEN_REDIS_URL): without Redis "
            "every worker keeps its own budget and rate-limit counters, so each could spend a "
            "hard budget in full. Set [redis] url to a Redis all workers share, or run one "
            "worker (--workers 1)"
        )
    return None


def serve_workers(settings: Settings) -> None:
    """Run ``settings.server.workers`` gateway processes on one port until SIGTERM."""
    problem = workers_problem(settings)
    if problem is not None:
        raise ConfigError(problem)
    # Built once here too, so a settings error stops the command before any worker starts
    # (and for the credentials the log must never show); never started.
    app = create_app(settings)
    configure_logging(settings.server.log_level, app.secrets(), pid=True)
    try:
        migrate(app.engine)  # once, here; the workers' own check then finds the schema at head
    except SQLAlchemyError as exc:
        logger.error("startup failed: %s", exc)  # as one process reports it
        raise SystemExit(STARTUP_FAILURE) from None
    finally:
        app.engine.dispose()
    config = uvicorn.Config(
        # Only the supervisor's part of the config is read from this one (workers, health
        # check, the socket); each worker builds its own app and config from the settings.
        "costwarden.app.factory:create_app",
        host=settings.server.host,
        port=settings.server.port,
        workers=settings.server.workers,
        timeout_worker_healthcheck=HEALTHCHECK_SECONDS,
        log_config=None,
        backlog=4096,
    )
    host, port = settings.server.host, settings.server.port
    if REUSE_PORT:
        # Held, never listened on: keeps the port ours while a worker is being replaced.
        try:
            listener(host, port, reuse_port=False).close()
            sock = listener(host, port)
        except OSError as exc:
            logger.error("cannot listen on %s:%d: %s", host, port, exc)
            raise SystemExit(STARTUP_FAILURE) from None
        shared: list[socket.socket] = []
    else:
        sock = config.bind_socket()
        shared = [sock]
    run_dir = Path(tempfile.mkdtemp(prefix="costwarden-workers-"))
    supervisor = _Supervisor(config, shared, settings, run_dir)
    logger.info(
        "%d workers on http://%s:%d (their metrics meet in %s)", config.workers, host, port, run_dir
    )
    try:
        supervisor.run()
    finally:
        sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    if supervisor.failed:
        raise SystemExit(STARTUP_FAILURE)


class _Worker(Process):
    """One worker: uvicorn's supervised process, running our server over our app."""

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], settings: Settings,
        run_dir: Path,
    ) -> None:  # fmt: skip
        # Set before uvicorn's __init__, which hands the bound target to the spawned process
        # (pickled with these when it starts).
        self.settings = settings
        self.run_dir = run_dir
        super().__init__(config, sockets)

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover
        # In the worker. The server is built before uvicorn's health-check thread starts
        # (it reads ``self.server``): that thread would otherwise build a second one.
        try:
            app = create_app(self.settings, run_dir=self.run_dir)
        except Exception:  # the supervisor built one: this should not happen, nor repeat
            logger.exception("worker could not build the app")
            raise SystemExit(STARTUP_FAILURE) from None
        configure_logging(self.settings.server.log_level, app.secrets(), pid=True)
        self._server = GatewayServer(uvicorn_config(app, self.settings), app)
        if not sockets:  # SO_REUSEPORT: this worker's own listening socket
            server = self.settings.server
            try:
                sockets = [listener(server.host, server.port)]
            except OSError as exc:
                logger.error("cannot listen on %s:%d: %s", server.host, server.port, exc)
                raise SystemExit(STARTUP_FAILURE) from None
        super().target(sockets)


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, starting our workers, cleaning up after a dead one, and stopping
    when a worker cannot start."""

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], settings: Settings,
        run_dir: Path,
    ) -> None:  # fmt: skip
        super().__init__(config, sockets)
        self.settings = settings
        self.run_dir = run_dir
        self.failed = False

    def _new_worker(self) -> _Worker:
        worker = _Worker(self.config, self.sockets, self.settings, self.run_dir)
        worker.start()
        return worker

    def init_processes(self) -> None:
        self.processes = [self._new_worker() for _ in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        # uvicorn's, but for the replacement's class, the dead worker's socket, and the
        # exit status of the supervisor when a worker cannot start.
        for idx, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # dead, or alive and not answering: killed either way
            process.join()
            if process.pid is not None:
                socket_path(self.run_dir, process.pid).unlink(missing_ok=True)
            if process.exitcode == STARTUP_FAILURE:
                logger.error(
                    "worker %s failed to start; stopping the other workers", process.pid
                )
                self.failed = True
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.warning(
                "worker %s died (exit status %s); starting another", process.pid, process.exitcode
            )
            self.processes[idx] = self._new_worker()

    def handle_hup(self) -> None:
        logger.warning("SIGHUP ignored: restart the supervisor to restart the workers")

    def handle_ttin(self) -> None:
        logger.warning("SIGTTIN ignored: the number of workers is fixed (--workers)")

    def handle_ttou(self) -> None:
        logger.warning("SIGTTOU ignored: the number of workers is fixed (--workers)")
