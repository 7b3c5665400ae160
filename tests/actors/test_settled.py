"""`settled`: an asyncio handler waits for a command future settled in another thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pager_actors._future import CommandFuture, settled


def test_every_waiter_wakes_when_a_thread_settles_a_batch() -> None:
    """Futures settled together by one thread wake every one of their waiters."""
    futures: list[CommandFuture[Any]] = [CommandFuture() for _ in range(200)]

    async def main() -> list[bool]:
        waiting = [asyncio.ensure_future(settled(f, 10)) for f in futures]
        await asyncio.sleep(0)
        thread = threading.Thread(target=lambda: [f.set(i) for i, f in enumerate(futures)])
        thread.start()
        results = await asyncio.gather(*waiting)
        thread.join()
        return results

    assert asyncio.run(main()) == [True] * 200
    assert [f.get(timeout=0) for f in futures] == list(range(200))


def test_a_future_settled_already_is_settled_at_once() -> None:
    """A future already settled returns True without waiting."""
    future: CommandFuture[Any] = CommandFuture()
    future.set("done")
    assert asyncio.run(settled(future, 0.01)) is True


def test_a_future_not_settled_in_time_gives_false() -> None:
    """Past the timeout `settled` is False; settling afterwards breaks nothing."""
    future: CommandFuture[Any] = CommandFuture()

    async def main() -> bool:
        return await settled(future, 0.05)

    assert asyncio.run(main()) is False
    future.set("late")  # its loop is closed: the late wake-up is dropped
    assert future.get(timeout=0) == "late"


def test_waiters_of_several_loops_wake_on_their_own_loop() -> None:
    """Two loops in two threads each get their own waiters settled."""
    futures: list[CommandFuture[Any]] = [CommandFuture() for _ in range(4)]
    results: dict[int, list[bool]] = {}
    started = threading.Barrier(3)

    def run(index: int) -> None:
        async def main() -> list[bool]:
            waiting = [asyncio.ensure_future(settled(f, 10)) for f in futures[index::2]]
            await asyncio.sleep(0)
            await asyncio.to_thread(started.wait)
            return await asyncio.gather(*waiting)

        results[index] = asyncio.run(main())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    started.wait()
    for future in futures:
        future.set(None)
    for thread in threads:
        thread.join(timeout=10)
    assert results == {0: [True, True], 1: [True, True]}


def test_a_shorter_timeout_after_a_longer_one_expires_first() -> None:
    """Deadlines are kept in order: a short wait queued after a long one ends on time."""
    slow: CommandFuture[Any] = CommandFuture()
    fast: CommandFuture[Any] = CommandFuture()

    async def main() -> tuple[bool, bool, float]:
        loop = asyncio.get_running_loop()
        long_wait = asyncio.ensure_future(settled(slow, 30))
        await asyncio.sleep(0)
        started = loop.time()
        short = await settled(fast, 0.05)
        spent = loop.time() - started
        slow.set(None)
        return short, await long_wait, spent

    short, long_, spent = asyncio.run(main())
    assert (short, long_) == (False, True)
    assert spent < 5
