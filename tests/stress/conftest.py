"""Helpers shared by the stress tests."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable

PAGE = re.compile(
    r"^\[(?P<service>[^\]]+)\] level (?P<level>\d+) page, incident #(?P<incident>\d+)")


def pages(mail, sms) -> Counter[tuple[str, int, int, str]]:
    """Count deliveries by (service, incident, level, target) from what the fakes recorded."""
    counted: Counter[tuple[str, int, int, str]] = Counter()
    sent = [(m.to, m.body) for m in list(mail.sent)] + [(s.to, s.text) for s in list(sms.sent)]
    for to, text in sent:
        match = PAGE.match(text)
        assert match, text
        counted[(match["service"], int(match["incident"]), int(match["level"]), to)] += 1
    return counted


def run_threads(count: int, work: Callable[[int], None], timeout: float = 60) -> None:
    """Start `count` threads together on a barrier, join them all, re-raise the first error."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            work(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a worker thread did not finish in time"
    if errors:
        raise errors[0]
