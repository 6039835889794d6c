"""Who makes an operator change: the one rule for the actor every audited change names.

In core because both the domain (a breaker reset names its actor in the transition's
reason, and checks it before changing anything) and storage (the audit log's ``actor``
column) apply it.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from costwarden.core.errors import InvalidInput

MAX_ACTOR_LEN = 200


def clean_actor(actor: Any) -> str:
    """The actor as stored; InvalidInput if it is empty, over-long or has control characters."""
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidInput("the actor (who makes the change) must be a non-empty string")
    text = actor.strip()
    if len(text) > MAX_ACTOR_LEN:
        raise InvalidInput(f"the actor is longer than {MAX_ACTOR_LEN} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise InvalidInput("the actor must not contain control characters")
    return text
