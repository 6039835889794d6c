"""The analytics part of the admin API's OpenAPI document (``admin.analytics_api``)."""

from __future__ import annotations

from typing import Any

from costwarden.admin.analytics_api import CHARGEBACK_BY, FILTERS, MAX_TOP, TOP_BY
from costwarden.admin.openapi_inputs import NAME, string
from costwarden.admin.openapi_parts import READ, op, path_param, query
from costwarden.admin.request_log_api import COST, LOG_FILTERS, MAX_PAGE
from costwarden.analytics.latency import METHOD
from costwarden.analytics.overview import PERIODS
from costwarden.analytics.query import BY, GRANULARITIES, WHEN

# A calendar month, YYYY-MM, from year 1000 (the handler's ``_month``; December 9999, which
# ends past the calendar, is its one 400 of this form).
MONTH = "^[1-9][0-9]{3}-(?:0[1-9]|1[0-2])$"
_WHEN_HELP = "24h or 30d back from now, a date (UTC midnight), or a time with an offset"
_RANGE = [
    query("since", {"type": "string", "pattern": WHEN, "description": _WHEN_HELP}),
    query("until", {"type": "string", "pattern": WHEN, "description": "default: now"}),
]
_FILTERS = [
    query(name, string(NAME, "org name") if name == "org" else {"type": "string"})
    for name in FILTERS
]
# The response cache's counts, beside the totals of every group of spend and top, spend's
# totals and the overview's (the API's totals carry them; the CLI's report does not).
CACHE_SCHEMA: dict[str, Any] = {
    "cache_hits": {
        "type": ["integer", "null"],
        "description": "response cache hits: requests of status cached (null for tags)",
    },
    "cache_hit_rate": {
        "type": ["string", "null"],
        "description": "response cache hits / requests answered (status success + cached), "
        "a decimal fraction to 4 places; null without such requests (or for tags)",
    },
}
TOTALS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "requests": {"type": "integer"},
        "input_tokens": {"type": "integer"},
        "cached_input_tokens": {"type": "integer"},
        "cache_write_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "reasoning_tokens": {"type": "integer"},
        "cost_usd": {"type": "string", "description": "exact decimal"},
        "cache_savings_usd": {
            "type": "string",
            "description": "prompt cache savings: what the provider's cached input tokens "
            "saved (exact decimal; 0, not computed yet)",
        },
        "saved_usd": {
            "type": "string",
            "description": "response cache savings: what the calls answered from the "
            "gateway's response cache would have cost (exact decimal)",
        },
        "avg_latency_ms": {"type": ["number", "null"]},
        "avg_ttft_ms": {"type": ["number", "null"]},
        **CACHE_SCHEMA,
    },
}
_ESTIMATE = {"type": ["number", "null"], "description": f"ms, {METHOD}"}
OVERVIEW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "period": {"type": "string", "enum": list(PERIODS)},
        "since": {"type": "string", "format": "date-time"},
        "until": {"type": "string", "format": "date-time"},
        **TOTALS_SCHEMA["properties"],
        "active_orgs": {"type": "integer"},
        "error_rate_pct": {"type": ["string", "null"]},
        "p50_latency_ms": _ESTIMATE,
        "p95_latency_ms": _ESTIMATE,
        "p99_latency_ms": _ESTIMATE,
        "latency_method": {
            "type": "object",
            "description": "how each latency figure is obtained: exact, or estimated",
            "properties": {
                "avg_latency_ms": {"type": "string"},
                "percentiles": {"type": "string"},
            },
        },
        "cache_hit_rate_pct": {
            "type": ["string", "null"],
            "description": "cache_hit_rate in percent, one decimal",
        },
        "previous": {
            "type": "object",
            "properties": {"requests": {"type": "integer"}, "cost_usd": {"type": "string"}},
        },
        "cost_change_pct": {"type": ["string", "null"]},
    },
}


