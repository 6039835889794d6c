"""LiteLLM's proxy beside the gateway: its own virtualenv, its config and its process.

The virtualenv (``bench/.litellm-venv``, git-ignored) is made on first use and kept while it
holds the pinned versions. The proxy routes ``gpt-4o-mini`` to the same mock as the gateway,
with one worker, no database, a master key (so it authenticates, as the gateway does) and
quiet logs, and is checked to answer both benchmark bodies before anything is measured.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import shutil
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

import stack
from loadgen import BenchError
from rich.markup import escape
from rich.progress import Progress
from session import BODY, PATH, STREAM_BODY, Bench, auth_headers

# litellm[proxy]==1.95.0 alone resolves to the newest fastapi, whose
# fastapi.dependencies.utils no longer has get_flat_dependant, which the proxy imports at
# start (0.140.5 has it, 0.140.13 and later do not); with fastapi 0.118.0 it does not resolve
# at all (litellm 1.95.0 asks for fastapi>=0.136.3). Everything else is what pip resolves.
PINS = {"litellm": "1.95.0", "fastapi": "0.140.5"}
REQUIREMENTS = [f"litellm[proxy]=={PINS['litellm']}", f"fastapi=={PINS['fastapi']}"]
PINNED = escape(" ".join(REQUIREMENTS))  # as rich markup: "[proxy]" is no style
VENV = Path(__file__).resolve().parent / ".litellm-venv"
NAME = "LiteLLM proxy"
MASTER_KEY = "sk-costwarden-bench-litellm"
INSTALL_TIMEOUT_S = 1800.0
START_TIMEOUT_S = 180.0  # importing the proxy takes a while on a busy 2-core machine
# Versions reported beside the results (its HTTP stack, as the gateway's are).
REPORTED = ("litellm", "fastapi", "starlette", "uvicorn", "uvloop", "aiohttp", "httpx", "openai")

# Nothing may reach the network: local copies of what LiteLLM would otherwise download at
# start (cost map, Anthropic beta headers, blog posts, policy templates), no telemetry, and
# only errors logged. The access log is switched off by LOG_CONFIG.
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "NO_PROXY": "127.0.0.1,localhost",
}
# A developer's shell must not give it a database, a Redis or other settings.
_DROPPED_PREFIXES = ("LITELLM_", "DATABASE_", "DIRECT_URL", "REDIS_", "PROMETHEUS_")

LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
    "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "uvicorn": {"handlers": ["err"], "level": "WARNING", "propagate": False},
        "uvicorn.error": {"level": "WARNING"},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}


@dataclasses.dataclass
class LiteLLM:
    service: stack.Service
    port: int
    versions: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://{stack.HOST}:{self.port}{PATH}"

    @property
    def version(self) -> str:
        return self.versions.get("litellm", "unknown")


def venv_python() -> Path:
    return VENV / "bin" / "python"


def installed_versions() -> dict[str, str] | None:
    """The reported packages' versions in the virtualenv, or None if it is not usable."""
    if not venv_python().exists():
        return None
    code = (
        "import json, importlib.metadata as m\n"
        "def v(n):\n"
        "    try:\n        return m.version(n)\n"
        "    except m.PackageNotFoundError:\n        return None\n"
        f"print(json.dumps({{n: v(n) for n in {REPORTED!r}}}))"
    )
    try:
        done = subprocess.run(
            [str(venv_python()), "-c", code], capture_output=True, text=True, timeout=60
        )
        found = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    if not isinstance(found, dict):
        return None
    return {k: v for k, v in found.items() if isinstance(v, str)}


def ensure_venv(progress: Progress) -> dict[str, str]:
    """The virtualenv with the pinned versions (made or remade if needed): its versions."""
    found = installed_versions()
    if found and all(found.get(name) == version for name, version in PINS.items()):
        return found
    shutil.rmtree(VENV, ignore_errors=True)
    task = progress.add_task(f"creating {VENV.name}", total=None)
    try:
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True, timeout=300
        )
        if made.returncode != 0:
            raise BenchError(f"python -m venv failed: {made.stderr.strip()}")
        _pip_install(progress, task)
    finally:
        progress.remove_task(task)
    found = installed_versions()
    if not found or any(found.get(name) != version for name, version in PINS.items()):
        raise BenchError(f"{VENV} does not hold {', '.join(REQUIREMENTS)} after pip install")
    return found


