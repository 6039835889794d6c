#!/usr/bin/env python
"""What one loopback hop costs on this machine, before any gateway is measured.

    python bench/loopback.py [--rounds 5000]

Two processes on loopback TCP (TCP_NODELAY): one sends 300 bytes and waits for 300 back,
the other, blocked in ``recv``, answers. Measured with both on one CPU and on two CPUs:
at c=1 the gateway adds two such hops to every request (client -> gateway -> upstream and
back), so a machine whose CPUs wake each other slowly (a VM whose idle virtual CPU must be
woken by the host) puts that much into the c=1 overhead whatever the gateway does.
Prints the round trip's p50 and p90 and the ``send()`` call's own p50, in microseconds.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

PAYLOAD = 300


def _answer(server: socket.socket, cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while conn.recv(65536):
        conn.sendall(b"y" * PAYLOAD)
    os._exit(0)


def measure(rounds: int, client_cpu: int, server_cpu: int) -> dict[str, float]:
    """Round trips of a client pinned to ``client_cpu`` and a server to ``server_cpu``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    pid = os.fork()
    if pid == 0:
        _answer(server, server_cpu)
    os.sched_setaffinity(0, {client_cpu})
    sends: list[float] = []
    trips: list[float] = []
    with socket.create_connection(server.getsockname()) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(rounds):
            start = time.perf_counter()
            conn.send(b"x" * PAYLOAD)
            sent = time.perf_counter()
            conn.recv(65536)
            trips.append((time.perf_counter() - start) * 1e6)
            sends.append((sent - start) * 1e6)
    os.waitpid(pid, 0)
    server.close()
    deciles = statistics.quantiles(trips, n=10)
    return {"p50": statistics.median(trips), "p90": deciles[8], "send": statistics.median(sends)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5000, help="round trips per placement")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    placements = [("one CPU", cpus[0], cpus[0])]
    if len(cpus) > 1:
        placements.append(("two CPUs", cpus[0], cpus[1]))
    for label, client, server in placements:
        found = measure(args.rounds, client, server)
        print(
            f"{label:9s} round trip p50 {found['p50']:6.1f} us  p90 {found['p90']:6.1f} us  "
            f"send() p50 {found['send']:5.1f} us"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
