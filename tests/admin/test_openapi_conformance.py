"""The admin API answers as its OpenAPI document says: schemathesis, every check, every phase.

A real gateway on loopback serves /admin/openapi.json; schemathesis loads it from there and
runs what ``st run --checks all`` runs (examples, coverage, fuzzing with valid and invalid
data, stateful sequences) with the admin token, a fixed seed and a bounded number of
examples, and the test fails on any failure it reports: a status the document does not list,
a valid request refused, an invalid one accepted, a 405 without ``Allow``, a server error...

The engine is synchronous (requests), so it runs in a worker thread while the gateway serves
in the test's event loop. Destructive operations are fine: the database is this test's own.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import schemathesis
from schemathesis.engine import events, from_schema

from costwarden.admin import openapi_inputs
from costwarden.admin.openapi import OPENAPI
from costwarden.mock import MockServer
from tests.helpers import live_gateway

TOKEN = "adm-conformance"
SEED = 20261201
MAX_EXAMPLES = 8
# An event stream never ends: schemathesis reads it until its request timeout.
EVENTS_READ_SECONDS = 0.3
# Operations on ids schemathesis cannot make: alerts are raised by the gateway, never through
# the API, and a request id is known only from the ledger. It reaches them with ids that exist
# only by chance (usually a 404); their successes are tests/admin/test_alerts_api.py's and
# tests/admin/test_request_log_api.py's.
NEED_A_KNOWN_ID = [
    "GET /admin/analytics/requests/{request_id}",
    "GET /admin/alerts/{alert_id}",
    "POST /admin/alerts/{alert_id}/acknowledge",
    "POST /admin/alerts/{alert_id}/snooze",
    "POST /admin/alerts/{alert_id}/resolve",
    # Sessions start from gateway traffic and escalations from loop detection, never through
    # the admin API (tests/admin/test_sessions_api.py has their successes).
    "GET /admin/sessions/{session_id}",
    "POST /admin/escalations/{escalation_id}/resolve",
]
# A rule's target is what the rule says: one that does not exist (an org, project, key or
# tier schemathesis made up) is a 400, not a 404 (tests/admin/test_alert_rules_api.py).
# An analytics range can be well-formed and still not a range: inverted, over 366 days, a
# date that does not exist (2026-02-31), a start off the hour: 400s the pattern cannot tell.
ANALYTICS_RANGES = [
    "analyticsSpend", "analyticsTop", "analyticsChargeback", "analyticsProjection",
    "analyticsRequests",
]  # fmt: skip
RULE_ACCEPTANCE = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
# A tier in the config file: writing or deleting it is the 409 the document promises.
CONFIG_TIER = """
[[tiers]]
name = "free"
org = { daily_usd = "1" }
"""


def _run(base_url: str) -> tuple[list[str], dict[str, set[int]]]:
    """(every failure and error schemathesis reports, {operation: statuses it answered})."""
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # Generation speed depends on the machine's load, not on the API.
            "suppress-health-check": ["too_slow"],
            "headers": {"Authorization": f"Bearer {TOKEN}"},
            "checks": {"enabled": True},
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
            "workers": 1,
            "operations": [
                {"include-path": "/admin/events", "request-timeout": EVENTS_READ_SECONDS},
                {
                    "include-operation-id": "putAlertRule",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": RULE_ACCEPTANCE}
                    },
                },
                *(
                    {
                        "include-operation-id": operation,
                        "checks": {
                            "positive_data_acceptance": {"expected-statuses": RULE_ACCEPTANCE}
                        },
                    }
                    for operation in ANALYTICS_RANGES
                ),
            ],
        }
    )
    schema = schemathesis.openapi.from_url(f"{base_url}/admin/openapi.json", config=config)
    problems: list[str] = []
    statuses: dict[str, set[int]] = {}
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for case_id, interaction in recorder.interactions.items():
                if interaction.response is not None and case_id in recorder.cases:
                    label = recorder.cases[case_id].value.operation.label
                    statuses.setdefault(label, set()).add(interaction.response.status_code)
            for nodes in event.recorder.checks.values():
                for node in nodes:
                    if node.failure_info is not None:
                        failure = node.failure_info.failure
                        problems.append(
                            f"{failure.code} {failure.operation}: {failure.title}\n"
                            f"{failure.message}\n{node.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"error: {event!r}")
        elif isinstance(event, events.EngineFinished):
            problems.extend(str(f) for f in event.failures)
            if event.stop_reason != "completed":
                problems.append(f"stopped: {event.stop_reason}")
    return list(dict.fromkeys(problems)), statuses


async def test_admin_api_conforms_to_its_openapi_document(
    mock: MockServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(
        mock, url, tmp_path, admin_token=TOKEN, extra_toml=CONFIG_TIER
    ) as gw:
        problems, statuses = await asyncio.to_thread(_run, gw.base_url)
    assert not problems, "\n\n".join(problems)
    # Every operation was exercised, and the token was honoured: each one served requests.
    operations = {f"{m.upper()} {path}" for path, item in OPENAPI["paths"].items() for m in item}
    assert set(statuses) == operations
    unserved = [op for op, codes in statuses.items() if not any(200 <= c < 300 for c in codes)]
    assert set(unserved) <= set(NEED_A_KNOWN_ID), statuses



@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        (
            "NAME",
            ["acme", " acme ", "\tx\n", "a b", "x" * 200, " " + "y" * 200],
            ["", " ", "a\x00b", "x" * 201, "a\x7fb"],
        ),
        ("SUBJECT", ["u1", "a\tb", " " * 3 + "z"], ["", "  ", "a\x00", "x" * 201]),
        ("TAG", ["team=search", " t = ", "a=b=c"], ["=x", "nosep", " =v", "a=" + "v" * 201]),
        ("MESSAGE", ["", "  ", "down for maintenance"], ["a\nb", "x" * 501]),
        ("SINCE", ["", "7d", " 24h ", "2024-02-28"], ["7", "d7", "2024-02-30", "0999-01-01"]),
    ],
)
def test_input_patterns(pattern: str, good: list[str], bad: list[str]) -> None:
    # The patterns spell out the handlers' checks; spot-check a few values each way.
    compiled = re.compile(getattr(openapi_inputs, pattern))
    assert [g for g in good if not compiled.search(g)] == []
    assert [b for b in bad if compiled.search(b)] == []


def test_whitespace_class_is_str_isspace() -> None:
    # "Stripped" in the patterns means Python's str.strip(): the same characters exactly.
    ws = re.compile(f"[{openapi_inputs.WS}]")
    spaces = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert {chr(c) for c in range(0x110000) if ws.fullmatch(chr(c))} == spaces