def _pip_install(progress: Progress, task: int) -> None:
    """pip install the pins from the package registry, its progress shown line by line."""
    log = VENV / "pip-install.log"
    cmd = [str(venv_python()), "-m", "pip", "install", "--progress-bar", "off", *REQUIREMENTS]
    last: deque[str] = deque(maxlen=15)
    collected = 0
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        watchdog = threading.Timer(INSTALL_TIMEOUT_S, expire)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                text = line.strip()
                if not text or text.startswith("WARNING: Location"):
                    continue  # pip's notes on absent local indexes: noise
                last.append(text)
                collected += text.startswith("Collecting ")
                what = escape(text if len(text) < 70 else text[:67] + "...")
                desc = f"pip install {PINNED}: {collected} packages; {what}"
                progress.update(task, description=desc)
            code = proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if expired.is_set():
        raise BenchError(f"pip install took over {INSTALL_TIMEOUT_S:g}s (log {log})")
    if code != 0:
        tail = "\n".join(last)
        raise BenchError(f"pip install exited {code} (log {log}):\n{tail}")


def _env() -> dict[str, str]:
    env = {k: v for k, v in stack.clean_env().items() if not k.startswith(_DROPPED_PREFIXES)}
    return {**env, **OFFLINE_ENV}


def write_config(path: Path, mock_port: int) -> Path:
    """gpt-4o-mini to the mock's OpenAI API, a master key, no database (JSON is YAML)."""
    config = {
        "model_list": [
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": f"http://{stack.HOST}:{mock_port}/v1",
                    "api_key": stack.UPSTREAM_ENV["OPENAI_API_KEY"],
                },
            }
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": {"set_verbose": False, "json_logs": False},
    }
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def start(bench: Bench, versions: dict[str, str]) -> LiteLLM:
    """Start the proxy (one uvicorn worker), wait for it, check both bodies answer 200."""
    port = stack.free_port()
    config = write_config(bench.tmp / "litellm.yaml", bench.mock_port)
    log_config = bench.tmp / "litellm-logging.json"
    log_config.write_text(json.dumps(LOG_CONFIG), encoding="utf-8")
    cmd = [
        str(VENV / "bin" / "litellm"),
        "--config", str(config),
        "--host", stack.HOST,
        "--port", str(port),
        "--num_workers", "1",
        "--telemetry", "False",
        "--log_config", str(log_config),
    ]  # fmt: skip
    service = stack.Service(NAME, cmd, bench.tmp / "litellm.log", _env())
    bench.services.append(service)
    stack.wait_ready(service, port, "/health/liveliness", timeout=START_TIMEOUT_S)
    for body, streamed in ((BODY, False), (STREAM_BODY, True)):
        answer_check(port, body, streamed)
    return LiteLLM(service, port, versions)


def answer_check(port: int, body: str, streamed: bool) -> None:
    """One request must come back 200 with content (and ``data: [DONE]`` when streamed)."""
    conn = http.client.HTTPConnection(stack.HOST, port, timeout=60)
    try:
        conn.request("POST", PATH, body=body.encode(), headers=auth_headers(MASTER_KEY))
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"{NAME} did not answer a {_kind(streamed)} request: {exc}") from None
    finally:
        conn.close()
    if resp.status != 200:
        text = data[:300].decode(errors="replace")
        raise BenchError(f"{NAME} answered {resp.status} to a {_kind(streamed)} request: {text}")
    if streamed and not data.rstrip().endswith(b"data: [DONE]"):
        raise BenchError(f"{NAME}'s stream did not end with data: [DONE]: {data[-200:]!r}")
    if not streamed and b'"content"' not in data:
        raise BenchError(f"{NAME}'s answer has no content: {data[:300]!r}")


def _kind(streamed: bool) -> str:
    return "streaming" if streamed else "non-streaming"


def maybe_start(bench: Bench) -> LiteLLM | None:
    """Install and start LiteLLM; on failure a note, and the benchmark goes on without it."""
    service_count = len(bench.services)
    try:
        versions = bench.phase(
            f"{VENV.name}: {' '.join(REQUIREMENTS)} (installing if missing)",
            lambda: ensure_venv(bench.progress),
        )
        return bench.phase(
            f"{NAME} {versions.get('litellm')} started (1 worker, no database, master key)",
            lambda: start(bench, versions),
        )
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        bench.notes.append(f"{NAME}: {str(exc).splitlines()[0]}")
        bench.progress.console.print(
            f"[bold yellow]! {NAME} not measured: {escape(str(exc))}[/]", highlight=False
        )
        for service in bench.services[service_count:]:
            bench.progress.console.print(service.tail(20), markup=False, highlight=False)
            service.kill()
        del bench.services[service_count:]
        return None


if __name__ == "__main__":  # make the virtualenv ahead of a run: python bench/litellm_proxy.py
    with Progress() as bar:
        print(json.dumps(ensure_venv(bar), indent=2))
