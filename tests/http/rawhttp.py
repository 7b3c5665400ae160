"""A raw HTTP/1.1 client on plain sockets, for clients that misbehave on purpose."""

from __future__ import annotations

import socket
import time
import weakref

GENEROUS = 10.0  # seconds: the bound for anything that should happen "soon"

# Bytes read past the end of a response (the start of the next one, when two responses
# arrive in one segment), kept for the next read_response on the same connection.
_unread: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=GENEROUS)


def until_closed(sock: socket.socket, within: float = GENEROUS) -> tuple[bytes, float]:
    """Read until the server closes the connection: what it sent, and how long that took."""
    started = time.monotonic()
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {within} s; received {received!r}") from None
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


def response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One whole response (with a Content-Length) from a connection; its status and body."""
    sock.settimeout(GENEROUS)
    raw = _unread.pop(sock, b"")
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {raw!r}"
        raw += chunk
    status, headers, body = response(raw)
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    if len(body) > length:
        _unread[sock] = body[length:]
    return status, body[:length]


def request(sock: socket.socket, path: str = "/echo", body: bytes = b"{}") -> tuple[int, bytes]:
    """One complete request on a keep-alive connection; its status and body."""
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return read_response(sock)


def half_sent_head(port: int, path: str = "/echo") -> socket.socket:
    """A connection whose request stops in the middle of its head."""
    sock = connect(port)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Le".encode())
    return sock


def half_sent_body(port: int, path: str = "/echo", headers: str = "") -> socket.socket:
    """A connection whose request has its whole head but only 6 of its 100 body bytes."""
    sock = connect(port)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: 100\r\n\r\n"
                 f'{{"a": '.encode())
    return sock


def still_open(sock: socket.socket) -> bool:
    """Open, and the server has sent nothing on it."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)
    return False