def _json(description: str) -> dict[str, Any]:
    return {
        "200": {
            "description": description,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }


ANALYTICS_PATHS: dict[str, Any] = {
    "/admin/analytics/spend": {
        "get": op(
            "Spend, tokens and requests over a range, grouped by any dimensions (or tag), per "
            "hour or day, filtered on any dimension; from the rollups and, past their "
            "watermark, the ledger: equal to the ledger's rows",
            _json("{since, until, by, granularity, data: [{bucket?, <dims>, ...totals, "
                  "cache_hits, cache_hit_rate}], totals} (totals: AnalyticsTotals; saved_usd "
                  "is the response cache's savings, cache_savings_usd the prompt cache's)"),
            *READ, "400", "404",
            operationId="analyticsSpend",
            parameters=[
                *_RANGE,
                query("by", {"type": "string", "pattern": BY,
                             "description": "comma-separated dimensions"}),
                query("granularity", {"type": "string", "enum": list(GRANULARITIES)}),
                *_FILTERS,
            ],
        )
    },
    "/admin/analytics/top": {
        "get": op(
            "The top spenders of one dimension over a range (default the last 30 days)",
            _json("{since, until, by, data: [{<dim>, ...totals, cache_hits, "
                  "cache_hit_rate}]}"),
            *READ, "400", "404",
            operationId="analyticsTop",
            parameters=[
                *_RANGE,
                query("by", {"type": "string", "enum": list(TOP_BY), "default": "org"}),
                query("n", {"type": "integer", "minimum": 1, "maximum": MAX_TOP,
                            "default": 10}),
                *_FILTERS,
            ],
        )
    },
    "/admin/analytics/overview": {
        "get": op(
            "Requests, cost, tokens, active orgs, error rate (upstream errors, degraded "
            "answers, gateway errors), mean latency (exact) and p50 / p95 / p99 latency "
            f"({METHOD}) over the last 24h / 7d / 30d, the response cache's hits, hit rate "
            "and savings, and cost against the period before",
            {
                "200": {
                    "description": "the overview",
                    "content": {"application/json": {"schema": OVERVIEW_SCHEMA}},
                }
            },
            *READ, "400",
            operationId="analyticsOverview",
            parameters=[query("period", {"type": "string", "enum": list(PERIODS),
                                         "default": "24h"})],
        )
    },
    "/admin/analytics/trends": {
        "get": op(
            "The groups of one dimension whose cost moved most against the previous period",
            _json("{period, since, previous_since, by, data: [{<dim>, cost_usd, "
                  "previous_cost_usd, change_usd, change_pct}]}"),
            *READ, "400",
            operationId="analyticsTrends",
            parameters=[
                query("period", {"type": "string", "enum": list(PERIODS), "default": "24h"}),
                query("by", {"type": "string", "enum": list(TOP_BY), "default": "org"}),
                query("n", {"type": "integer", "minimum": 1, "maximum": MAX_TOP,
                            "default": 10}),
            ],
        )
    },
    "/admin/analytics/requests": {
        "get": op(
            "Search the request log (the ledger's records), newest first, a page at a time: "
            "filters, a time range, a cost range; next_cursor continues the same query",
            _json("{data: [record], next_cursor}"),
            *READ, "400", "404",
            operationId="analyticsRequests",
            parameters=[
                *_RANGE,
                query("org", string(NAME, "org name")),
                *(query(name, {"type": "string"}) for name in LOG_FILTERS),
                query("min_cost", {"type": "string", "pattern": COST, "description": "USD"}),
                query("max_cost", {"type": "string", "pattern": COST, "description": "USD"}),
                query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                                "default": 50}),
                query("cursor", {"type": "string", "description": "next_cursor of the "
                                 "previous page of the same query"}),
            ],
        )
    },
    "/admin/analytics/requests/{request_id}": {
        "get": op(
            "One request's full ledger record",
            _json("the record"),
            *READ, "404",
            operationId="analyticsRequest",
            parameters=[path_param("request_id", {"type": "string"})],
        )
    },
    "/admin/analytics/projection": {
        "get": op(
            "Each org's month-end spend: spent so far (complete days), projected at the "
            "7-day pace, and a 90 % interval from the 14-day spread",
            _json("{month, complete_days, method, data: [{org, org_name, spent, projected, "
                  "low, high, pace_per_day, days_left}]}"),
            *READ, "400", "404",
            operationId="analyticsProjection",
            parameters=[
                query("month", {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$",
                                "description": "default: this month"}),
                query("org", string(NAME, "org name")),
            ],
        )
    },
    "/admin/analytics/chargeback.csv": {
        "get": op(
            "A month's chargeback as CSV, one row per org (and project or tag), in FOCUS "
            "column names where they fit; its totals equal the spend API's and the ledger's",
            {
                "200": {
                    "description": "text/csv",
                    "content": {"text/csv": {"schema": {"type": "string"}}},
                }
            },
            *READ, "400", "404",
            operationId="analyticsChargeback",
            parameters=[
                query("month", {"type": "string", "pattern": MONTH}, required=True),
                query("by", {"type": "string", "enum": list(CHARGEBACK_BY), "default": "org"}),
                query("org", string(NAME, "org name")),
            ],
        )
    },
}
