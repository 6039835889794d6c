"""``costwarden providers check`` against the mock upstream: reached, models listed, prices
shown; an unreachable provider, an unset key and a model the provider does not serve are
each reported, and the exit status says so."""

from __future__ import annotations

import json
from pathlib import Path

from costwarden.mock import MockServer
from tests.helpers import ainvoke_cli, arun_cli, cli_env, gateway_toml

AZURE = """
[[providers]]
name = "azure"
type = "azure"
base_url = "{mock}"
api_version = "2024-10-21"
api_key_env = "CW_TEST_AZURE_KEY"

[[deployments]]
id = "azure:prod-mini"
price_model = "gpt-4o-mini"

[[routes]]
model = "company-mini"
deployments = ["azure:prod-mini"]
"""

KEYS = {"CW_TEST_OPENAI_KEY": "sk-o", "CW_TEST_ANTHROPIC_KEY": "sk-a", "CW_TEST_AZURE_KEY": "az"}


def _config(tmp_path: Path, mock_url: str, extra: str = "") -> str:
    path = tmp_path / "check.toml"
    text = gateway_toml(mock_url, f"sqlite:///{tmp_path}/cw.db", extra=AZURE.format(mock=mock_url))
    path.write_text(text + extra, encoding="utf-8")
    return str(path)


async def test_every_provider_reached_with_its_models_and_prices(
    mock: MockServer, tmp_path: Path
) -> None:
    config = _config(tmp_path, mock.base_url)
    result = await ainvoke_cli("providers", "check", "--config", config, "--json",
                               env=cli_env(**KEYS))  # fmt: skip
    assert result.code == 0, result.both
    by_name = {r["name"]: r for r in json.loads(result.out)}
    assert set(by_name) == {"openai", "anthropic", "azure"}
    assert all(r["ok"] and "models listed" in r["detail"] for r in by_name.values()), by_name
    mini = {d["id"]: d for d in by_name["openai"]["deployments"]}["openai:gpt-4o-mini"]
    assert mini["served"] == "listed" and mini["price_source"] == "genai-prices"
    assert (mini["input_mtok"], mini["output_mtok"]) == ("0.15", "0.6")
    azure = by_name["azure"]["deployments"][0]
    assert azure["served"] == "listed" and azure["model"] == "prod-mini (priced as gpt-4o-mini)"
    table = await ainvoke_cli("providers", "check", "--config", config, env=cli_env(**KEYS))
    assert table.code == 0 and "claude-haiku-4-5" in table.out and "listed" in table.out


async def test_what_is_wrong_is_reported_and_fails_the_check(
    mock: MockServer, tmp_path: Path
) -> None:
    extra = """
[[providers]]
name = "gone"
type = "openai"
base_url = "http://127.0.0.1:9/v1"

[[routes]]
model = "nowhere"
deployments = ["gone:gpt-4o"]

[[routes]]
model = "new-model"
deployments = ["openai:gpt-4.1"]
"""
    config = _config(tmp_path, mock.base_url, extra)
    keys = {k: v for k, v in KEYS.items() if k != "CW_TEST_AZURE_KEY"}
    # A subprocess: exit status 1 as the interpreter leaves it, the credentials (and the
    # one missing) read from a real process's environment.
    result = await arun_cli("providers", "check", "--config", config, "--json",
                            env=cli_env(**keys))  # fmt: skip
    assert result.code == 1, result.both
    by_name = {r["name"]: r for r in json.loads(result.out)}
    assert not by_name["gone"]["ok"] and "cannot connect" in by_name["gone"]["detail"]
    assert not by_name["azure"]["ok"]
    assert by_name["azure"]["detail"] == "not called: the variable CW_TEST_AZURE_KEY is not set"
    served = {d["id"]: d["served"] for d in by_name["openai"]["deployments"]}
    assert served["openai:gpt-4.1"] == "not listed"  # priced, but the mock does not serve it
    assert "sk-o" not in result.both


async def test_a_deployment_without_a_price_is_a_config_error(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9", '\n[[routes]]\nmodel = "x"\n'
                     'deployments = ["openai:no-such-model"]\n')  # fmt: skip
    result = await ainvoke_cli("providers", "check", "--config", config, env=cli_env(**KEYS))
    assert result.code == 2, result.both
    assert "no-such-model" in result.err and "price = {" in result.err
    assert f"check.toml:{_line(config, 'openai:no-such-model')}:" in result.err


def _line(path: str, needle: str) -> int:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)
