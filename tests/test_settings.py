"""Loading ``costwarden.toml``: the config from the issue, env overrides, and every error path.

Errors must be one ConfigError that names the key and, where the loader can know it, the
line as ``costwarden.toml:<line>``. File-based tests chdir into tmp_path and pass the
relative name so the message can be matched exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from costwarden.budgets.limits import Tier, TierEntry
from costwarden.budgets.ports import BudgetConfig
from costwarden.config.billing import webhook_secrets
from costwarden.config.budgets import budget_config
from costwarden.config.metrics import MetricsSettings
from costwarden.config.reference import settings_help
from costwarden.config.security import SecuritySettings
from costwarden.config.settings import (
    BudgetSettings,
    DeploymentSettings,
    PriceOverride,
    ProviderSettings,
    RedisSettings,
    RouteSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    SwitchSettings,
    load_settings,
)
from costwarden.config.upstreams import ResilienceSettings
from costwarden.core.errors import ConfigError

# The config from the issue, verbatim. Line numbers used below:
#   3 port, 10 OPENAI_API_KEY, 15 ANTHROPIC_API_KEY, 17/18 first route, 20/21 second route.
ISSUE_CONFIG = """\
[server]
host = "127.0.0.1"
port = 4000
[storage]
database_url = "sqlite:///costwarden-data/costwarden.db"   # or postgresql://...
[[providers]]
name = "openai"
type = "openai"
base_url = "http://127.0.0.1:9000/v1"
api_key_env = "OPENAI_API_KEY"
[[providers]]
name = "anthropic"
type = "anthropic"
base_url = "http://127.0.0.1:9000"
api_key_env = "ANTHROPIC_API_KEY"
[[routes]]
model = "gpt-4o-mini"
deployments = ["openai:gpt-4o-mini"]
[[routes]]
model = "claude-haiku-4-5"
deployments = ["anthropic:claude-haiku-4-5"]
"""

_DEP_HEAD = '[[deployments]]\nid = "openai:gpt-4o-mini"\n'
SECRETS = {"OPENAI_API_KEY": "sk-openai-test", "ANTHROPIC_API_KEY": "sk-ant-test"}


def _line(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the ``occurrence``-th line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} occurs {len(hits)} times"
    return hits[occurrence - 1]


@pytest.fixture
def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write ``costwarden.toml`` in tmp_path (now the cwd) and return its relative name."""
    monkeypatch.chdir(tmp_path)

    def write(text: str) -> str:
        (tmp_path / "costwarden.toml").write_text(text, encoding="utf-8")
        return "costwarden.toml"

    return write


def _error(path: str, env: dict[str, str] | None = None, **kwargs: bool) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=SECRETS if env is None else env, **kwargs)
    message = str(info.value)
    assert "\n" not in message.strip(), message
    assert "Traceback" not in message
    return message


# --------------------------------------------------------------------- the issue's config


def test_issue_config_loads(write_config: Callable[[str], str]) -> None:
    s = load_settings(write_config(ISSUE_CONFIG), env=SECRETS)
    assert s.source == "costwarden.toml"
    assert (s.server.host, s.server.port) == ("127.0.0.1", 4000)
    assert s.storage.database_url == "sqlite:///costwarden-data/costwarden.db"
    assert s.storage.ledger_mode == "batched"
    assert [(p.name, p.type, p.base_url) for p in s.providers] == [
        ("openai", "openai", "http://127.0.0.1:9000/v1"),
        ("anthropic", "anthropic", "http://127.0.0.1:9000"),
    ]
    assert s.provider("openai").api_key == "sk-openai-test"
    assert s.provider("anthropic").api_key == "sk-ant-test"
    assert [(r.model, r.deployments) for r in s.routes] == [
        ("gpt-4o-mini", ["openai:gpt-4o-mini"]),
        ("claude-haiku-4-5", ["anthropic:claude-haiku-4-5"]),
    ]
    dep = s.deployments["anthropic:claude-haiku-4-5"]
    assert (dep.provider, dep.model, dep.price) == ("anthropic", "claude-haiku-4-5", None)
    assert s.admin_token is None
    # Secrets never show up in the repr (logs print settings objects).
    assert "sk-openai-test" not in repr(s) and "sk-ant-test" not in repr(s)


def test_issue_config_from_text_and_from_file_agree(write_config: Callable[[str], str]) -> None:
    from_file = load_settings(write_config(ISSUE_CONFIG), env=SECRETS)
    from_text = load_settings(text=ISSUE_CONFIG, env=SECRETS)
    assert from_text.source == "<string>"
    assert dataclasses.replace(from_text, source="x") == dataclasses.replace(from_file, source="x")


