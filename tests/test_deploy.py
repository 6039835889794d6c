"""The deployment files hold together: Dockerfile, .dockerignore, compose.yaml and deploy/.

No container engine runs where the tests do, so the files are read rather than run by one:
compose.yaml's services, dependencies, health checks and secrets; nginx's upstreams (with
crossplane, nginx's own config parser); the Dockerfile's stages, user and health check. And
the image's recipe is followed the same way in a fresh virtualenv: the Dockerfile's COPY
lines (honouring .dockerignore), its pip commands, its ENV and CMD, then its HEALTHCHECK
until it passes, then SIGTERM. The commands are read from the Dockerfile, so this test
follows the file rather than a copy of it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import crossplane
import pytest
import yaml

from costwarden.config.settings import load_settings
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
GATEWAYS = ("gateway-1", "gateway-2")
SPOOL_IN_IMAGE = "/var/lib/costwarden/costwarden-data/ledger-spool"
CONFIG_IN_IMAGE = "/etc/costwarden/costwarden.toml"
# The variables compose.yaml must take from the environment (.env), never from the file.
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$")
REQUIRED_REF = re.compile(r"\$\{(?P<var>[A-Z0-9_]+):\?[^}]*\}")
PLACEHOLDER = "example-change-me"


# --- the Dockerfile, read


@dataclasses.dataclass
class Stage:
    base: str
    name: str | None
    lines: list[tuple[str, str]]  # (INSTRUCTION, its arguments)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.lines if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def _stages() -> list[Stage]:
    text = (ROOT / "Dockerfile").read_text()
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].lines.append((keyword, args.strip()))
    return stages


def _exec_form(args: str) -> list[str]:
    """An exec-form (JSON) command; shell form would hide the process behind /bin/sh, which
    then receives SIGTERM instead of the gateway."""
    assert args.startswith("["), f"not in exec form: {args}"
    command = json.loads(args)
    assert isinstance(command, list) and all(isinstance(w, str) for w in command)
    return command


def _flags(args: str) -> tuple[dict[str, str], str]:
    """(``--name=value`` options before the command, the rest)."""
    flags: dict[str, str] = {}
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        args = args.lstrip()
    return flags, args


def _healthcheck(stage: Stage) -> tuple[dict[str, str], list[str]]:
    flags, rest = _flags(stage.last("HEALTHCHECK"))
    assert rest.startswith("CMD "), rest
    return flags, _exec_form(rest[4:].strip())


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            name, sep, value = word.partition("=")
            assert sep, f"ENV {args}: use NAME=value"
            env[name] = value
    return env


def test_dockerfile_builds_in_one_stage_and_runs_slim_as_non_root() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    build, runtime = stages[0], stages[-1]
    assert build.name and build.name != runtime.name
    assert "slim" in runtime.base or "alpine" in runtime.base, runtime.base
    # The runtime stage takes the wheels from the build stage, not the source tree.
    takes = [a for a in runtime.all("RUN") + runtime.all("COPY") if f"from={build.name}" in a]
    assert takes, "the runtime stage uses nothing of the build stage"
    assert not [a for a in runtime.all("COPY") if a.split()[0] == "src"]
    user = runtime.last("USER").split(":")[0]
    assert user not in ("root", "0"), user
    # USER comes before CMD: the gateway process runs as that user.
    keywords = [kw for kw, _ in runtime.lines]
    assert keywords.index("USER") < keywords.index("CMD")
    flags, check = _healthcheck(runtime)
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)
    assert check[0] == "python" and "urllib.request" in check[-1] and "/healthz" in check[-1]
    env = _env(runtime)
    assert runtime.last("EXPOSE") == env["COSTWARDEN_PORT"] == "4000"
    assert env["COSTWARDEN_HOST"] == "0.0.0.0"
    assert _exec_form(runtime.last("CMD")) == [
        "costwarden", "serve", "--config", CONFIG_IN_IMAGE,
    ]  # fmt: skip
    assert f"deploy/costwarden.toml {CONFIG_IN_IMAGE}" in runtime.all("COPY")


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (excludes, pattern): Docker's rules, where ``*`` stays within one path
    segment, ``**`` spans any, a pattern matching a directory matches all below it, and the
    last pattern that matches a path decides."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            if part.startswith("**"):
                regex += "(?:.*/)?" if part.endswith("/") else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            else:
                regex += re.escape(part)
        rules.append((not negated, re.compile(regex + "(?:/.*)?")))
    return rules


def _ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    ignored = False
    for excludes, pattern in rules:
        if pattern.fullmatch(relative):
            ignored = excludes
    return ignored


def test_dockerignore_sends_what_the_build_copies_and_no_secret() -> None:
    rules = _ignore_rules()
    sent = [
        "pyproject.toml", "README.md", "src/costwarden/cli/main.py", "deploy/costwarden.toml",
        "src/costwarden/console/templates/base.html",
    ]  # fmt: skip
    kept_back = [
        ".env", ".git/config", ".venv/bin/python", "tests/test_deploy.py", "compose.yaml",
        "costwarden-data/costwarden.db", "src/costwarden/__pycache__/cli.pyc",
        "deploy/env.example",
    ]  # fmt: skip
    assert [path for path in sent if _ignored(path, rules)] == []
    assert [path for path in kept_back if not _ignored(path, rules)] == []


# --- compose.yaml and the load balancer


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return document


def _depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def test_compose_runs_two_identical_gateways_behind_a_load_balancer() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", *GATEWAYS, "lb"}
    first, second = (services[name] for name in GATEWAYS)
    assert first == second, "both gateways: the same build, image, config and environment"
    assert first["build"] == "." and first["image"]
    assert "./deploy/costwarden.toml:" + CONFIG_IN_IMAGE + ":ro" in first["volumes"]
    # The ledger's spool (the default spool_dir under the image's WORKDIR) on a named volume
    # both gateways share: a dead gateway's rows are replayed by the other.
    (spool,) = [v for v in first["volumes"] if v.endswith(":" + SPOOL_IN_IMAGE)]
    assert spool.split(":")[0] in _compose()["volumes"]
    assert _depends(first) == {"postgres": "service_healthy", "redis": "service_healthy"}
    env = first["environment"]
    assert env["COSTWARDEN_DATABASE_URL"].startswith("postgresql://")
    assert env["COSTWARDEN_DATABASE_URL"].endswith("@postgres:5432/costwarden")
    assert env["COSTWARDEN_REDIS_URL"] == "redis://redis:6379/0"
    # Only the load balancer is published; the gateways are reached through it.
    assert "ports" not in first and first["expose"] == ["4000"]
    assert _depends(services["lb"]) == {name: "service_healthy" for name in GATEWAYS}
    for name, service in services.items():
        check = service["healthcheck"]["test"]
        assert check[0] == "CMD" and len(check) > 1, name
    assert "/healthz" in first["healthcheck"]["test"][-1]
    assert "http://127.0.0.1:4000/healthz" in first["healthcheck"]["test"][-1]
    postgres = services["postgres"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in _compose()["volumes"], "PostgreSQL's data is on a named volume"
    assert "noeviction" in services["redis"]["command"]
    [published] = services["lb"]["ports"]
    assert published.rsplit(":", 1)[1] == str(_nginx_listen())


def _nginx() -> list[dict[str, Any]]:
    parsed = crossplane.parse(str(ROOT / "deploy" / "nginx.conf"), combine=True)
    assert parsed["status"] == "ok", parsed["errors"]
    config: list[dict[str, Any]] = parsed["config"][0]["parsed"]
    return config


def _blocks(directives: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [d for d in directives if d["directive"] == name]


def _nginx_listen() -> int:
    [http] = _blocks(_nginx(), "http")
    [server] = _blocks(http["block"], "server")
    [listen] = _blocks(server["block"], "listen")
    return int(listen["args"][0])


def test_load_balancer_sends_round_robin_to_both_gateways_unbuffered() -> None:
    [http] = _blocks(_nginx(), "http")
    [upstream] = _blocks(http["block"], "upstream")
    servers = [d["args"][0] for d in _blocks(upstream["block"], "server")]
    assert servers == [f"{name}:4000" for name in GATEWAYS]
    # Round robin: no directive of another balancing method.
    methods = {"ip_hash", "hash", "least_conn", "random", "sticky", "least_time"}
    assert not methods & {d["directive"] for d in upstream["block"]}
    [server] = _blocks(http["block"], "server")
    [location] = _blocks(server["block"], "location")
    settings = {d["directive"]: d["args"] for d in location["block"]}
    assert settings["proxy_pass"] == [f"http://{upstream['args'][0]}"]
    # Streams (server-sent events) pass through as written, and stay open.
    assert settings["proxy_buffering"] == ["off"]
    assert settings["proxy_http_version"] == ["1.1"]
    assert settings["proxy_read_timeout"][0] == "3600s"


def _strings(node: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _strings(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [s for i, v in enumerate(node) for s in _strings(v, f"{path}[{i}]")]
    return [(path, str(node))]


def test_compose_takes_every_secret_from_the_environment() -> None:
    document = _compose()
    required: set[str] = set()
    for path, value in _strings(document):
        required |= {m["var"] for m in REQUIRED_REF.finditer(value)}
        name = path.rsplit(".", 1)[-1]
        if SECRET_NAME.search(name):
            assert REQUIRED_REF.fullmatch(value), f"{path} must be ${{VAR:?...}}: {value}"
        # A password inside a URL is a reference too.
        for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value):
            assert REQUIRED_REF.fullmatch(password), f"{path}: a password in the file"
    assert {"POSTGRES_PASSWORD", "COSTWARDEN_ADMIN_TOKEN"} <= required
    # deploy/env.example lists every one, with a placeholder only.
    example = {}
    for line in (ROOT / "deploy" / "env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            example[name] = value
    assert set(example) == required
    assert set(example.values()) == {PLACEHOLDER}


def test_sample_config_takes_urls_and_secrets_from_the_environment() -> None:
    env = {
        "COSTWARDEN_DATABASE_URL": "postgresql://costwarden:pw@postgres:5432/costwarden",
        "COSTWARDEN_REDIS_URL": "redis://redis:6379/0",
        "COSTWARDEN_ADMIN_TOKEN": "adm-deploy",
        "OPENAI_API_KEY": "sk-test",
        "ANTHROPIC_API_KEY": "sk-ant-test",
    }
    settings = load_settings(ROOT / "deploy" / "costwarden.toml", env=env)
    assert settings.storage.database_url == env["COSTWARDEN_DATABASE_URL"]
    assert settings.redis.url == env["COSTWARDEN_REDIS_URL"]
    assert settings.admin_token == "adm-deploy"
    assert {p.api_key for p in settings.providers} == {"sk-test", "sk-ant-test"}
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 4000)
    # The file names the variables that hold secrets, never a secret.
    raw = tomllib.loads((ROOT / "deploy" / "costwarden.toml").read_text())
    for path, value in _strings(raw):
        name = path.rsplit(".", 1)[-1]
        assert not SECRET_NAME.search(name.upper()) or name.endswith("_env"), path
        assert not re.search(r"://[^/@\s]+@", value), f"{path}: credentials in a URL"


# --- the image's recipe, followed in a fresh virtualenv


class _Image:
    """The Dockerfile's stages as directories under ``tmp``: an absolute path in the image is
    that path under its stage's directory; ``pip``, ``python`` and console scripts are the
    virtualenv's (where the image has its system Python's)."""

    def __init__(self, tmp: Path, venv: Path) -> None:
        self.tmp, self.venv = tmp, venv
        self.workdir: dict[str, PurePosixPath] = {}
        self.ignore = _ignore_rules()

    def host(self, stage: str, path: str) -> Path:
        absolute = self.workdir.get(stage, PurePosixPath("/")) / path
        return self.tmp / stage / str(absolute).lstrip("/")

    def command(self, stage: str, words: list[str]) -> list[str]:
        mapped = [w if not w.startswith("/") else str(self.host(stage, w)) for w in words]
        program = self.venv / "bin" / mapped[0]
        assert program.exists(), f"{mapped[0]} is not in the virtualenv"
        return [str(program), *mapped[1:]]

    def copy(self, stage: str, args: str, stages: dict[str, str]) -> None:
        flags, rest = _flags(args)
        *sources, dest = shlex.split(rest)
        into_dir = dest.endswith("/") or len(sources) > 1
        for source in sources:
            if "from" in flags:
                origin, context = self.host(stages[flags["from"]], source), False
            else:
                origin, context = ROOT / source, True
            target = self.host(stage, dest)
            if origin.is_dir():
                self._tree(origin, target, source if context else None)
            else:
                if context:
                    assert not _ignored(source, self.ignore), f"{source} is in .dockerignore"
                target = target / origin.name if into_dir else target
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)

    def _tree(self, origin: Path, target: Path, relative: str | None) -> None:
        for path in origin.rglob("*"):
            inner = path.relative_to(origin)
            if relative is not None and _ignored(f"{relative}/{inner}", self.ignore):
                continue
            if path.is_file():
                (target / inner).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / inner)

    def mount(self, stage: str, flags: dict[str, str], stages: dict[str, str]) -> None:
        spec = dict(item.split("=", 1) for item in flags["mount"].split(","))
        if spec["type"] == "bind":
            link = self.host(stage, spec["target"])
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(self.host(stages[spec["from"]], spec["source"]))
        else:
            assert spec["type"] == "cache", spec  # pip's own cache stands in for it


def _clean_env(venv: Path) -> dict[str, str]:
    """The machine's environment without this test run's Python: no PYTHONPATH (it would
    import the worktree's source instead of the installed wheel), no virtualenv, no
    COSTWARDEN_* variable."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COSTWARDEN_", "PYTHON", "VIRTUAL_ENV"))
    }
    keep["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return keep


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done.stdout


# pip's work is CPU-bound: 26 s on the 2-core machine alone (venv 3 s, pip wheel 11 s,
# install 9 s, healthy 2.3 s later), 60-73 s while the other tests ran: hence a timeout of
# its own. It runs in the parallel phase, whose tests time nothing (37 s of the serial phase).
@pytest.mark.timeout(300)
def test_image_recipe_installs_and_serves_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    started = time.monotonic()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = _clean_env(venv)
    image = _Image(tmp_path / "image", venv)
    stages = _stages()
    names = {s.name or str(i): s.name or str(i) for i, s in enumerate(stages)}
    pip_commands = []
    for index, stage in enumerate(stages):
        name = stage.name or str(index)
        for keyword, args in stage.lines:
            if keyword == "WORKDIR":
                image.workdir[name] = image.workdir.get(name, PurePosixPath("/")) / args
                image.host(name, ".").mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                image.copy(name, args, names)
            elif keyword == "RUN":
                flags, command = _flags(args)
                words = shlex.split(command)
                if words[0] != "pip":
                    continue  # useradd and the like: root's business, checked above
                assert not {"&&", "||", ";", "|"} & set(words), f"one command per RUN: {args}"
                if "mount" in flags:
                    image.mount(name, flags, names)
                cwd = image.host(name, ".")
                cwd.mkdir(parents=True, exist_ok=True)
                _run(image.command(name, words), cwd, env, timeout=300)
                pip_commands.append(words[1])
    assert pip_commands == ["wheel", "install"], pip_commands
    installed = time.monotonic()
    # The installed wheel is what runs, with its templates and static files.
    which = "import costwarden; print(costwarden.__file__)"
    where = _run([str(venv / "bin" / "python"), "-c", which], tmp_path, env, timeout=30)
    assert str(venv) in where

    runtime = stages[-1]
    runtime_name = runtime.name or str(len(stages) - 1)
    port = free_port()
    serve_env = {
        **env,
        **_env(runtime),
        "COSTWARDEN_HOST": "127.0.0.1",
        "COSTWARDEN_PORT": str(port),
        "COSTWARDEN_DATABASE_URL": f"sqlite:///{tmp_path}/costwarden.db",
        "COSTWARDEN_ADMIN_TOKEN": "adm-deploy",
        "OPENAI_API_KEY": "sk-deploy-test",
        "ANTHROPIC_API_KEY": "sk-ant-deploy-test",
    }
    flags, check = _healthcheck(runtime)
    check_timeout = float(flags["timeout"].rstrip("s"))
    health = image.command(runtime_name, check)

    def healthy() -> bool:
        done = subprocess.run(health, env=serve_env, capture_output=True, timeout=30)
        return done.returncode == 0

    assert not healthy(), "the health check passes with no gateway running"
    cwd = image.host(runtime_name, ".")
    cwd.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            image.command(runtime_name, _exec_form(runtime.last("CMD"))),
            cwd=cwd, env=serve_env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + float(flags["start-period"].rstrip("s"))
        while not healthy():
            assert proc.poll() is None, "the gateway exited:\n" + log.read_text()
            assert time.monotonic() < deadline, "never healthy:\n" + log.read_text()
            time.sleep(min(0.2, check_timeout))
        up = time.monotonic()
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/dashboard/sign-in", timeout=5) as page:
            assert page.status == 200 and b"<form" in page.read()
        with urllib.request.urlopen(f"{base}/admin/openapi.json", timeout=5) as doc:
            assert json.load(doc)["paths"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    # A clean stop: the shutdown ran to its end (the ledger drained). uvicorn re-raises the
    # SIGTERM it caught once it is done, so a process that is not PID 1 ends by that signal;
    # as a container's PID 1 (whose signals without a handler the kernel ignores) it exits 0.
    text = log.read_text()
    assert code in (0, -signal.SIGTERM), text
    assert "ledger drained" in text and "Finished server process" in text, text
    assert "Traceback" not in text and " ERROR " not in text, text
    assert not healthy()
    # serve ran the migrations on the empty database.
    assert (tmp_path / "costwarden.db").stat().st_size > 0
    print(f"installed in {installed - started:.1f} s, healthy {up - installed:.1f} s later")


def test_readme_points_at_the_deployment_docs() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    for needle in ("docker compose up", "COSTWARDEN_DATABASE_URL", "/healthz", "migrat"):
        assert needle in text, needle
    assert "docs/deployment.md" in (ROOT / "README.md").read_text()
