"""The building blocks of every settings section: a field with a help text, and a TOML table
checked against a dataclass's documented fields (unknown keys and wrong types are ConfigErrors
that point at the line)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection
from typing import Any

from costwarden.config.lines import ConfigText as _Ctx

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def setting(default: Any, help: str, env: str | None = None) -> Any:
    """A dataclass field documented for ``costwarden settings`` (and overridable by ``env``)."""
    return dataclasses.field(default=default, metadata={"help": help, "env": env})


def section(cls: type[Any], data: Any, key: str, ctx: _Ctx) -> Any:
    if not isinstance(data, dict):
        raise ctx.fail(key, "must be a table", key)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("help")}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name not in fields:
            raise ctx.fail(f"{key}.{name}", f"unknown setting (known: {', '.join(fields)})", name)
        kwargs[name] = coerce(value, fields[name], f"{key}.{name}", ctx)
    return cls(**kwargs)


def reject_unknown(item: dict[str, Any], known: Collection[str], key: str, ctx: _Ctx) -> None:
    """A table of an array (a route, a deployment, a rule) with a key ``known`` lacks: the
    config error at that key's line, naming the known ones."""
    unknown = set(item) - set(known)
    if unknown:
        listed = ", ".join(sorted(known))
        raise ctx.fail(f"{key}.{sorted(unknown)[0]}", f"unknown setting (known: {listed})")


def coerce(value: Any, f: dataclasses.Field[Any], key: str, ctx: _Ctx) -> Any:
    want = type(f.default) if f.default not in (None, dataclasses.MISSING) else str
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is bool or isinstance(value, bool):
        if want is not bool:
            raise ctx.fail(key, f"expected {want.__name__}, got a boolean", None)
        if not isinstance(value, bool):
            raise ctx.fail(key, f"expected true/false, got {value!r}", key.rsplit(".", 1)[-1])
        return value
    if not isinstance(value, want):
        raise ctx.fail(
            key, f"expected {want.__name__}, got {type(value).__name__}", key.rsplit(".", 1)[-1]
        )
    return value
