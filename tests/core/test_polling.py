"""Poller: a run of failures is told once (then every WARN_EVERY_SECONDS), its end once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from costwarden.core import polling


async def test_a_run_of_failures_is_told_once_and_its_end_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = 0
    told: list[str] = []

    async def step() -> None:
        nonlocal steps
        steps += 1
        if steps <= 30:
            raise ConnectionError(f"database away ({steps})")

    poller = polling.Poller("test-cache", 0.001, step, lambda exc: told.append(str(exc)))
    with caplog.at_level(logging.WARNING, logger="costwarden.core.polling"):
        poller.start()
        for _ in range(500):
            if steps > 31:
                break
            await asyncio.sleep(0.005)
        await poller.close()
    assert steps > 31
    assert told == ["database away (1)"]  # not one per failed step
    (recovered,) = [r.getMessage() for r in caplog.records]
    assert recovered.startswith("test-cache recovered after failing for ")

    # A run longer than WARN_EVERY_SECONDS is told again.
    monkeypatch.setattr(polling, "WARN_EVERY_SECONDS", 0.0)
    steps, told = 0, []
    poller = polling.Poller("test-cache", 0.001, step, lambda exc: told.append(str(exc)))
    poller.start()
    for _ in range(500):
        if steps > 31:
            break
        await asyncio.sleep(0.005)
    await poller.close()
    assert len(told) == 30
