"""``costwarden demo``: the whole product in one command, run as a real subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path

from costwarden.storage import repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.usage import usage_report
from tests.helpers import CLI


def _env(columns: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTWARDEN_")}
    env["COLUMNS"] = str(columns)
    return env


def _cells(line: str) -> list[str]:
    """The cells of a table line, whatever box style rich draws it with."""
    return [c for c in re.split(r"[\s│┃║|]+", line) if c]


def _run_once(data_dir: Path, columns: int = 250) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "demo", "--once", "--port", "0", "--data-dir", str(data_dir)],
        env=_env(columns),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_demo_once(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    proc = _run_once(data)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Traceback" not in out + proc.stderr

    # Every demo request succeeded.
    sent = re.findall(r"^\s{2}(\S.*?)\s{2,}(\d{3})\s", out, flags=re.M)
    assert len(sent) == 5, out
    assert {status for _, status in sent} == {"200"}, sent

    # The spend table, from the ledger, for the 'demo' org, with a nonzero total.
    assert "demo spend (from the ledger)" in out
    rows = [_cells(line) for line in out.splitlines() if re.search(r"\d{4}-\d\d-\d\d ", line)]
    assert len(rows) == 3, out
    assert all(row[1] == "demo" for row in rows), rows
    assert {row[2] for row in rows} == {"gpt-4o-mini", "claude-haiku-4-5", "text-embedding-3-small"}
    assert sum(int(row[3]) for row in rows) == 5
    total_row = next(_cells(line) for line in out.splitlines() if _cells(line)[:1] == ["total"])
    assert total_row[1] == "5", total_row  # requests
    total = Decimal(total_row[-1])
    assert total > 0
    assert sum(Decimal(row[-1]) for row in rows) == total

    # Base URL and key, and they are real: the key is stored, the total is the ledger's.
    base = re.search(r"Base URL: (http://127\.0\.0\.1:(\d+))/v1", out)
    assert base is not None and int(base.group(2)) > 0, out
    key_match = re.search(r"Key:\s+(cw-[A-Za-z0-9_-]{20,})", out)
    assert key_match is not None, out
    key = key_match.group(1)
    assert f"Bearer {key}" in out
    assert "costwarden usage --config" in out
    db = data / "costwarden.db"
    assert db.exists() and (data / "costwarden.toml").exists()
    engine = create_engine_for(f"sqlite:///{db}")
    try:
        (record,) = repo.list_keys(engine, "demo")
        assert record.key_hash == repo.hash_key(key)
        report = usage_report(engine, org="demo")
    finally:
        engine.dispose()
    assert report.requests == 5 and report.cost_usd == total
    assert "demo stopped." in out


def test_demo_config_is_reusable_by_the_cli(tmp_path: Path) -> None:
    """The config the demo writes works with `costwarden usage` afterwards."""
    data = tmp_path / "demo"
    assert _run_once(data).returncode == 0
    usage = subprocess.run(
        [*CLI, "usage", "--config", str(data / "costwarden.toml"), "--org", "demo", "--json"],
        env=_env(250),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 0, usage.stderr
    assert '"requests": 5' in usage.stdout


def test_demo_snippets_are_complete_at_80_columns(tmp_path: Path) -> None:
    """The copy-paste snippets and the spend figures are never cropped by a narrow terminal."""
    proc = _run_once(tmp_path / "demo", columns=80)
    assert proc.returncode == 0, proc.stderr
    key_match = re.search(r"Key:\s+(cw-[A-Za-z0-9_-]{20,})", proc.stdout)
    assert key_match is not None
    key = key_match.group(1)
    assert f'api_key="{key}"' in proc.stdout
    assert "content-type: application/json" in proc.stdout
    assert "…" not in proc.stdout  # nothing truncated with an ellipsis


def test_demo_serves_until_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "demo", "--port", "0", "--data-dir", str(tmp_path / "demo")],
        env=_env(250),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                ready.set()
        ready.set()  # EOF: let the test see it

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "".join(lines)
        assert proc.poll() is None, "".join(lines)  # still serving, not exited by itself
        assert any("Ctrl-C" in line for line in lines)
        time.sleep(0.3)
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    proc.stdout.close()  # type: ignore[union-attr]
    assert code == 0, err
    assert elapsed < 10
    assert "Traceback" not in err and "Traceback" not in "".join(lines)
    assert "demo stopped." in "".join(lines)
