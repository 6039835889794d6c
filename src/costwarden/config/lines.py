"""Where a key of a TOML config file is, so a config error can name its line.

tomllib reports syntax errors with positions but keeps none for values, so validation
errors find their line here from the key path: ``routes[1].deployments[0]`` is the second
``[[routes]]`` table, and within it the ``deployments = ...`` line.
"""

from __future__ import annotations

import re

from costwarden.core.errors import ConfigError

_TABLE_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?")
_PATH_PART = re.compile(r"^([A-Za-z0-9_\-]+)(?:\[(\d+)\])?$")


class ConfigText:
    """Carries the file name and text so errors can point at the right line.

    A key path such as ``routes[1].deployments[0]`` is resolved to the second ``[[routes]]``
    table, and within it to the ``deployments = ...`` line.
    """

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines = [line.split("#", 1)[0] for line in text.splitlines()]
        self._blocks: dict[tuple[str, int | None], tuple[int, int]] = {}
        counts: dict[str, int] = {}
        current: tuple[str, int | None] | None = None
        for i, line in enumerate(self.lines):
            match = _TABLE_HEADER.match(line)
            if not match:
                continue
            if current is not None:
                self._blocks[current] = (self._blocks[current][0], i)
            name = match.group(2)
            index: int | None = None
            if match.group(1) == "[[":
                index = counts.get(name, 0)
                counts[name] = index + 1
            current = (name, index)
            self._blocks[current] = (i, len(self.lines))

    def fail(self, key: str, message: str, needle: str | None = None) -> ConfigError:
        line = self._line_for(key, needle)
        where = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{where}: {key}: {message}")

    def _nested_block(self, parts: list[str]) -> tuple[int, int] | None:
        """The lines of a dotted array table's entry, ``alerts.channels[1]`` of
        ``[[alerts.channels]]``, when the key is inside one."""
        for depth in range(len(parts), 1, -1):
            last = _PATH_PART.match(parts[depth - 1])
            if last is None or last.group(2) is None:
                continue
            name = ".".join([*parts[: depth - 1], last.group(1)])
            if (block := self._blocks.get((name, int(last.group(2))))) is not None:
                return block
        return None

    def _line_for(self, key: str, needle: str | None) -> int | None:
        parts = key.split(".")
        head = _PATH_PART.match(parts[0])
        start, end = 0, len(self.lines)
        if head:
            index = int(head.group(2)) if head.group(2) is not None else None
            start, end = self._blocks.get((head.group(1), index), (start, end))
        if nested := self._nested_block(parts):  # e.g. [[alerts.channels]]
            start, end = nested
        field_match = _PATH_PART.match(parts[-1]) if len(parts) > 1 else None
        field = field_match.group(1) if field_match else None
        assign = re.compile(rf"^\s*{re.escape(field)}\s*=") if field else None
        inline = re.compile(rf"[{{,]\s*{re.escape(field)}\s*=") if field else None
        quoted = (f'"{needle}"', f"'{needle}'") if needle else ()
        block = list(enumerate(self.lines[start:end], start=start + 1))

        def assigns(text: str) -> bool:
            return assign is not None and assign.match(text) is not None

        def mentions(text: str) -> bool:
            return any(q in text for q in quoted)

        def inline_assigns(text: str) -> bool:  # a key inside an inline table
            return inline is not None and inline.search(text) is not None

        for number, text in block:
            if assigns(text) and mentions(text):
                return number
        for test in (assigns, inline_assigns, mentions):
            for number, text in block:
                if test(text):
                    return number
        if head and (start, end) != (0, len(self.lines)):
            return start + 1  # the table's header line
        return None
