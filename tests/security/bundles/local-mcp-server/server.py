"""A stdio MCP server: lists and reads the notes in ./notes (nothing else)."""

import json
import sys
from pathlib import Path

NOTES = Path(__file__).parent / "notes"


def handle(request: dict) -> dict:
    if request.get("method") == "notes/list":
        return {"notes": sorted(p.name for p in NOTES.glob("*.md"))}
    if request.get("method") == "notes/read":
        name = Path(str(request.get("params", {}).get("name", ""))).name
        return {"text": (NOTES / name).read_text(encoding="utf-8")}
    return {"error": "unknown method"}


for line in sys.stdin:
    print(json.dumps(handle(json.loads(line))), flush=True)
