"""Logging set-up with a last line of defence against secrets in log output.

Code never logs keys on purpose; this filter also rewrites any virtual key (``cw-...``) and
any configured provider credential that reaches a log record by accident.
"""

from __future__ import annotations

import logging
import re

_VIRTUAL_KEY = re.compile(r"cw-[A-Za-z0-9_\-]{8,}")


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _VIRTUAL_KEY.sub("cw-[redacted]", message)
        for secret in self.secrets:
            cleaned = cleaned.replace(secret, "[redacted]")
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure_logging(level: str, secrets: list[str], *, pid: bool = False) -> None:
    """Log to stderr at ``level``, redacting ``secrets``; ``pid``: each line names its
    process (``serve --workers N``, whose processes share the output)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler = logging.StreamHandler()
    where = " [%(process)d]" if pid else ""
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s{where} %(name)s: %(message)s")
    )
    handler.addFilter(RedactSecrets(secrets))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
