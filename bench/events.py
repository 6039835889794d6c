#!/usr/bin/env python
"""Event stream load: two gateway processes on PostgreSQL + Redis, 50 SSE clients, about
1,000 events/s for a minute; the gateways' memory sampled all along.

    python bench/events.py [--seconds 60] [--rate 1000] [--clients 50]

Each request through a gateway raises one event (request_settled), so a paced load of
``--rate`` requests/s (half to each process) is ``--rate`` events/s, which every client of
either process receives. Clients run in worker processes (10 streams each) and count frames
and check that ids only grow; the load runs in a process of its own. Prints the resident set
(VmRSS) of both gateways every 5 s, events published and received per client, and the
delivery delay (receive time - ``ts``) of a sample of events. Memory counts as flat when the
last sample is within 10 % of the first one after the first 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.event_streams import AUTH, gateways  # noqa: E402
from tests.helpers import scratch_pg_database  # noqa: E402

from costwarden.mock import serve_mock  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/14"
STREAMS_PER_WORKER = 10


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _stream(http: aiohttp.ClientSession, url: str, stats: dict[str, float]) -> None:
    async with http.get(f"{url}/admin/events?kind=request_settled", headers=AUTH) as r:
        last = 0
        async for raw in r.content:
            if raw.startswith(b"id: "):
                event_id = int(raw[4:])
                if event_id <= last:
                    stats["disorder"] += 1
                last = event_id
                stats["frames"] += 1
            elif raw.startswith(b"data: ") and stats["frames"] % 100 == 0:
                delay = (time.time() - orjson.loads(raw[6:])["ts"]) * 1000
                stats["delay_sum"] += delay
                stats["delay_n"] += 1
                stats["delay_max"] = max(stats["delay_max"], delay)


def _clients(urls: list[str], stop: Any, out: multiprocessing.Queue[object]) -> None:
    async def main() -> None:
        stats = [
            {"frames": 0.0, "disorder": 0.0, "delay_sum": 0.0, "delay_n": 0.0, "delay_max": 0.0}
            for _ in range(STREAMS_PER_WORKER)
        ]
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            tasks = [
                asyncio.create_task(_stream(http, urls[i % len(urls)], stats[i]))
                for i in range(STREAMS_PER_WORKER)
            ]
            await asyncio.to_thread(stop.wait)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        out.put(stats)

    asyncio.run(main())


def _load(
    urls: list[str], key: str, rate: int, seconds: float, out: multiprocessing.Queue[object]
) -> None:
    async def main() -> None:
        body = orjson.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        )
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        sent = failed = 0
        gate = asyncio.Semaphore(64)
        async with aiohttp.ClientSession() as http:

            async def one(url: str) -> None:
                nonlocal sent, failed
                async with gate:
                    try:
                        async with http.post(f"{url}/v1/chat/completions", data=body,
                                             headers=headers) as r:
                            await r.read()
                            sent += 1
                            failed += r.status != 200
                    except aiohttp.ClientError:
                        failed += 1

            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            n = 0
            while (elapsed := time.monotonic() - start) < seconds:
                due = int(elapsed * rate)
                while n < due:
                    task = asyncio.create_task(one(urls[n % len(urls)]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    n += 1
                await asyncio.sleep(0.005)
            await asyncio.gather(*tasks)
        out.put({"sent": sent, "failed": failed, "seconds": time.monotonic() - start})

    asyncio.run(main())


async def run(seconds: float, rate: int, clients: int) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, scratch_pg_database() as database_url:
        async with serve_mock("127.0.0.1", 0) as mock:
            async with gateways(mock.base_url, database_url, REDIS_URL, Path(tmp)) as gw:
                results: multiprocessing.Queue[object] = ctx.Queue()
                stop = ctx.Event()
                workers = [
                    ctx.Process(target=_clients, args=(gw.urls, stop, results))
                    for _ in range(max(1, clients // STREAMS_PER_WORKER))
                ]
                for w in workers:
                    w.start()
                await asyncio.sleep(3)  # every stream connected
                load = ctx.Process(target=_load, args=(gw.urls, gw.key, rate, seconds, results))
                load.start()
                samples: list[tuple[float, int, int]] = []
                started = time.monotonic()
                while load.is_alive():
                    rss = [_rss_kib(pid) for pid in gw.pids]
                    samples.append((time.monotonic() - started, rss[0], rss[1]))
                    print(f"t={samples[-1][0]:5.1f}s  RSS gateway 1 {rss[0] / 1024:7.1f} MiB"
                          f"  gateway 2 {rss[1] / 1024:7.1f} MiB", flush=True)
                    await asyncio.to_thread(load.join, 5)
                loaded = await asyncio.to_thread(results.get)
                await asyncio.sleep(5)  # the last events reach every client
                stop.set()
                got = [await asyncio.to_thread(results.get) for _ in range(len(workers))]
                for w in workers:
                    w.join()
    client.flushdb()
    client.close()
    assert isinstance(loaded, dict)
    streams = [s for g in got if isinstance(g, list) for s in g]
    frames = [int(s["frames"]) for s in streams]
    delays_n = sum(s["delay_n"] for s in streams)
    mean_delay = sum(s["delay_sum"] for s in streams) / max(delays_n, 1)
    print(f"\nload: {loaded['sent']} requests in {loaded['seconds']:.1f} s "
          f"({loaded['sent'] / loaded['seconds']:.0f}/s), {loaded['failed']} failed")
    print(f"{len(streams)} SSE clients: frames received min {min(frames)}, max {max(frames)}; "
          f"out of order {sum(int(s['disorder']) for s in streams)}")
    print(f"delivery delay over {delays_n:.0f} sampled events: mean {mean_delay:.1f} ms, "
          f"max {max(s['delay_max'] for s in streams):.1f} ms")
    base = [s for s in samples if s[0] >= 10] or samples
    for i in (1, 2):
        first, last = base[0][i], samples[-1][i]
        peak = max(s[i] for s in base)
        print(f"gateway {i}: RSS after 10 s {first / 1024:.1f} MiB, at the end {last / 1024:.1f} "
              f"MiB ({(last - first) / first * 100:+.1f} %), peak {peak / 1024:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.rate, args.clients))


if __name__ == "__main__":
    main()
