"""``[security]``: the prompt scan stage, tool pinning (see ``costwarden.security``).

These are the gateway-wide defaults; an org's and a key's policy (admin API
``/admin/security/policies``) override them detector by detector. The security package
does not import config: the app maps these values into its policy type.
"""

from __future__ import annotations

import dataclasses
import math

from costwarden.config.fields import setting as _setting

_ACTION_HELP = (
    "'default' (block a finding of severity high or critical with confidence at least "
    "min_confidence, flag the rest), 'block', 'redact' (the span replaced by a placeholder "
    "before the request is forwarded), 'flag' (an event and ledger fields) or 'off'."
)


@dataclasses.dataclass(slots=True)
class SecuritySettings:
    enabled: bool = _setting(
        True,
        "Scan every request's text (messages, system, tool results and definitions, "
        "embedding inputs) for prompt injection, secrets and personal data before any "
        "limit is checked or upstream called.",
        "COSTWARDEN_SECURITY_ENABLED",
    )
    time_budget_ms: float = _setting(
        10.0,
        "The longest a request's scan may take, in milliseconds; what happens after is on_timeout.",
        "COSTWARDEN_SECURITY_TIME_BUDGET_MS",
    )
    on_timeout: str = _setting(
        "open",
        "A scan that runs out of its time budget: 'open' forwards the request (its status "
        "says unscanned), 'closed' refuses it with 403 security_policy_violation.",
        "COSTWARDEN_SECURITY_ON_TIMEOUT",
    )
    min_confidence: float = _setting(
        0.8,
        "The confidence (0 to 1) a finding needs to be blocked or redacted.",
        "COSTWARDEN_SECURITY_MIN_CONFIDENCE",
    )
    flag_confidence: float = _setting(
        0.5,
        "Findings under this confidence (0 to 1) are ignored; at most min_confidence.",
        "COSTWARDEN_SECURITY_FLAG_CONFIDENCE",
    )
    injection_action: str = _setting(
        "default", "Prompt injection and jailbreaks: " + _ACTION_HELP,
        "COSTWARDEN_SECURITY_INJECTION_ACTION",
    )  # fmt: skip
    secrets_action: str = _setting(
        "default", "Credentials (provider and cloud keys, tokens, private keys, connection "
        "strings): " + _ACTION_HELP, "COSTWARDEN_SECURITY_SECRETS_ACTION",
    )  # fmt: skip
    pii_action: str = _setting(
        "default", "Personal data (e-mail, phone, payment cards, IBAN, national ids, IP "
        "addresses): " + _ACTION_HELP, "COSTWARDEN_SECURITY_PII_ACTION",
    )  # fmt: skip
    scan_memo_entries: int = _setting(
        4096, "How many scanned pieces of text (a message, a system prompt, a tool's "
        "definition) each gateway process remembers the findings of, per org, so that a "
        "piece sent again (an agent resends its conversation every turn) is not scanned "
        "again; 0 scans every piece every time. Only a keyed digest of the text is kept.",
        "COSTWARDEN_SECURITY_SCAN_MEMO_ENTRIES",
    )  # fmt: skip
    tools_action: str = _setting(
        "flag", "Tool pinning: a session's (or key's) tool definitions changing after their "
        "first use: " + _ACTION_HELP, "COSTWARDEN_SECURITY_TOOLS_ACTION",
    )  # fmt: skip


ACTIONS = ("default", "block", "redact", "flag", "off")
ACTION_FIELDS = ("injection_action", "secrets_action", "pii_action", "tools_action")


def security_problem(s: SecuritySettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first out-of-range ``[security]`` value, or None."""
    if not 0 < s.time_budget_ms <= 10_000 or math.isnan(s.time_budget_ms):
        return "time_budget_ms", "must be over 0 and at most 10000"
    if not 0 <= s.scan_memo_entries <= 1_000_000:
        return "scan_memo_entries", "must be from 0 to 1000000"
    if s.on_timeout not in ("open", "closed"):
        return "on_timeout", "must be 'open' or 'closed'"
    for name in ("min_confidence", "flag_confidence"):
        if not 0 <= getattr(s, name) <= 1:
            return name, "must be from 0 to 1"
    if s.flag_confidence > s.min_confidence:
        return "flag_confidence", "must be at most min_confidence"
    for name in ACTION_FIELDS:
        if getattr(s, name) not in ACTIONS:
            return name, f"must be one of {', '.join(ACTIONS)}"
    return None
