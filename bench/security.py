#!/usr/bin/env python
"""The prompt scan's detectors on realistic prompts: p50 and p99 of one ``scan`` per size.

    python bench/security.py                      # 2 KB and 100 KB, every detector found
    python bench/security.py --sizes 2048,16384,102400 --runs 2000

The prompts are mixed chat and code, as an LLM gateway sees them: support and engineering
chat, Python/JS/SQL/shell snippets, JSON payloads with "role"/"system" keys, log lines,
stack traces, markdown with images and links, the odd hash and base64 blob. They are built
deterministically from ``--seed``, so two runs time the same text; none holds an attack, a
secret or personal data (the detectors' hot path is the benign one).

The detectors are ``costwarden.security.injection.InjectionDetector`` and, when those
modules import, ``costwarden.security.secrets.SecretsDetector`` and
``costwarden.security.pii.PiiDetector``; "all" runs every one found on the same text, one
after the other, as the scan stage does. The targets are a p99 of 1 ms for 2 KB and 10 ms for
100 KB for "all".
"""

from __future__ import annotations

import argparse
import gc
import importlib
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

_CHAT = (
    "Hey, can you check why the nightly export job failed again? It ran for 40 minutes.",
    "The dashboard shows 1,234 requests yesterday but the invoice says 1,310, which is right?",
    "I think the retry logic is wrong: we retry on 400 errors, which never succeed.",
    "Could you summarise this thread for the weekly update? Keep it under five bullets.",
    "We moved the system prompt into a template file so product can edit it without a deploy.",
    "Our token usage doubled after we switched to the bigger model; is caching enabled?",
    "Please review the migration below, especially the index on created_at.",
    "The customer wants the history of their conversations exported as CSV.",
    "Latency p95 went from 800 ms to 2.1 s after the upgrade, see the graph in the ticket.",
    "Is there a rate limit on the embeddings endpoint, or only on chat completions?",
    "Can you rewrite this paragraph so it sounds less formal? It's for the onboarding email.",
    "The tests pass locally but fail in CI with a timeout on the Redis fixture.",
    "What's the difference between the streaming and the batch API in terms of cost?",
    "We should mention the new budget alerts in the release notes, with a screenshot.",
    "Translate the following error message for our Spanish-speaking support team.",
    "Here is the stack trace from production; the request id is in the first line.",
    "The mode flag is read once at startup, so changing it needs a restart of the workers.",
    "Use the previous quarter's numbers as a baseline and flag anything above 20%.",
    "Follow the runbook: drain the node, wait for the queue to empty, then upgrade.",
    "The filter on the analytics page ignores archived projects, which confuses people.",
    "I updated the instructions in CONTRIBUTING.md for running the integration tests.",
    "Can the assistant answer in the user's language automatically, based on the header?",
    "We limit each team to 50 concurrent requests; bursts above that get a 429.",
    "The content of the response is truncated at 4096 tokens; raise max_tokens?",
    "Policy question: do we keep request logs for 30 or 90 days in the EU region?",
    "Let's add a developer mode toggle to the settings page that shows raw responses.",
    "The admin panel lists every API key with its last use, but not who created it.",
    "Explain like I'm five: why does the context window matter for long documents?",
)
_CODE = (
    'def load_prompt(name: str) -> str:\n    path = PROMPTS_DIR / f"{name}.txt"\n'
    '    return path.read_text(encoding="utf-8")\n',
    'messages = [\n    {"role": "system", "content": load_prompt("support")},\n'
    '    {"role": "user", "content": question},\n]\n'
    "resp = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=512)\n",
    "for attempt in range(retries):\n    try:\n        return fetch(url, timeout=10)\n"
    "    except TimeoutError:\n        time.sleep(2 ** attempt)\nraise RuntimeError"
    '("gave up after %d attempts" % retries)\n',
    "SELECT date_trunc('day', created_at) AS day, sum(cost_usd) AS cost\nFROM ledger\n"
    "WHERE org_id = $1 AND created_at >= now() - interval '30 days'\nGROUP BY 1 ORDER BY 1;\n",
    "const history = await db.messages.find({ sessionId }).sort({ createdAt: -1 }).limit(50);\n"
    "if (!history.length) {\n  return res.status(404).json({ error: 'not found' });\n}\n",
    "$ kubectl get pods -n gateway\nNAME                      READY   STATUS    RESTARTS   AGE\n"
    "gateway-7d9f8b6c5-x2k4j   1/1     Running   0          3d2h\n",
    "2024-06-03T12:41:07.512Z INFO  request completed status=200 latency_ms=812 tokens_in=1532"
    " tokens_out=211 model=gpt-4o-mini\n",
    "2024-06-03T12:41:09.004Z WARN  upstream slow, switching to fallback provider=anthropic\n",
    'Traceback (most recent call last):\n  File "/app/worker.py", line 88, in run\n'
    '    result = handler(job)\n  File "/app/handlers.py", line 41, in handler\n'
    '    raise ValueError(f"unknown job type {job.kind!r}")\nValueError: unknown job type '
    "'export'\n",
    "```yaml\nbudgets:\n  - name: support\n    limit_usd: 500\n    period: month\n"
    "    alert_at: [0.5, 0.8, 1.0]\n```\n",
    '{"id": "chatcmpl-9a8b7c", "object": "chat.completion", "usage": {"prompt_tokens": 812,'
    ' "completion_tokens": 64, "total_tokens": 876}, "choices": [{"index": 0, "message": '
    '{"role": "assistant", "content": "Sure, here is the summary."}, "finish_reason": "stop"}]}\n',
    "![latency by model](https://grafana.example.com/render/d/abc/latency.png?from=now-7d)\n",
    "See https://docs.example.com/api/v1/budgets?team=support%20tier%202 for the fields.\n",
    "commit 3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39\nAuthor: build-bot\nDate:   Mon Jun 3\n",
    ".badge { color: #fff; background: #2d7ff9; border-radius: 4px; }\n",
    "export function formatCost(usd: number): string {\n"
    "  return usd < 0.01 ? '<$0.01' : `$${usd.toFixed(2)}`;\n}\n",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhf"
    "DwAChwGA60e6kgAAAABJRU5ErkJggg==\n",
    "class RateLimiter:\n    def __init__(self, rate: float, burst: int) -> None:\n"
    "        self.rate, self.burst = rate, burst\n        self.tokens = float(burst)\n",
    "# TODO: ignore cached tokens when computing the budget, see issue 214\n",
    'curl -s https://api.example.com/v1/usage -H "Authorization: Bearer $COSTWARDEN_KEY"'
    " | jq '.data[] | {model, cost}'\n",
)


