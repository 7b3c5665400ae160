"""Thread-safe event counters, read as one snapshot."""

from __future__ import annotations

import threading
from collections import Counter


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def inc(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def inc_all(self, names: list[str]) -> None:
        """Add one to each name (a name given twice counts twice), under one lock."""
        with self._lock:
            self._counts.update(names)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
