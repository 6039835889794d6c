"""JSON Schema (OpenAI tools and ``response_format``) into Gemini's ``Schema``.

Gemini's function declarations and ``responseSchema`` take a subset of OpenAPI 3's schema
object, and refuse the request when a schema holds a keyword outside it. So:

- the keywords Gemini knows are kept (``type`` upper-cased, as its ``Type`` enum is);
- keywords that only describe or annotate (``$schema``, ``$id``, ``$comment``, ``examples``,
  ``default``, ``strict`` ...) and constraints Gemini cannot express (``additionalProperties``,
  ``multipleOf``, ``uniqueItems``, ``not`` ...) are dropped: the model is guided by slightly
  less, and what it produces is what the client validates anyway;
- ``"type": ["string", "null"]`` and an ``anyOf`` with a ``null`` member become
  ``nullable``; ``oneOf`` becomes ``anyOf``; ``const`` and string ``enum`` become Gemini's
  ``enum`` (which holds strings only: an enum of numbers is dropped);
- local ``$ref`` (``#/$defs/...``, ``#/definitions/...``) are inlined. A recursive schema,
  a remote reference, tuple ``items`` or an ``allOf`` of several schemas cannot be carried
  over and raise :class:`~costwarden.providers.translate.TranslationError`.
"""

from __future__ import annotations

from typing import Any

from costwarden.providers.translate import TranslationError

JSON = dict[str, Any]

_TYPES: dict[str, str] = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
    "null": "NULL",
}
# The formats Gemini accepts, by type; any other is dropped.
_FORMATS: dict[str, frozenset[str]] = {
    "STRING": frozenset({"enum", "date-time"}),
    "INTEGER": frozenset({"int32", "int64"}),
    "NUMBER": frozenset({"float", "double"}),
}
_KEEP = (
    "title",
    "description",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "propertyOrdering",
)
_MAX_DEPTH = 64  # deeper than any real schema; a bound on the recursion


def _bad(param: str, why: str) -> TranslationError:
    return TranslationError(f"{param}: {why}", param=param)


def gemini_schema(schema: Any, param: str) -> JSON:
    """Gemini's ``Schema`` for a JSON Schema (TranslationError if it cannot be one)."""
    if not isinstance(schema, dict):
        raise _bad(param, "must be a JSON schema object")
    defs: JSON = {}
    for key in ("definitions", "$defs"):
        found = schema.get(key)
        if isinstance(found, dict):
            defs.update(found)
    return _node(schema, defs, param, (), 0)


def _node(node: Any, defs: JSON, param: str, seen: tuple[str, ...], depth: int) -> JSON:
    if not isinstance(node, dict):
        raise _bad(param, "every schema must be an object")
    if depth > _MAX_DEPTH:
        raise _bad(param, f"nests deeper than {_MAX_DEPTH} levels")
    if "$ref" in node:
        return _ref(node, defs, param, seen, depth)
    all_of = node.get("allOf")
    if all_of is not None:
        if not isinstance(all_of, list) or len(all_of) != 1:
            raise _bad(param, "allOf of several schemas cannot be sent to Gemini")
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return _node({**_plain(all_of[0], param), **rest}, defs, param, seen, depth + 1)
    out: JSON = {}
    nullable = False
    kind = node.get("type")
    if isinstance(kind, list):
        names = [t for t in kind if t != "null"]
        nullable = len(names) < len(kind)
        if len(names) > 1:
            members = [_node({**node, "type": t}, defs, param, seen, depth + 1) for t in names]
            return {"anyOf": members, "nullable": True} if nullable else {"anyOf": members}
        kind = names[0] if names else "null"
    union = node.get("anyOf", node.get("oneOf"))
    if union is not None:
        if not isinstance(union, list) or not union:
            raise _bad(param, "anyOf / oneOf must be a non-empty array")
        members = [m for m in union if not (isinstance(m, dict) and m.get("type") == "null")]
        nullable = nullable or len(members) < len(union)
        if len(members) == 1:
            out = _node(members[0], defs, param, seen, depth + 1)
        elif members:
            out["anyOf"] = [_node(m, defs, param, seen, depth + 1) for m in members]
    if isinstance(kind, str):
        mapped = _TYPES.get(kind)
        if mapped is None:
            raise _bad(param, f"type {kind!r} is not a JSON schema type")
        out["type"] = mapped
    for key in _KEEP:
        if key in node:
            out[key] = node[key]
    _enum(node, out)
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS.get(out.get("type", ""), frozenset()):
        out["format"] = fmt
    required = node.get("required")
    if isinstance(required, list) and all(isinstance(r, str) for r in required):
        out["required"] = list(required)
    properties = node.get("properties")
    if isinstance(properties, dict):
        out["properties"] = {
            name: _node(sub, defs, f"{param}.properties.{name}", seen, depth + 1)
            for name, sub in properties.items()
        }
    items = node.get("items")
    if isinstance(items, list):
        raise _bad(param, "tuple items (an array of schemas) cannot be sent to Gemini")
    if items is not None:
        out["items"] = _node(items, defs, f"{param}.items", seen, depth + 1)
    if nullable or node.get("nullable") is True:
        out["nullable"] = True
    return out


def _ref(node: JSON, defs: JSON, param: str, seen: tuple[str, ...], depth: int) -> JSON:
    ref = node["$ref"]
    name = None
    if isinstance(ref, str):
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix):
                name = ref[len(prefix) :]
    if name is None or name not in defs:
        raise _bad(param, f"$ref {ref!r} does not name a local definition")
    if name in seen:
        raise _bad(param, f"recursive schema ({name!r}) cannot be sent to Gemini")
    merged = {**_plain(defs[name], param), **{k: v for k, v in node.items() if k != "$ref"}}
    return _node(merged, defs, param, (*seen, name), depth + 1)


def _plain(value: Any, param: str) -> JSON:
    if not isinstance(value, dict):
        raise _bad(param, "every schema must be an object")
    return value


def _enum(node: JSON, out: JSON) -> None:
    """Gemini's enum holds strings of a STRING schema; ``const`` is an enum of one."""
    values = node.get("enum")
    if "const" in node:
        values = [node["const"]]
    if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
        out["enum"] = list(values)
        out.setdefault("type", "STRING")