def make_prompt(size: int, seed: int = 7) -> str:
    """A deterministic mixed chat/code prompt of exactly ``size`` characters."""
    rng = random.Random(seed * 1_000_003 + size)
    parts: list[str] = []
    length = 0
    while length < size:
        if rng.random() < 0.45:
            piece = " ".join(rng.choice(_CHAT) for _ in range(rng.randint(1, 4))) + "\n\n"
        else:
            piece = rng.choice(_CODE) + "\n"
        parts.append(piece)
        length += len(piece)
    return "".join(parts)[:size]


def _detectors() -> list[Any]:
    found: list[Any] = []
    for module, name in (
        ("costwarden.security.injection", "InjectionDetector"),
        ("costwarden.security.secrets", "SecretsDetector"),
        ("costwarden.security.pii", "PiiDetector"),
    ):
        try:
            found.append(getattr(importlib.import_module(module), name)())
        except (ImportError, AttributeError) as exc:
            print(f"{module}.{name}: not available ({exc})", file=sys.stderr)
    return found


def _time(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    for _ in range(min(50, runs)):
        fn()
    samples: list[int] = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(runs):
            start = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - start)
    finally:
        gc.enable()
    samples.sort()
    p50 = statistics.median(samples) / 1e6
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1e6
    return p50, p99


def _scan_all(detectors: Sequence[Any], text: str) -> None:
    for detector in detectors:
        detector.scan(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="2048,102400", help="prompt sizes in characters")
    parser.add_argument("--runs", type=int, default=0, help="scans per size (default: by size)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    detectors = _detectors()
    if not detectors:
        print("no detector imports", file=sys.stderr)
        return 1
    print(f"{'detector':<12} {'size':>8} {'runs':>6} {'p50 ms':>9} {'p99 ms':>9}")
    for size in (int(s) for s in args.sizes.split(",")):
        text = make_prompt(size, args.seed)
        runs = args.runs or (3000 if size <= 8192 else 300)
        for detector in detectors:
            p50, p99 = _time(lambda d=detector, t=text: d.scan(t), runs)
            print(f"{detector.name:<12} {size:>8} {runs:>6} {p50:>9.3f} {p99:>9.3f}")
        if len(detectors) > 1:
            p50, p99 = _time(lambda t=text: _scan_all(detectors, t), runs)
            print(f"{'all':<12} {size:>8} {runs:>6} {p50:>9.3f} {p99:>9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
