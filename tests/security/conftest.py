"""Shared by the security tests: the labelled corpus."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"


def corpus_lines() -> list[tuple[str, str, str]]:
    """(file, label, text) for every line of every corpus file."""
    lines = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not raw.strip():
                continue
            row = json.loads(raw)
            label, text = row["label"], row["text"]
            assert isinstance(text, str) and text, f"{path.name}:{number}: empty text"
            assert label == "benign" or label.count(":") == 1, f"{path.name}:{number}: {label}"
            lines.append((path.name, label, text))
    return lines
