"""The server writes a response's head with its first body bytes, in one write."""

from __future__ import annotations

import asyncio
from typing import Any

from pager_actors.daemon.server import _HeadWithBody


class RecordingTransport(asyncio.Transport):
    """Records every write and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Cycle:
    response_started = False


def test_the_head_leaves_with_the_first_body_bytes() -> None:
    """Head and body of a response go out in one write; later chunks on their own."""
    transport, cycle = RecordingTransport(), Cycle()
    joined = _HeadWithBody(transport, cycle)  # type: ignore[arg-type]
    cycle.response_started = True
    joined.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
    assert transport.writes == []
    joined.write(b'{"ok": true}')
    joined.write(b"more")
    assert transport.writes == [b'HTTP/1.1 202 Accepted\r\n\r\n{"ok": true}', b"more"]


def test_100_continue_goes_out_at_once() -> None:
    """A write before the response starts (100 Continue) is not held."""
    transport, cycle = RecordingTransport(), Cycle()
    joined = _HeadWithBody(transport, cycle)  # type: ignore[arg-type]
    joined.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_closing_writes_a_held_head_first() -> None:
    """A connection closed after the head and before any body still gets the head."""
    transport, cycle = RecordingTransport(), Cycle()
    joined = _HeadWithBody(transport, cycle)  # type: ignore[arg-type]
    cycle.response_started = True
    joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
    joined.close()
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
    assert transport.closed and joined.is_closing()
