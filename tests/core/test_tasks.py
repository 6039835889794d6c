"""cancel_and_wait: a task whose code swallows a cancel is cancelled again until it ends."""

from __future__ import annotations

import asyncio

import pytest

from costwarden.core.tasks import AGAIN_EVERY_SECONDS, cancel_and_wait


def _swallowing(swallows: int, turns: list[int]) -> asyncio.Task[None]:
    """A background loop whose library call turns its first ``swallows`` cancels into an error
    that the loop carries on after (as redis-py 8.1 can, see core/tasks.py)."""

    async def library_call() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if turns[0] < swallows:
                raise OSError("timed out") from None
            raise

    async def loop() -> None:
        while True:
            try:
                await library_call()
            except OSError:
                turns[0] += 1  # (the loop logs it and goes round again)

    return asyncio.create_task(loop())


async def test_one_cancel_of_such_a_task_is_lost() -> None:
    """Why the helper exists: cancelled once, the loop goes round again and keeps running."""
    turns = [0]
    task = _swallowing(1, turns)
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=3 * AGAIN_EVERY_SECONDS)
    assert not done and turns == [1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("swallows", [0, 1, 3])
async def test_the_task_ends_whatever_it_swallows(swallows: int) -> None:
    turns = [0]
    task = _swallowing(swallows, turns)
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await cancel_and_wait([task, None])
    assert task.cancelled() and turns == [swallows]
    # one extra round of AGAIN_EVERY_SECONDS per swallowed cancel, no more
    assert loop.time() - start < (swallows + 1) * AGAIN_EVERY_SECONDS + 0.5


async def test_an_exception_a_task_ended_with_is_raised_after_all_have_ended() -> None:
    async def fails() -> None:
        raise ValueError("broken loop")

    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    turns = [0]
    other = _swallowing(1, turns)
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken loop"):
        await cancel_and_wait([failed, other])
    assert other.cancelled() and turns == [1]


async def test_nothing_to_stop() -> None:
    await cancel_and_wait([])
    await cancel_and_wait([None])
