"""The gateway configurations compared: no limits, budgets in-process, budgets on Redis.

Every variant is its own gateway process with its own SQLite database, so that a variant's
ledger, counters and policy cannot leak into another's figures.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from loadgen import BenchError

from costwarden.storage.db import create_engine_for
from costwarden.storage.policy import set_limits

# A database of its own on the local Redis: the benchmark flushes it before and after.
REDIS_URL = "redis://127.0.0.1:6379/11"

# Large enough never to refuse a request, so every request reserves and settles in four
# counters: org daily and monthly USD (hard budgets), org requests and key tokens per
# minute (rate limits). The monthly amount is just under the counters' ceiling (2**53
# nano-dollars, about $9.007 million).
ORG_LIMITS = {"daily_usd": "1000000", "monthly_usd": "9000000", "requests_per_minute": 100000000}
KEY_LIMITS = {"tokens_per_minute": 1000000000000}

# What a response of a gateway enforcing budgets carries, and one without limits does not.
BUDGET_HEADER = "x-costwarden-budget-remaining-usd"


@dataclasses.dataclass(frozen=True, slots=True)
class Variant:
    name: str  # as given to --variants
    label: str  # as shown in the report
    limits: bool  # budgets and rate limits set on the org and key
    redis: bool  # counters in Redis rather than in the gateway process
    scan: bool = True  # the prompt security scan on (the default), or off
    cache: bool = False  # every route's answers cached: all but the first requests are hits
    leased: bool = False  # counters in Redis, spent in leased slices (budgets.leased_slices)

    def config_extra(self) -> str:
        """TOML appended to the mock gateway config (empty keeps counters in-process and
        the security scan on)."""
        extra = f'\n[redis]\nurl = "{REDIS_URL}"\n' if self.redis else ""
        if self.leased:
            extra += "\n[budgets]\nleased_slices = true\n"
        if self.cache:  # the benchmark's requests set no temperature: cached all the same
            extra += "\n[cache]\ndefault_ttl_seconds = 3600\nreplay_unsafe = true\n"
        return extra if self.scan else extra + "\n[security]\nenabled = false\n"


VARIANTS = {
    "off": Variant("off", "ledger only", limits=False, redis=False),
    "memory": Variant("memory", "budgets in-process", limits=True, redis=False),
    "redis": Variant("redis", "budgets on Redis", limits=True, redis=True),
    # The same counters in Redis, each process spending leased slices of them in-process.
    "leased": Variant("leased", "budgets on Redis, leased", limits=True, redis=True, leased=True),
    # The same as "memory" with the prompt scan off: its cost is the difference of the two.
    "noscan": Variant(
        "noscan", "budgets in-process, scan off", limits=True, redis=False, scan=False
    ),
    # Answered from the response cache (in-process): a hit never reaches the upstream, so
    # no budget is reserved; limits off, as a hit would not show their header.
    "cached": Variant("cached", "response cache hits", limits=False, redis=False, cache=True),
}


def parse_variants(text: str) -> list[Variant]:
    """``off,memory,redis`` (any subset, in the order given) for ``--variants``."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"variants are a comma-separated subset of {','.join(VARIANTS)}, got {text!r}"
        )
    return [VARIANTS[n] for n in dict.fromkeys(names)]


# The agent session the session requests run in (bench/instructions.py --session), and its
# budget: large enough never to wind down in a run.
SESSION = "bench-run"
SESSION_LIMITS = {"daily_usd": "500"}


def apply_limits(db: Path, key_id: str, *, session: bool = False) -> None:
    """Write the limits into the variant's database before its gateway starts (and a
    budget of the agent session, for session requests).

    Set before the start rather than while running, so the gateway loads them with its
    first policy read and no measured request runs without them.
    """
    engine = create_engine_for(f"sqlite:///{db}")
    try:
        set_limits(engine, org="bench", scope="org", subject="", amounts=ORG_LIMITS)
        set_limits(engine, org="bench", scope="key", subject=key_id, amounts=KEY_LIMITS)
        if session:
            set_limits(engine, org="bench", scope="session", subject=SESSION,
                       amounts=SESSION_LIMITS)  # fmt: skip
    # Any error (not only CostwardenError): instructions.py runs this against older commits,
    # whose exception hierarchy lives elsewhere.
    except Exception as exc:
        raise BenchError(f"could not set the benchmark's limits: {exc}") from None
    finally:
        engine.dispose()