def test_env_overrides_win(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace("[storage]\n", '[storage]\nledger_mode = "batched"\n')
    env = {
        **SECRETS,
        "COSTWARDEN_PORT": "5123",
        "COSTWARDEN_DATABASE_URL": "postgresql://cw@db.internal/costwarden",
        "COSTWARDEN_LEDGER_MODE": "durable",
        "COSTWARDEN_KEY_REFRESH_SECONDS": "0.25",
        "COSTWARDEN_ADMIN_TOKEN": "adm-token",
    }
    s = load_settings(write_config(text), env=env)
    assert s.server.port == 5123 and isinstance(s.server.port, int)
    assert s.storage.database_url == "postgresql://cw@db.internal/costwarden"
    assert s.storage.ledger_mode == "durable"
    assert s.server.key_refresh_seconds == 0.25
    assert s.admin_token == "adm-token"
    assert "adm-token" not in repr(s)
    # Without the variables the file's values stand.
    plain = load_settings("costwarden.toml", env=SECRETS)
    assert (plain.server.port, plain.storage.ledger_mode) == (4000, "batched")


def test_env_override_bad_int_names_the_variable(write_config: Callable[[str], str]) -> None:
    message = _error(write_config(ISSUE_CONFIG), {**SECRETS, "COSTWARDEN_PORT": "http"})
    assert "COSTWARDEN_PORT" in message and "'http'" in message


@pytest.mark.parametrize(("raw", "want"), [("false", False), ("0", False), ("ON", True)])
def test_env_override_boolean(write_config: Callable[[str], str], raw: str, want: bool) -> None:
    env = {**SECRETS, "COSTWARDEN_CANCEL_ON_DISCONNECT": raw}
    assert load_settings(write_config(ISSUE_CONFIG), env=env).server.cancel_on_disconnect is want


def test_env_override_bad_boolean_names_the_variable(write_config: Callable[[str], str]) -> None:
    env = {**SECRETS, "COSTWARDEN_CANCEL_ON_DISCONNECT": "maybe"}
    message = _error(write_config(ISSUE_CONFIG), env)
    assert "COSTWARDEN_CANCEL_ON_DISCONNECT" in message and "'maybe'" in message


def test_env_override_bad_ledger_mode(write_config: Callable[[str], str]) -> None:
    message = _error(write_config(ISSUE_CONFIG), {**SECRETS, "COSTWARDEN_LEDGER_MODE": "fast"})
    assert "storage.ledger_mode" in message
    assert "batched" in message and "durable" in message


def test_require_secrets_false_tolerates_unset_variables(
    write_config: Callable[[str], str],
) -> None:
    s = load_settings(write_config(ISSUE_CONFIG), env={}, require_secrets=False)
    assert [p.api_key for p in s.providers] == [None, None]
    assert [p.api_key_env for p in s.providers] == ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"]
    # ...but every other check still runs.
    write_config(ISSUE_CONFIG.replace("port = 4000", 'port = "x"'))
    assert "server.port" in _error("costwarden.toml", {}, require_secrets=False)


def test_empty_string_secret_counts_as_unset(write_config: Callable[[str], str]) -> None:
    message = _error(write_config(ISSUE_CONFIG), {**SECRETS, "OPENAI_API_KEY": ""})
    assert "OPENAI_API_KEY" in message


# --------------------------------------------------------------------- error messages


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    message = _error("costwarden.toml")
    assert message.startswith("costwarden.toml:") and "not found" in message


def test_no_path_at_all() -> None:
    with pytest.raises(ConfigError, match="--config"):
        load_settings(None, env=SECRETS)


def test_invalid_toml_gives_the_line(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace('name = "anthropic"', 'name = "anthropic', 1)
    message = _error(write_config(text))
    assert message.startswith("costwarden.toml")
    assert "invalid TOML" in message
    line = _line(text, 'name = "anthropic')
    assert f"line {line}" in message or f"costwarden.toml:{line}:" in message


def test_unknown_provider_in_route(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace('["openai:gpt-4o-mini"]', '["azure:gpt-4o-mini"]')
    message = _error(write_config(text))
    assert message.startswith("costwarden.toml:18: routes[0].deployments[0]:"), message
    assert "unknown provider 'azure'" in message
    assert "anthropic, openai" in message  # the known ones


def test_unset_api_key_env_names_the_variable(write_config: Callable[[str], str]) -> None:
    message = _error(write_config(ISSUE_CONFIG), {"ANTHROPIC_API_KEY": "x"})
    assert message.startswith("costwarden.toml:10: providers[0].api_key_env:"), message
    assert "OPENAI_API_KEY" in message and "not set" in message
    message = _error("costwarden.toml", {"OPENAI_API_KEY": "x"})
    assert message.startswith("costwarden.toml:15: providers[1].api_key_env:"), message
    assert "ANTHROPIC_API_KEY" in message


def test_unknown_section(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG + "[alarms]\nmonthly_usd = 100\n"
    message = _error(write_config(text))
    assert message.startswith(f"costwarden.toml:{_line(text, '[alarms]')}: alarms:"), message
    assert "unknown section" in message and "providers" in message


def test_unknown_budget_setting_names_line(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG + "[budgets]\nmonthly_usd = 100\n"
    message = _error(write_config(text))
    line = _line(text, "monthly_usd")
    assert message.startswith(f"costwarden.toml:{line}: budgets.monthly_usd:"), message
    assert "unknown setting" in message and "redis_url" in message


def test_tiers_and_budget_settings(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG + (
        '[budgets]\ntimezone = "Europe/Paris"\nmin_output_tokens = 8\n'
        '[[tiers]]\nname = "free"\norg = { daily_usd = "5", requests_per_minute = 60 }\n'
        "key = { daily_tokens = -1 }\n"
    )
    settings = load_settings(
        write_config(text), env={"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "y"}
    )
    assert settings.budgets.timezone == "Europe/Paris"
    assert settings.budgets.min_output_tokens == 8
    assert [t.name for t in settings.tiers] == ["free"]
    assert settings.tiers[0].limits["org"]["daily_usd"] == "5"


def test_budget_config_maps_every_setting_the_budgets_package_reads(
    write_config: Callable[[str], str],
) -> None:
    # Every value differs from its default and from the others: a field mapped from the
    # wrong setting (or left at its default) shows.
    text = ISSUE_CONFIG.replace(
        "[storage]\n", '[storage]\nledger_mode = "durable"\nflush_interval_ms = 150\n'
    ) + (
        '[budgets]\ntimezone = "Europe/Paris"\n'
        "min_output_tokens = 8\ndefault_max_output_tokens = 2048\n"
        "expected_output_tokens = 300\nprompt_overhead_tokens = 12\nlease_seconds = 45.0\n"
        "refresh_seconds = 0.75\ninflight_retry_seconds = 3\n"
        '[redis]\non_unavailable = "fail_open"\n'
        '[[tiers]]\nname = "free"\norg = { daily_usd = "5" }\n'
        "key = { requests_per_minute = 60 }\n"
    )
    settings = load_settings(write_config(text), env=SECRETS)
    free = Tier(
        "free",
        (TierEntry("org", "usd", "day", 5 * 10**9), TierEntry("key", "requests", "minute", 60)),
        source="config",
    )
    assert budget_config(settings) == BudgetConfig(
        tiers=(free,),
        timezone="Europe/Paris",
        lease_seconds=45.0,
        refresh_seconds=0.75,
        prompt_overhead_tokens=12,
        default_max_output_tokens=2048,
        min_output_tokens=8,
        expected_output_tokens=300,
        inflight_retry_seconds=3,
        ledger_mode="durable",
        flush_interval_ms=150,
        on_unavailable="fail_open",
    )


@pytest.mark.parametrize(
    ("snippet", "needle"),
    [
        ('[budgets]\ntimezone = "Mars/Olympus"\n', "unknown timezone"),
        ("[budgets]\nmin_output_tokens = 0\n", "must be a positive integer"),
        ('[budgets]\nredis_url = "http://x"\n', "redis://"),
        ("[budgets]\nredis_timeout_seconds = 0\n", "redis_timeout_seconds: must be positive"),
        ('[[tiers]]\nname = "free"\norg = { daily_usd = 0.5 }\n', "as strings"),
        ('[[tiers]]\nname = "free"\norg = { dayly_usd = "5" }\n', "unknown limit"),
        ('[[tiers]]\nname = "free"\nplanet = { daily_usd = "5" }\n', "unknown scope"),
        ('[[tiers]]\nname = "free"\norg = { daily_usd = "-2" }\n', "zero or positive"),
    ],
)
def test_bad_budget_config(write_config: Callable[[str], str], snippet: str, needle: str) -> None:
    message = _error(write_config(ISSUE_CONFIG + snippet))
    assert needle in message, message
    assert message.startswith("costwarden.toml:"), message


# --------------------------------------------------------------------- [redis]

_PASSWORD = "s3cret-redis-pw"


def test_redis_defaults(write_config: Callable[[str], str]) -> None:
    s = load_settings(write_config(ISSUE_CONFIG), env=SECRETS)
    assert s.redis == RedisSettings() == RedisSettings("", 1.0, 64, "fail_closed")
    assert s.deprecations == []


def test_redis_section_and_its_environment_overrides(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG + (
        '[redis]\nurl = "redis://10.0.0.5:6379/0"\ntimeout_seconds = 2\nmax_connections = 8\n'
        'on_unavailable = "fail_open"\n'
    )
    s = load_settings(write_config(text), env=SECRETS)
    assert s.redis == RedisSettings("redis://10.0.0.5:6379/0", 2.0, 8, "fail_open")
    assert isinstance(s.redis.timeout_seconds, float)
    env = {
        **SECRETS,
        "COSTWARDEN_REDIS_URL": "unix:///run/redis.sock?db=3",
        "COSTWARDEN_REDIS_TIMEOUT_SECONDS": "0.5",
        "COSTWARDEN_REDIS_MAX_CONNECTIONS": "128",
        "COSTWARDEN_REDIS_ON_UNAVAILABLE": "fail_closed",
    }
    s = load_settings("costwarden.toml", env=env)
    assert s.redis == RedisSettings("unix:///run/redis.sock?db=3", 0.5, 128, "fail_closed")
    assert s.deprecations == []


def test_deprecated_budget_keys_still_work_with_a_warning(
    write_config: Callable[[str], str],
) -> None:
    url = f"redis://:{_PASSWORD}@10.0.0.5:6379/0"
    text = ISSUE_CONFIG + f'[budgets]\nredis_url = "{url}"\nredis_timeout_seconds = 0.3\n'
    s = load_settings(write_config(text), env=SECRETS)
    assert (s.redis.url, s.redis.timeout_seconds) == (url, 0.3)
    assert s.redis.max_connections == 64
    # The old names read the same values (anything not yet moved to settings.redis).
    assert (s.budgets.redis_url, s.budgets.redis_timeout_seconds) == (url, 0.3)
    assert s.deprecations == [
        f"costwarden.toml:{_line(text, 'redis_url')}: budgets.redis_url: deprecated: it is "
        "now redis.url (the same setting, in a [redis] section): move it there",
        f"costwarden.toml:{_line(text, 'redis_timeout')}: budgets.redis_timeout_seconds: "
        "deprecated: it is now redis.timeout_seconds (the same setting, in a [redis] "
        "section): move it there",
    ]
    assert _PASSWORD not in " ".join(s.deprecations)


def test_deprecated_key_equal_to_the_new_one_is_only_a_warning(
    write_config: Callable[[str], str],
) -> None:
    text = ISSUE_CONFIG + (
        '[budgets]\nredis_url = "redis://h:6379/1"\n[redis]\nurl = "redis://h:6379/1"\n'
        "timeout_seconds = 1\n"  # and the deprecated timeout left at its default
    )
    s = load_settings(write_config(text), env=SECRETS)
    assert (s.redis.url, s.redis.timeout_seconds) == ("redis://h:6379/1", 1.0)
    assert [m.split(": ")[1] for m in s.deprecations] == ["budgets.redis_url"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (f'redis_url = "redis://:{_PASSWORD}@a:6379/0"', 'url = "redis://b:6379/0"'),
        ("redis_timeout_seconds = 2.0", "timeout_seconds = 1.0"),
    ],
)
def test_deprecated_key_and_new_key_that_differ_is_an_error(
    write_config: Callable[[str], str], old: str, new: str
) -> None:
    text = ISSUE_CONFIG + f"[budgets]\n{old}\n[redis]\n{new}\n"
    message = _error(write_config(text))
    old_key, new_key = old.split(" = ")[0], new.split(" = ")[0]
    assert message == (
        f"costwarden.toml:{_line(text, old_key)}: budgets.{old_key}: deprecated name of "
        f"redis.{new_key}, which is set to another value: keep only redis.{new_key}"
    )
    assert _PASSWORD not in message


def test_the_environment_overrides_a_deprecated_key_too(
    write_config: Callable[[str], str],
) -> None:
    # As COSTWARDEN_REDIS_URL overrode budgets.redis_url before it moved: one file, many
    # environments.
    text = ISSUE_CONFIG + '[budgets]\nredis_url = "redis://file:6379/0"\n'
    env = {**SECRETS, "COSTWARDEN_REDIS_URL": "redis://env:6379/0"}
    s = load_settings(write_config(text), env=env)
    assert s.redis.url == s.budgets.redis_url == "redis://env:6379/0"
    assert len(s.deprecations) == 1


@pytest.mark.parametrize(
    ("snippet", "key", "needle"),
    [
        ('url = "http://cache:6379"', "url", "must be a redis://, rediss:// or unix:// URL"),
        ('url = "cache:6379"', "url", "must be a redis://, rediss:// or unix:// URL"),
        ('url = "redis://cache:port/0"', "url", "as redis-py reads them"),
        ("timeout_seconds = 0", "timeout_seconds", "must be a positive number"),
        ("timeout_seconds = -1.5", "timeout_seconds", "must be a positive number"),
        ("timeout_seconds = inf", "timeout_seconds", "must be a positive number"),
        ("max_connections = 3", "max_connections", "must be at least 4"),
        ('timeout_seconds = "1"', "timeout_seconds", "expected float, got str"),
        ("max_connections = 8.0", "max_connections", "expected int, got float"),
        ("pool_size = 8", "pool_size", "unknown setting"),
        (
            'on_unavailable = "open"',
            "on_unavailable",
            "must be one of ['fail_closed', 'fail_open']",
        ),
    ],
)
def test_bad_redis_settings_name_key_and_line(
    write_config: Callable[[str], str], snippet: str, key: str, needle: str
) -> None:
    text = ISSUE_CONFIG + f"[redis]\n{snippet}\n"
    message = _error(write_config(text))
    assert message.startswith(f"costwarden.toml:{_line(text, snippet)}: redis.{key}: "), message
    assert needle in message, message


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("", "needs [redis] url (a cluster node)"),
        ("unix:///run/redis.sock", "over TCP: use a redis:// or rediss:// URL"),
        ("redis://node1:7000/2", "only database 0"),
    ],
)
def test_a_cluster_needs_a_tcp_url_of_database_0(
    write_config: Callable[[str], str], url: str, needle: str
) -> None:
    text = ISSUE_CONFIG + "[redis]\n" + (f'url = "{url}"\n' if url else "") + "cluster = true\n"
    message = _error(write_config(text))
    assert message.startswith(f"costwarden.toml:{_line(text, 'cluster = true')}: redis.cluster: ")
    assert needle in message, message
    assert "node1" not in message  # (a URL may carry a password: never quoted)


@pytest.mark.parametrize(
    ("snippet", "key", "needle"),
    [
        ("max_orgs = 0", "max_orgs", "must be at least 1"),
        ("max_models = -1", "max_models", "must be zero or more"),
        ("max_limits = -5", "max_limits", "must be zero or more"),
        ('public = "yes"', "public", "expected true/false"),
        ("path = \"/m\"", "path", "unknown setting"),
    ],
)
def test_bad_metrics_settings_name_key_and_line(
    write_config: Callable[[str], str], snippet: str, key: str, needle: str
) -> None:
    text = ISSUE_CONFIG + f"[metrics]\n{snippet}\n"
    message = _error(write_config(text))
    assert message.startswith(f"costwarden.toml:{_line(text, snippet)}: metrics.{key}: "), message
    assert needle in message, message


def test_metrics_settings_defaults_and_environment(write_config: Callable[[str], str]) -> None:
    s = load_settings(write_config(ISSUE_CONFIG), env=SECRETS)
    assert (s.metrics.enabled, s.metrics.public) == (True, False)
    assert (s.metrics.max_orgs, s.metrics.max_models, s.metrics.max_limits) == (1000, 100, 1000)
    env = {
        **SECRETS,
        "COSTWARDEN_METRICS_ENABLED": "false",
        "COSTWARDEN_METRICS_PUBLIC": "true",
        "COSTWARDEN_METRICS_MAX_ORGS": "7",
    }
    s = load_settings(write_config(ISSUE_CONFIG), env=env)
    assert (s.metrics.enabled, s.metrics.public, s.metrics.max_orgs) == (False, True, 7)
    message = _error(write_config(ISSUE_CONFIG), {**SECRETS, "COSTWARDEN_METRICS_MAX_ORGS": "0"})
    assert message.startswith("environment COSTWARDEN_METRICS_MAX_ORGS='0': metrics.max_orgs")


def test_a_bad_redis_url_is_never_echoed(write_config: Callable[[str], str]) -> None:
    bad = f"http://user:{_PASSWORD}@cache:6379/0"
    text = ISSUE_CONFIG + f'[redis]\nurl = "{bad}"\n'
    for message in (
        _error(write_config(text)),
        _error(write_config(ISSUE_CONFIG), {**SECRETS, "COSTWARDEN_REDIS_URL": bad}),
        _error(write_config(ISSUE_CONFIG + f'[budgets]\nredis_url = "{bad}"\n')),
    ):
        assert "must be a redis://" in message and _PASSWORD not in message, message
    env_message = _error(write_config(ISSUE_CONFIG), {**SECRETS, "COSTWARDEN_REDIS_URL": bad})
    assert env_message.startswith("environment COSTWARDEN_REDIS_URL: redis.url: "), env_message


def test_bad_redis_setting_from_the_environment_names_the_variable(
    write_config: Callable[[str], str],
) -> None:
    path = write_config(ISSUE_CONFIG)
    message = _error(path, {**SECRETS, "COSTWARDEN_REDIS_MAX_CONNECTIONS": "2"})
    assert message.startswith("environment COSTWARDEN_REDIS_MAX_CONNECTIONS='2': "), message
    assert "redis.max_connections: must be at least 4" in message
    message = _error(path, {**SECRETS, "COSTWARDEN_REDIS_TIMEOUT_SECONDS": "soon"})
    assert "COSTWARDEN_REDIS_TIMEOUT_SECONDS" in message and "expected float" in message
    message = _error(path, {**SECRETS, "COSTWARDEN_REDIS_ON_UNAVAILABLE": "guess"})
    assert message.startswith("environment COSTWARDEN_REDIS_ON_UNAVAILABLE='guess': "), message


def test_deprecated_keys_are_documented_as_such() -> None:
    rows = {row[0]: row for row in settings_help()}
    for old, new in (("redis_url", "url"), ("redis_timeout_seconds", "timeout_seconds")):
        assert rows[f"budgets.{old}"][3].startswith(f"Deprecated: use redis.{new} "), old
        assert rows[f"budgets.{old}"][2] == ""  # the variable sets the new key
    assert rows["redis.url"][2] == "COSTWARDEN_REDIS_URL"
    assert rows["redis.timeout_seconds"][1] == "1.0"
    assert rows["redis.max_connections"][1] == "64"


def test_unknown_setting(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace("port = 4000\n", "port = 4000\nthreads = 4\n")
    message = _error(write_config(text))
    assert message.startswith("costwarden.toml:4: server.threads:"), message
    assert "unknown setting" in message and "key_refresh_seconds" in message


def test_unknown_setting_in_provider(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace(
        'api_key_env = "ANTHROPIC_API_KEY"', 'api_key_env = "ANTHROPIC_API_KEY"\napi_key = "sk"'
    )
    message = _error(write_config(text))
    assert message.startswith("costwarden.toml:"), message
    assert "providers[1].api_key: unknown setting" in message


def test_unknown_setting_in_route_names_the_key(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace(
        'deployments = ["anthropic:claude-haiku-4-5"]',
        'deployments = ["anthropic:claude-haiku-4-5"]\nfallback = true',
    )
    message = _error(write_config(text))
    assert "routes[1].fallback" in message and "unknown setting" in message


def test_unknown_setting_in_route_gives_the_line(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace(
        'deployments = ["anthropic:claude-haiku-4-5"]',
        'deployments = ["anthropic:claude-haiku-4-5"]\nfallback = true',
    )
    assert _error(write_config(text)).startswith("costwarden.toml:22: routes[1].fallback:")


@pytest.mark.parametrize(
    ("old", "new", "key", "expect"),
    [
        ("port = 4000", 'port = "4000"', "server.port", "expected int, got str"),
        ("port = 4000", "port = 4000.5", "server.port", "expected int, got float"),
        ('host = "127.0.0.1"', "host = 127", "server.host", "expected str, got int"),
        (
            "[server]\n",
            '[server]\nkey_refresh_seconds = "1s"\n',
            "server.key_refresh_seconds",
            "expected float, got str",
        ),
    ],
)
def test_bad_type(
    write_config: Callable[[str], str], old: str, new: str, key: str, expect: str
) -> None:
    text = ISSUE_CONFIG.replace(old, new, 1)
    message = _error(write_config(text))
    line = _line(text, new.splitlines()[-1])
    assert message.startswith(f"costwarden.toml:{line}: {key}:"), message
    assert expect in message


def test_bool_is_not_an_int(write_config: Callable[[str], str]) -> None:
    message = _error(write_config(ISSUE_CONFIG.replace("port = 4000", "port = true")))
    assert message.startswith("costwarden.toml:3: server.port:")


def test_int_is_accepted_for_float(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace("[server]\n", "[server]\nkey_refresh_seconds = 2\n")
    s = load_settings(write_config(text), env=SECRETS)
    assert s.server.key_refresh_seconds == 2.0 and isinstance(s.server.key_refresh_seconds, float)


def test_bad_ledger_mode(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace("[storage]\n", '[storage]\nledger_mode = "sometimes"\n')
    message = _error(write_config(text))
    assert message.startswith("costwarden.toml:5: storage.ledger_mode:"), message
    assert "batched" in message and "durable" in message


def test_bad_port_range(write_config: Callable[[str], str]) -> None:
    message = _error(write_config(ISSUE_CONFIG.replace("port = 4000", "port = 70000")))
    assert message.startswith("costwarden.toml:3: server.port:") and "65535" in message


def test_connection_limits_defaults() -> None:
    server = ServerSettings()
    assert server.max_header_bytes == 65536
    assert (server.header_timeout_seconds, server.body_timeout_seconds) == (10.0, 60.0)


@pytest.mark.parametrize(
    ("line", "key", "expect"),
    [
        ("workers = 0", "server.workers", "at least 1"),
        ('workers = "auto"', "server.workers", "expected int, got str"),
        ("max_header_bytes = 4095", "server.max_header_bytes", "at least 4096"),
        ("max_header_bytes = -1", "server.max_header_bytes", "at least 4096"),
        ('max_header_bytes = "64k"', "server.max_header_bytes", "expected int, got str"),
        ("header_timeout_seconds = 0", "server.header_timeout_seconds", "positive"),
        ("header_timeout_seconds = -1.5", "server.header_timeout_seconds", "positive"),
        ("header_timeout_seconds = inf", "server.header_timeout_seconds", "positive"),
        ("body_timeout_seconds = 0.0", "server.body_timeout_seconds", "positive"),
        ("body_timeout_seconds = nan", "server.body_timeout_seconds", "positive"),
        ('body_timeout_seconds = "30s"', "server.body_timeout_seconds", "expected float"),
    ],
)
def test_bad_connection_limits(
    write_config: Callable[[str], str], line: str, key: str, expect: str
) -> None:
    text = ISSUE_CONFIG.replace("[server]\n", f"[server]\n{line}\n")
    message = _error(write_config(text))
    assert message.startswith(f"costwarden.toml:2: {key}:"), message
    assert expect in message


def test_connection_limits_from_the_environment(write_config: Callable[[str], str]) -> None:
    env = {
        **SECRETS,
        "COSTWARDEN_MAX_HEADER_BYTES": "8192",
        "COSTWARDEN_HEADER_TIMEOUT_SECONDS": "3",
        "COSTWARDEN_BODY_TIMEOUT_SECONDS": "45.5",
    }
    server = load_settings(write_config(ISSUE_CONFIG), env=env).server
    assert server.max_header_bytes == 8192
    assert (server.header_timeout_seconds, server.body_timeout_seconds) == (3.0, 45.5)
    for var, value, key in [
        ("COSTWARDEN_MAX_HEADER_BYTES", "100", "server.max_header_bytes"),
        ("COSTWARDEN_HEADER_TIMEOUT_SECONDS", "0", "server.header_timeout_seconds"),
        ("COSTWARDEN_BODY_TIMEOUT_SECONDS", "-5", "server.body_timeout_seconds"),
    ]:
        message = _error("costwarden.toml", {**SECRETS, var: value})
        assert message.startswith(f"environment {var}={value!r}: {key}:"), message
    message = _error("costwarden.toml", {**SECRETS, "COSTWARDEN_BODY_TIMEOUT_SECONDS": "soon"})
    assert "COSTWARDEN_BODY_TIMEOUT_SECONDS" in message and "expected float" in message


def test_duplicate_route(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace('model = "claude-haiku-4-5"', 'model = "gpt-4o-mini"')
    message = _error(write_config(text))
    assert "routes[1].model" in message and "duplicate route 'gpt-4o-mini'" in message
    assert message.startswith("costwarden.toml:")


_LINE_CASES = [
    # (old, new, expected start of the message)
    pytest.param(
        'model = "claude-haiku-4-5"',
        'model = "gpt-4o-mini"',
        "costwarden.toml:20: routes[1].model:",
        id="duplicate-route",
    ),
    pytest.param(
        '["openai:gpt-4o-mini"]',
        '["gpt-4o-mini"]',
        "costwarden.toml:18: routes[0].deployments[0]:",
        id="deployment-without-prefix",
    ),
    pytest.param(
        'api_key_env = "ANTHROPIC_API_KEY"',
        'api_key_env = "ANTHROPIC_API_KEY"\napi_key = "sk"',
        "costwarden.toml:16: providers[1].api_key:",
        id="unknown-key-in-second-provider",
    ),
]


@pytest.mark.parametrize(("old", "new", "start"), _LINE_CASES)
def test_error_line_points_at_the_offending_line(
    write_config: Callable[[str], str], old: str, new: str, start: str
) -> None:
    message = _error(write_config(ISSUE_CONFIG.replace(old, new, 1)))
    assert message.startswith(start), message


def test_duplicate_provider(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace('name = "anthropic"', 'name = "openai"')
    message = _error(write_config(text))
    assert "providers[1].name" in message and "duplicate provider name 'openai'" in message


def test_price_override_as_float_is_refused(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG + (
        '[[deployments]]\nid = "openai:gpt-4o-mini"\n'
        'price = { input_mtok = "0.15", output_mtok = 0.6 }\n'
    )
    message = _error(write_config(text))
    line = _line(text, "output_mtok = 0.6")
    assert message.startswith(f"costwarden.toml:{line}: deployments[0].price.output_mtok:")
    assert 'write prices as strings ("0.15")' in message


def test_price_override_as_string_is_exact(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG + (
        '[[deployments]]\nid = "openai:gpt-4o-mini"\n'
        'price = { input_mtok = "0.15", output_mtok = "0.6", reasoning_mtok = 3 }\n'
    )
    s = load_settings(write_config(text), env=SECRETS)
    price = s.deployments["openai:gpt-4o-mini"].price
    assert price == PriceOverride(
        input_mtok=Decimal("0.15"), output_mtok=Decimal("0.6"), reasoning_mtok=Decimal(3)
    )
    assert all(isinstance(v, Decimal | None) for v in dataclasses.astuple(price))


@pytest.mark.parametrize(
    ("rate", "expect"),
    [('"-1"', "non-negative"), ('"abc"', "not a number"), ('"NaN"', "non-negative")],
)
def test_bad_price_values(write_config: Callable[[str], str], rate: str, expect: str) -> None:
    text = ISSUE_CONFIG + _DEP_HEAD + f"price = {{ input_mtok = {rate} }}\n"
    message = _error(write_config(text))
    assert "deployments[0].price.input_mtok" in message and expect in message


def test_unknown_price_rate(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG + '[[deployments]]\nid = "openai:gpt-4o-mini"\nprice = { in_mtok = "1" }\n'
    message = _error(write_config(text))
    assert "deployments[0].price.in_mtok" in message and "input_mtok" in message


def test_deployment_without_provider_prefix(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace('["openai:gpt-4o-mini"]', '["gpt-4o-mini"]')
    message = _error(write_config(text))
    assert "routes[0].deployments[0]" in message
    assert "expected 'provider:model', got 'gpt-4o-mini'" in message
    assert message.startswith("costwarden.toml:")


def test_deployment_table_with_unknown_provider(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG + '[[deployments]]\nid = "azure:gpt-4o"\n'
    message = _error(write_config(text))
    line = _line(text, "azure:gpt-4o")
    assert message.startswith(f"costwarden.toml:{line}: deployments[0].id:"), message
    assert "unknown provider 'azure'" in message


def test_route_with_empty_deployments(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace('["openai:gpt-4o-mini"]', "[]")
    assert "routes[0].deployments" in _error(write_config(text))


def test_bad_provider_type_and_url(write_config: Callable[[str], str]) -> None:
    message = _error(write_config(ISSUE_CONFIG.replace('type = "anthropic"', 'type = "vertex"')))
    assert message.startswith("costwarden.toml:13: providers[1].type:") and "vertex" in message
    text = ISSUE_CONFIG.replace('"http://127.0.0.1:9000"', '"127.0.0.1:9000"')
    message = _error(write_config(text))
    assert message.startswith("costwarden.toml:14: providers[1].base_url:")


def test_secret_values_never_in_errors(write_config: Callable[[str], str]) -> None:
    text = ISSUE_CONFIG.replace("port = 4000", "port = 0")
    message = _error(write_config(text))
    assert "sk-openai-test" not in message and "sk-ant-test" not in message


# --------------------------------------------------------------------- settings_help


_DOCUMENTED = [
    ("server", ServerSettings),
    ("storage", StorageSettings),
    ("providers[]", ProviderSettings),
    ("deployments[]", DeploymentSettings),
    ("routes[]", RouteSettings),
    ("switches", SwitchSettings),
    ("resilience", ResilienceSettings),
    ("budgets", BudgetSettings),
    ("redis", RedisSettings),
    ("metrics", MetricsSettings),
    ("security", SecuritySettings),
]
# Filled in by the loader, never written in the file: the credential from api_key_env, and a
# deployment's provider from the part of its id before the colon.
_INTERNAL = {
    "providers[].api_key",
    "providers[].secret_key",
    "providers[].session_token",
    "deployments[].provider",
    "deployments[].origin",
}


def test_settings_help_covers_every_field() -> None:
    rows = settings_help()
    assert all(len(row) == 4 and all(isinstance(c, str) for c in row) for row in rows)
    by_key = {row[0]: row for row in rows}
    assert len(by_key) == len(rows), "duplicate keys in settings_help()"
    expected = {
        f"{section}.{f.name}" for section, cls in _DOCUMENTED for f in dataclasses.fields(cls)
    } - _INTERNAL
    assert expected <= set(by_key), expected - set(by_key)
    for key in expected:
        assert by_key[key][3].strip(), f"{key} has no help text"
    assert not _INTERNAL & set(by_key)
    # Every environment variable the loader reads is listed against its setting.
    env_vars = {
        f"{section}.{f.name}": f.metadata["env"]
        for section, cls in _DOCUMENTED
        for f in dataclasses.fields(cls)
        if f.metadata.get("env")
    }
    for key, var in env_vars.items():
        assert by_key[key][2] == var
    assert any(row[2] == "COSTWARDEN_ADMIN_TOKEN" and row[3] for row in rows)
    # Defaults shown are the real defaults.
    assert by_key["server.port"][1] == str(ServerSettings().port)
    assert by_key["storage.ledger_mode"][1] == "batched"
    assert {f.name for f in dataclasses.fields(Settings)} >= {"admin_token"}


def test_settings_help_documents_price_rates() -> None:
    text = " ".join(" ".join(row) for row in settings_help())
    for f in dataclasses.fields(PriceOverride):
        assert f.name in text, f.name


_ROUTE = '[[routes]]\nmodel = "gpt-4o"\ndeployments = ["openai:gpt-4o"]\n'
_DEP = '[[deployments]]\nid = "openai:gpt-4o-mini"\n'

# One valid, non-default example per documented key: (where to put it, line, check).
CHANNEL_ENV = {
    "CW_CHANNEL_URL": "https://hooks.example.com/services/T0/B0/x",
    "CW_CHANNEL_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "CW_SMTP_PASSWORD": "smtp-pw",
}
_HOOK = (
    'name = "ops"\ntype = "webhook"\nurl = "https://hooks.example.com/x"\n'
    f'secret = "{CHANNEL_ENV["CW_CHANNEL_SECRET"]}"\n'
)
_MAIL = (
    'name = "mail"\ntype = "email"\nto = ["a@example.com"]\nsender = "cw@example.com"\n'
    'host = "smtp.example.com"\n'
)
_AZURE = (
    '\n[[providers]]\nname = "az"\ntype = "azure"\nbase_url = "https://r.openai.azure.com"\n'
    'api_version = "2024-10-21"\n'
)
_BEDROCK = (
    '\n[[providers]]\nname = "aws"\ntype = "bedrock"\nregion = "eu-west-1"\n'
    'api_key_env = "OTHER_KEY"\nsecret_key_env = "OTHER_KEY"\n'
)
_TLS = '\n[[providers]]\nname = "lab"\ntype = "openai"\nbase_url = "https://llm.test/v1"\n'
_EXAMPLES: dict[str, tuple[str, str, Callable[[Settings], bool]]] = {
    "server.host": ("[server]", 'host = "0.0.0.0"', lambda s: s.server.host == "0.0.0.0"),
    "server.port": ("[server]", "port = 4100", lambda s: s.server.port == 4100),
    "server.workers": ("[server]", "workers = 3", lambda s: s.server.workers == 3),
    "server.max_body_bytes": (
        "[server]",
        "max_body_bytes = 1024",
        lambda s: s.server.max_body_bytes == 1024,
    ),
    "server.max_response_bytes": (
        "[server]",
        "max_response_bytes = 4096",
        lambda s: s.server.max_response_bytes == 4096,
    ),
    "server.cancel_on_disconnect": (
        "[server]",
        "cancel_on_disconnect = false",
        lambda s: s.server.cancel_on_disconnect is False,
    ),
    "server.key_refresh_seconds": (
        "[server]",
        "key_refresh_seconds = 0.1",
        lambda s: s.server.key_refresh_seconds == 0.1,
    ),
    "server.max_header_bytes": (
        "[server]",
        "max_header_bytes = 16384",
        lambda s: s.server.max_header_bytes == 16384,
    ),
    "server.header_timeout_seconds": (
        "[server]",
        "header_timeout_seconds = 2.5",
        lambda s: s.server.header_timeout_seconds == 2.5,
    ),
    "server.body_timeout_seconds": (
        "[server]",
        "body_timeout_seconds = 30",
        lambda s: s.server.body_timeout_seconds == 30.0,
    ),
    "server.log_level": (
        "[server]",
        'log_level = "debug"',
        lambda s: s.server.log_level == "debug",
    ),
    "storage.database_url": (
        "[storage]",
        'database_url = "postgresql://u@h/d"',
        lambda s: s.storage.database_url == "postgresql://u@h/d",
    ),
    "storage.ledger_mode": (
        "[storage]",
        'ledger_mode = "durable"',
        lambda s: s.storage.ledger_mode == "durable",
    ),
    "storage.flush_interval_ms": (
        "[storage]",
        "flush_interval_ms = 20",
        lambda s: s.storage.flush_interval_ms == 20,
    ),
    "storage.spool_dir": (
        "[storage]",
        'spool_dir = "/var/lib/costwarden/spool"',
        lambda s: s.storage.spool_dir == "/var/lib/costwarden/spool",
    ),
    "providers[].name": ("[[providers]]", 'name = "oai"', lambda s: s.providers[0].name == "oai"),
    "providers[].type": (
        "[[providers]]",
        'type = "openai"',
        lambda s: s.providers[0].type == "openai",
    ),
    "providers[].base_url": (
        "[[providers]]",
        'base_url = "https://api.openai.com/v1/"',
        lambda s: s.providers[0].base_url == "https://api.openai.com/v1",
    ),
    "providers[].api_key_env": (
        "[[providers]]",
        'api_key_env = "OTHER_KEY"',
        lambda s: s.providers[0].api_key == "o",
    ),
    "providers[].price_provider": (
        "[[providers]]",
        'price_provider = "azure"',
        lambda s: s.providers[0].price_provider == "azure",
    ),
    "providers[].connect_timeout": (
        "[[providers]]",
        "connect_timeout = 1",
        lambda s: s.providers[0].connect_timeout == 1.0,
    ),
    "providers[].timeout": (
        "[[providers]]",
        "timeout = 30.5",
        lambda s: s.providers[0].timeout == 30.5,
    ),
    "providers[].api_version": (
        "append",
        _AZURE,
        lambda s: s.providers[-1].api_version == "2024-10-21",
    ),
    "providers[].auth": (
        "append",
        _AZURE + 'auth = "entra"\n',
        lambda s: s.providers[-1].auth == "entra",
    ),
    "providers[].region": (
        "append",
        _BEDROCK,
        lambda s: s.providers[-1].base_url == "https://bedrock-runtime.eu-west-1.amazonaws.com",
    ),
    "providers[].secret_key_env": (
        "append",
        _BEDROCK,
        lambda s: s.providers[-1].secret_key == "o",
    ),
    "providers[].session_token_env": (
        "append",
        _BEDROCK + 'session_token_env = "OTHER_KEY"\n',
        lambda s: s.providers[-1].session_token == "o",
    ),
    "providers[].ca_bundle": (
        "append",
        _TLS + f'ca_bundle = "{__file__}"\n',
        lambda s: s.providers[-1].ca_bundle == __file__,
    ),
    "providers[].client_cert": (
        "append",
        _TLS + f'client_cert = "{__file__}"\n',
        lambda s: s.providers[-1].client_cert == __file__,
    ),
    "providers[].client_key": (
        "append",
        _TLS + f'client_cert = "{__file__}"\nclient_key = "{__file__}"\n',
        lambda s: s.providers[-1].client_key == __file__,
    ),
    "providers[].tls_verify": (
        "append",
        _TLS + "tls_verify = false\n",
        lambda s: s.providers[-1].tls_verify is False,
    ),
    "deployments[].id": ("append", _DEP, lambda s: "openai:gpt-4o-mini" in s.deployments),
    "deployments[].price_model": (
        "append",
        _DEP + 'price_model = "gpt-4o"\n',
        lambda s: s.deployments["openai:gpt-4o-mini"].price_model == "gpt-4o",
    ),
    "deployments[].model": (
        "append",
        _DEP + 'model = "gpt-4o-mini-2024-07-18"\n',
        lambda s: s.deployments["openai:gpt-4o-mini"].model == "gpt-4o-mini-2024-07-18",
    ),
    "deployments[].price": (
        "append",
        _DEP + 'price = { input_mtok = "1" }\n',
        lambda s: s.deployments["openai:gpt-4o-mini"].price == PriceOverride(Decimal(1)),
    ),
    **{
        f"deployments[].price.{rate}": (
            "append",
            _DEP + f'price = {{ {rate} = "0.5" }}\n',
            lambda s, rate=rate: (
                getattr(s.deployments["openai:gpt-4o-mini"].price, rate) == Decimal("0.5")
            ),
        )
        for rate in (
            "input_mtok",
            "cached_input_mtok",
            "cache_write_mtok",
            "output_mtok",
            "reasoning_mtok",
        )
    },
    "budgets.redis_url": (  # deprecated: mapped onto redis.url
        "append",
        '[budgets]\nredis_url = "redis://127.0.0.1:6379/0"\n',
        lambda s: s.redis.url == s.budgets.redis_url == "redis://127.0.0.1:6379/0",
    ),
    "redis.url": (
        "append",
        '[redis]\nurl = "rediss://:pw@cache.internal:6380/2"\n',
        lambda s: s.redis.url == "rediss://:pw@cache.internal:6380/2",
    ),
    "redis.timeout_seconds": (
        "append",
        "[redis]\ntimeout_seconds = 0.25\n",
        lambda s: s.redis.timeout_seconds == 0.25,
    ),
    "redis.max_connections": (
        "append",
        "[redis]\nmax_connections = 16\n",
        lambda s: s.redis.max_connections == 16,
    ),
    "redis.cluster": (
        "append",
        '[redis]\nurl = "redis://node1:7000/0"\ncluster = true\n',
        lambda s: s.redis.cluster,
    ),
    "redis.on_unavailable": (
        "append",
        '[redis]\non_unavailable = "fail_open"\n',
        lambda s: s.redis.on_unavailable == "fail_open",
    ),
    "otel.enabled": ("append", "[otel]\nenabled = true\n", lambda s: s.otel.enabled),
    "otel.endpoint": (
        "append",
        '[otel]\nendpoint = "https://collector:4318/v1/traces"\n',
        lambda s: s.otel.endpoint == "https://collector:4318/v1/traces",
    ),
    "otel.service_name": (
        "append",
        '[otel]\nservice_name = "gw-eu"\n',
        lambda s: s.otel.service_name == "gw-eu",
    ),
    "metrics.enabled": (
        "append",
        "[metrics]\nenabled = false\n",
        lambda s: s.metrics.enabled is False,
    ),
    "metrics.public": ("append", "[metrics]\npublic = true\n", lambda s: s.metrics.public),
    "metrics.max_orgs": (
        "append",
        "[metrics]\nmax_orgs = 10\n",
        lambda s: s.metrics.max_orgs == 10,
    ),
    "metrics.max_models": (
        "append",
        "[metrics]\nmax_models = 0\n",
        lambda s: s.metrics.max_models == 0,
    ),
    "metrics.max_limits": (
        "append",
        "[metrics]\nmax_limits = 5\n",
        lambda s: s.metrics.max_limits == 5,
    ),
    "budgets.timezone": (
        "append",
        '[budgets]\ntimezone = "America/New_York"\n',
        lambda s: s.budgets.timezone == "America/New_York",
    ),
    **{
        f"budgets.{name}": (
            "append",
            f"[budgets]\n{name} = 7\n",
            lambda s, name=name: getattr(s.budgets, name) == 7,
        )
        for name in (
            "min_output_tokens",
            "default_max_output_tokens",
            "expected_output_tokens",
            "prompt_overhead_tokens",
            "lease_seconds",
            "redis_timeout_seconds",  # deprecated: mapped onto redis.timeout_seconds
            "refresh_seconds",
            "inflight_retry_seconds",
            "slice_flush_ms",
        )
    },
    "budgets.leased_slices": (
        "append",
        "[budgets]\nleased_slices = true\n",
        lambda s: s.budgets.leased_slices is True,
    ),
    "tiers[].name": ("append", '[[tiers]]\nname = "pro"\n', lambda s: s.tiers[0].name == "pro"),
    **{
        f"tiers[].{scope}": (
            "append",
            f'[[tiers]]\nname = "pro"\n{scope} = {{ daily_usd = "2.5" }}\n',
            lambda s, scope=scope: s.tiers[0].limits == {scope: {"daily_usd": "2.5"}},
        )
        for scope in ("org", "project", "key", "user", "session")
    },
    "deployments[].max_output_tokens": (
        "append",
        _DEP + "max_output_tokens = 8192\n",
        lambda s: s.deployments["openai:gpt-4o-mini"].max_output_tokens == 8192,
    ),
    "switches.refresh_seconds": (
        "append",
        "[switches]\nrefresh_seconds = 0.25\n",
        lambda s: s.switches.refresh_seconds == 0.25,
    ),
    "switches.message": (
        "append",
        '[switches]\nmessage = "Back soon."\n',
        lambda s: s.switches.message == "Back soon.",
    ),
    **{
        f"alerts.channels[].{name}": (
            "append",
            f"[[alerts.channels]]\n{toml}\n",
            lambda s, name=name, value=value: value(s.alerts.channels[0]),
        )
        for name, toml, value in (
            ("name", _HOOK, lambda c: c.name == "ops"),
            ("type", _HOOK, lambda c: c.type == "webhook"),
            ("url", _HOOK, lambda c: c.url == "https://hooks.example.com/x"),
            ("url_env", 'name = "s"\ntype = "slack"\nurl_env = "CW_CHANNEL_URL"',
             lambda c: c.url == CHANNEL_ENV["CW_CHANNEL_URL"]),
            ("secret", _HOOK, lambda c: c.secret == CHANNEL_ENV["CW_CHANNEL_SECRET"]),
            ("secret_env", _HOOK.replace(f'secret = "{CHANNEL_ENV["CW_CHANNEL_SECRET"]}"',
                                         'secret_env = "CW_CHANNEL_SECRET"'),
             lambda c: c.secret == CHANNEL_ENV["CW_CHANNEL_SECRET"]),
            ("to", _MAIL, lambda c: c.email.to == ("a@example.com",)),
            ("sender", _MAIL, lambda c: c.email.sender == "cw@example.com"),
            ("host", _MAIL, lambda c: c.email.host == "smtp.example.com"),
            ("port", _MAIL + "port = 2525", lambda c: c.email.port == 2525),
            ("username", _MAIL + 'username = "cw"\npassword = "pw"',
             lambda c: c.email.username == "cw"),
            ("password", _MAIL + 'username = "cw"\npassword = "pw"',
             lambda c: c.email.password == "pw"),
            ("password_env", _MAIL + 'username = "cw"\npassword_env = "CW_SMTP_PASSWORD"',
             lambda c: c.email.password == CHANNEL_ENV["CW_SMTP_PASSWORD"]),
            ("security", _MAIL + 'security = "tls"', lambda c: c.email.security == "tls"),
            ("min_severity", _HOOK + 'min_severity = "critical"',
             lambda c: c.filter.min_severity == "critical"),
            ("org_ids", _HOOK + 'org_ids = ["org_1"]', lambda c: c.filter.org_ids == ("org_1",)),
            ("kinds", _HOOK + 'kinds = ["forecast"]', lambda c: c.filter.kinds == ("forecast",)),
            ("enabled", _HOOK + "enabled = false", lambda c: c.enabled is False),
        )
    },
    **{
        f"events.{name}": (
            "append",
            f"[events]\n{name} = {value}\n",
            lambda s, name=name, value=value: getattr(s.events, name) == value,
        )
        for name, value in (
            ("retention_days", 1.5),
            ("flush_ms", 5.0),
            ("poll_seconds", 2.0),
            ("buffer", 50),
            ("client_queue", 20),
        )
    },
    **{
        f"analytics.{name}": (
            "append",
            f"[analytics]\n{name} = {toml}\n",
            lambda s, name=name, value=value: getattr(s.analytics, name) == value,
        )
        for name, toml, value in (
            ("enabled", "false", False),
            ("rollup_interval_seconds", "30.0", 30.0),
            ("lag_seconds", "10.0", 10.0),
            ("reconcile_days", "3", 3),
            ("raw_retention_days", "90", 90),
        )
    },
    **{
        f"sessions.{name}": (
            "append",
            f"[sessions]\n{name} = {toml}\n",
            lambda s, name=name, value=value: getattr(s.sessions, name) == value,
        )
        for name, toml, value in (
            ("enabled", "false", False),
            ("wind_down_pct", "80", 80),
            ("wake_interval_seconds", "0.5", 0.5),
            ("loop_action", '"flag"', "flag"),
            ("repeat_count", "4", 4),
            ("repeat_window_seconds", "300", 300),
            ("velocity_factor", "20", 20),
            ("velocity_min_minutes", "10", 10),
            ("error_burst", "3", 3),
        )
    },
    **{
        f"security.{name}": (
            "append",
            f"[security]\n{name} = {toml}\n",
            lambda s, name=name, value=value: getattr(s.security, name) == value,
        )
        for name, toml, value in (
            ("enabled", "false", False),
            ("time_budget_ms", "5", 5.0),
            ("on_timeout", '"closed"', "closed"),
            ("scan_memo_entries", "0", 0),
            ("min_confidence", "0.9", 0.9),
            ("flag_confidence", "0.6", 0.6),
            ("injection_action", '"block"', "block"),
            ("secrets_action", '"redact"', "redact"),
            ("pii_action", '"flag"', "flag"),
            ("tools_action", '"off"', "off"),
        )
    },
    **{
        f"alerts.{name}": (
            "append",
            f"[alerts]\n{name} = {toml}\n",
            lambda s, name=name, value=value: getattr(s.alerts, name) == value,
        )
        for name, toml, value in (
            ("enabled", "false", False),
            ("dashboard_url", '"https://gw.example.com"', "https://gw.example.com"),
            ("delivery_poll_seconds", "0.5", 0.5),
            ("retry_base_seconds", "30.0", 30.0),
            ("forecast_interval_seconds", "60.0", 60.0),
            ("send_timeout_seconds", "3.0", 3.0),
            ("watch_interval_seconds", "45.0", 45.0),
            ("spike_factor", "2.5", 2.5),
            ("spike_history_days", "14", 14),
            ("spike_min_history_days", "5", 5),
            ("spike_min_usd", '"2.50"', "2.50"),
            ("spike_min_tokens", "500000", 500000),
            ("error_rate_pct", "50", 50),
            ("error_rate_minutes", "3", 3),
            ("error_rate_min_requests", "30", 30),
        )
    },
    "deployments[].context_window": (
        "append",
        _DEP + "context_window = 128000\n",
        lambda s: s.deployments["openai:gpt-4o-mini"].context_window == 128000,
    ),
    **{
        f"resilience.{name}": (
            "append",
            f"[resilience]\n{name} = {value}\n",
            lambda s, name=name, value=value: getattr(s.resilience, name) == value,
        )
        for name, value in (
            ("failure_threshold", 3),
            ("failure_rate", 0.25),
            ("window_seconds", 30.0),
            ("min_requests", 10),
            ("cooldown_seconds", 5.0),
            ("probe_timeout_seconds", 9.0),
            ("sync_seconds", 0.25),
            ("retry_base_ms", 50),
            ("retry_max_ms", 500),
            ("max_retry_after_seconds", 3.0),
        )
    },
    "routes[].fallbacks": (
        "append",
        _ROUTE + 'fallbacks = ["gpt-4o-mini"]\n',
        lambda s: s.routes[-1].fallbacks == ["gpt-4o-mini"],
    ),
    "routes[].retries": ("append", _ROUTE + "retries = 0\n", lambda s: s.routes[-1].retries == 0),
    **{
        f"routes[].{name}": (
            "append",
            _ROUTE + f"{name} = 7\n",
            lambda s, name=name: getattr(s.routes[-1], name) == 7.0,
        )
        for name in ("connect_timeout", "first_byte_timeout", "timeout")
    },
    "routes[].degraded": (
        "append",
        _ROUTE + 'degraded = { content = "Busy." }\n',
        lambda s: s.routes[-1].degraded is not None and s.routes[-1].degraded.content == "Busy.",
    ),
    "routes[].model": ("append", _ROUTE, lambda s: s.routes[-1].model == "gpt-4o"),
    "routes[].strategy": (
        "append",
        _ROUTE + 'strategy = "cheapest"\n',
        lambda s: s.routes[-1].strategy == "cheapest",
    ),
    "routes[].weights": (
        "append",
        _ROUTE + 'strategy = "weighted"\nweights = [100]\n',
        lambda s: s.routes[-1].weights == (100.0,),
    ),
    "routes[].downgrade": (
        "append",
        _ROUTE + 'downgrade = [{ above_percent = 80, to = "openai:gpt-4o" }]\n',
        lambda s: s.routes[-1].downgrade[0].to == "openai:gpt-4o",
    ),
    "routes[].downgrade_on_refusal": (
        "append",
        _ROUTE + "downgrade_on_refusal = true\n",
        lambda s: s.routes[-1].downgrade_on_refusal is True,
    ),
    "routes[].cache": (
        "append",
        _ROUTE + "cache = { ttl_seconds = 90 }\n",
        lambda s: s.routes[-1].cache is not None and s.routes[-1].cache.ttl_seconds == 90,
    ),
    "deployments[].capabilities": (
        "append",
        _DEP + 'capabilities = ["tools"]\n',
        lambda s: s.deployments["openai:gpt-4o-mini"].capabilities == {"tools"},
    ),
    **{
        f"cache.{name}": (
            "append",
            f"[cache]\n{name} = {value}\n",
            lambda s, name=name, value=value: str(getattr(s.cache, name)).lower() == str(value),
        )
        for name, value in (
            ("max_bytes", 1000),
            ("default_ttl_seconds", 30),
            ("max_entry_bytes", 500),
            ("replay_unsafe", "true"),
        )
    },
    "cache.backend": (
        "append",
        '[redis]\nurl = "redis://127.0.0.1:6379/0"\n[cache]\nbackend = "redis"\n',
        lambda s: s.cache.backend == "redis",
    ),
    "server.root_path": (
        "[server]",
        'root_path = "/costwarden"',
        lambda s: s.server.root_path == "/costwarden",
    ),
    **{
        f"dashboard.{name}": (
            "append",
            f"[dashboard]\n{name} = {value}\n",
            lambda s, name=name, value=value: str(getattr(s.dashboard, name)).lower()
            == str(value).strip('"').lower(),
        )
        for name, value in (
            ("enabled", "false"),
            ("session_max_age_seconds", 3600),
            ("cookie_secure", "true"),
            ("jwt_algorithms", '"HS256"'),
            ("jwt_audience", '"costwarden"'),
            ("jwt_issuer", '"https://idp.example.com/"'),
            ("jwt_role_claim", '"role"'),
            ("jwt_org_claim", '"tenant"'),
        )
    },
    "dashboard.jwt_jwks_file": (
        "append",
        '[dashboard]\njwt_jwks_file = "/etc/idp.json"\njwt_audience = "a"\njwt_issuer = "i"\n',
        lambda s: s.dashboard.jwt_jwks_file == "/etc/idp.json",
    ),
    **{
        f"billing.{name}": (
            "append",
            f"[billing]\n{name} = {value}\n",
            lambda s, name=name, value=value: str(getattr(s.billing, name)).lower()
            == str(value).strip('"').lower(),
        )
        for name, value in (
            ("free_tier", '"basic"'),
            ("grace_period_hours", 24.5),
            ("suspension_message", '"unpaid"'),
            ("tolerance_seconds", 60),
            ("check_interval_seconds", 10.0),
        )
    },
    "billing.price_tiers": (
        "append",
        '[billing]\nprice_tiers = { pro_monthly = "pro", "team.yearly" = "team" }\n',
        lambda s: s.billing.price_tiers == {"pro_monthly": "pro", "team.yearly": "team"},
    ),
    "routes[].deployments": (
        "append",
        _ROUTE,
        lambda s: s.routes[-1].deployments == ["openai:gpt-4o"],
    ),
}


def test_examples_cover_every_documented_key() -> None:
    documented = {row[0] for row in settings_help() if not row[0].endswith("(env only)")}
    assert documented == set(_EXAMPLES)


@pytest.mark.parametrize("key", list(_EXAMPLES))
def test_every_documented_key_is_accepted(write_config: Callable[[str], str], key: str) -> None:
    where, line, check = _EXAMPLES[key]
    if where == "append":
        text = ISSUE_CONFIG + line
    else:
        # Put the line first in the (first) table ``where``, replacing that table's own line
        # for the same key, if it has one.
        lines = ISSUE_CONFIG.splitlines()
        head = lines.index(where)
        end = next((i for i in range(head + 1, len(lines)) if lines[i].startswith("[")), len(lines))
        name = line.split(" = ")[0]
        body = [x for x in lines[head + 1 : end] if not x.startswith(name + " = ")]
        text = "\n".join([*lines[: head + 1], line, *body, *lines[end:]]) + "\n"
        if key == "providers[].name":
            text = text.replace('["openai:', '["oai:')
    settings = load_settings(
        write_config(text), env={**SECRETS, "OTHER_KEY": "o", **CHANNEL_ENV}
    )
    assert check(settings)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("retention_days = 0", "events.retention_days: must be a positive number"),
        ("flush_ms = -1", "events.flush_ms: must be a positive number"),
        ("poll_seconds = inf", "events.poll_seconds: must be a positive number"),
        ("buffer = 0", "events.buffer: must be at least 1"),
        ("client_queue = 0", "events.client_queue: must be at least 1"),
    ],
)
def test_bad_event_settings_are_named(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(text=f"[events]\n{line}\n", env={})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("delivery_poll_seconds = 0", "alerts.delivery_poll_seconds: must be a positive number"),
        ("retry_base_seconds = -1", "alerts.retry_base_seconds: must be a positive number"),
        ("send_timeout_seconds = inf", "alerts.send_timeout_seconds: must be a positive number"),
        ('dashboard_url = "gw.example.com"', "alerts.dashboard_url: must be an http"),
        ("watch_interval_seconds = 0.0", "alerts.watch_interval_seconds: must be a positive"),
        ("spike_factor = 1.0", "alerts.spike_factor: must be a number above 1"),
        ("spike_factor = nan", "alerts.spike_factor: must be a number above 1"),
        ("spike_history_days = 0", "alerts.spike_history_days: must be between 1 and 31"),
        ("spike_history_days = 32", "alerts.spike_history_days: must be between 1 and 31"),
        ("spike_min_history_days = 8", "alerts.spike_min_history_days: must be between 1 and"),
        ('spike_min_usd = "a dollar"', "alerts.spike_min_usd: must be a decimal amount"),
        ('spike_min_usd = "-1"', "alerts.spike_min_usd: must be a decimal amount"),
        ('spike_min_usd = "Infinity"', "alerts.spike_min_usd: must be a decimal amount"),
        ("spike_min_tokens = -1", "alerts.spike_min_tokens: must be at least 0"),
        ("error_rate_pct = 0", "alerts.error_rate_pct: must be between 1 and 100"),
        ("error_rate_pct = 101", "alerts.error_rate_pct: must be between 1 and 100"),
        ("error_rate_minutes = 61", "alerts.error_rate_minutes: must be between 1 and 60"),
        ("error_rate_min_requests = 0", "alerts.error_rate_min_requests: must be at least 1"),
    ],
)
def test_bad_alert_settings_are_named(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(text=f"[alerts]\n{line}\n", env={})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("rollup_interval_seconds = 0", "analytics.rollup_interval_seconds: must be a positive"),
        ("lag_seconds = inf", "analytics.lag_seconds: must be a positive number"),
        ("reconcile_days = 0", "analytics.reconcile_days: must be from 1 to 366"),
        ("reconcile_days = 367", "analytics.reconcile_days: must be from 1 to 366"),
        ("raw_retention_days = -1", "analytics.raw_retention_days: must be 0 .keep raw rows"),
        ("raw_retention_days = 31", "analytics.raw_retention_days: must be at least 32: "),
        (
            "reconcile_days = 40\nraw_retention_days = 41",
            r"analytics.raw_retention_days: must be more than reconcile_days \+ 1 \(41\)",
        ),
        (
            "enabled = false\nraw_retention_days = 90",
            "analytics.raw_retention_days: needs enabled = true",
        ),
    ],
)
def test_bad_analytics_settings_are_named(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(text=f"[analytics]\n{line}\n", env={})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("wind_down_pct = 0", "sessions.wind_down_pct: must be over 0 and at most 100"),
        ("wind_down_pct = 101", "sessions.wind_down_pct: must be over 0 and at most 100"),
        ("wake_interval_seconds = 0", "sessions.wake_interval_seconds: must be a positive"),
        ('loop_action = "explode"', "sessions.loop_action: must be one of flag, pause, block"),
        ("repeat_count = 1", "sessions.repeat_count: must be at least 2"),
        ("velocity_factor = 1", "sessions.velocity_factor: must be over 1"),
        ("error_burst = 0", "sessions.error_burst: must be at least 1"),
    ],
)
def test_bad_session_settings_are_named(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(text=f"[sessions]\n{line}\n", env={})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("time_budget_ms = 0", "security.time_budget_ms: must be over 0 and at most 10000"),
        ('on_timeout = "maybe"', "security.on_timeout: must be 'open' or 'closed'"),
        ("scan_memo_entries = -1", "security.scan_memo_entries: must be from 0 to 1000000"),
        ("min_confidence = 1.5", "security.min_confidence: must be from 0 to 1"),
        ("flag_confidence = 0.9", "security.flag_confidence: must be at most min_confidence"),
        ('pii_action = "explode"', "security.pii_action: must be one of default, block"),
    ],
)
def test_bad_security_settings_are_named(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(text=f"[security]\n{line}\n", env={})


def test_security_settings_and_the_hash_key_from_the_environment() -> None:
    text = '[security]\npii_action = "redact"\ntime_budget_ms = 5\n'
    settings = load_settings(text=text, env={"COSTWARDEN_SECURITY_HASH_KEY": "k" * 40})
    assert settings.security.pii_action == "redact"
    assert settings.security.time_budget_ms == 5.0
    assert settings.security_hash_key == "k" * 40
    assert "k" * 40 not in repr(settings)
    assert load_settings(text="", env={}).security_hash_key is None


def test_raw_retention_is_off_by_default_and_takes_the_bounds() -> None:
    assert load_settings(text="", env={}).analytics.raw_retention_days == 0
    for days in (32, 366):
        text = f"[analytics]\nraw_retention_days = {days}\n"
        assert load_settings(text=text, env={}).analytics.raw_retention_days == days
    env = {"COSTWARDEN_ANALYTICS_RAW_RETENTION_DAYS": "45"}
    assert load_settings(text="", env=env).analytics.raw_retention_days == 45


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('endpoint = "collector:4318"', "otel.endpoint: must be an http:// or https:// URL"),
        ('service_name = " "', "otel.service_name: must not be empty"),
    ],
)
def test_bad_otel_settings_are_named(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(text=f"[otel]\n{line}\n", env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[billing]\nprice_tiers = 3\n", "billing.price_tiers: must be a table"),
        ('[billing]\nprice_tiers = { a = 1 }\n', "the tier must be a tier name"),
        ('[billing]\nprice_tiers = { a = "no spaces" }\n', "the tier must be a tier name"),
        ("[billing]\ngrace_period_hours = -1\n", "billing.grace_period_hours: must be 0"),
        ("[billing]\ntolerance_seconds = 0\n", "billing.tolerance_seconds"),
        ('[billing]\nfree_tier = ""\n', "billing.free_tier"),
        ("[billing]\nsecret = 1\n", "billing.secret: unknown setting"),
    ],
)
def test_bad_billing_settings_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(text=text, env={})


def test_the_stripe_secrets_come_from_the_environment_only() -> None:
    settings = load_settings(text="", env={"COSTWARDEN_STRIPE_WEBHOOK_SECRET": "whsec_a, whsec_b"})
    assert settings.stripe_webhook_secret == "whsec_a, whsec_b"
    assert "whsec_a" not in repr(settings)
    assert webhook_secrets(settings.stripe_webhook_secret) == ("whsec_a", "whsec_b")
    assert webhook_secrets(None) == webhook_secrets(" , ") == ()
