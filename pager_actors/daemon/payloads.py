"""What the HTTP API accepts: request bodies read, parsed and checked at the edge.

Anything refused here gets a JSON 400 (or 413) naming what was wrong, and
reaches no actor and no store. Client input never causes a 500: bodies are
bounded, nesting and number sizes are bounded by the parser and reported, and
text that UTF-8 storage cannot hold (lone surrogates, which JSON allows) is
refused wherever it appears.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request

from pager_actors.domain import DEFAULT_KEY, check_key


class HttpError(Exception):
    """A request refused with `status`; the message goes to the client as `{"error": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, at most `limit` bytes, every string valid Unicode."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    body = parse_json(b"".join(chunks))
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


def parse_json(data: bytes) -> Any:
    """Parse, turning every parser failure into a 400: syntax, encoding, depth, huge numbers."""
    try:
        return json.loads(data or b"null")
    except RecursionError as error:
        raise HttpError(400, "malformed JSON: nested too deeply") from error
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError, int digit limit
        raise HttpError(400, f"malformed JSON: {error}") from error


def invalid_text(value: Any) -> str | None:
    """Where `value` holds a string UTF-8 cannot encode (a JSON path), or None if nowhere."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and not _encodable(item):
                return path or "the body"
        elif isinstance(item, dict):
            for key, child in item.items():
                if not _encodable(key):
                    return f"{path}.<key>" if path else "<key>"
                stack.append((f"{path}.{key}" if path else key, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def require_text(body: dict[str, Any]) -> None:
    """Refuse a body that holds text storage cannot keep, naming the field."""
    where = invalid_text(body)
    if where is not None:
        raise HttpError(400, f"field {where!r} is not valid Unicode text (lone surrogate)")


def text_field(body: dict[str, Any], name: str) -> str:
    """A required, non-blank string field."""
    value = body.get(name)
    if value is None:
        raise HttpError(400, f"missing field {name!r}")
    if not isinstance(value, str) or not value.strip():
        raise HttpError(400, f"field {name!r} must be a non-empty string")
    return value


@dataclass(frozen=True, slots=True)
class AlertIn:
    """One alert, from the API or a webhook: `firing` with its message, or `resolved`."""

    service_id: str
    status: str
    message: str
    key: str
    alertname: str | None = None


def alert(body: dict[str, Any]) -> AlertIn:
    """POST /api/v1/alerts: {"service_id", "message", "key"?, "status"?}."""
    require_text(body)
    status = body.get("status", "firing")
    if status not in ("firing", "resolved"):
        raise HttpError(400, "field 'status' must be \"firing\" or \"resolved\"")
    key = body.get("key", DEFAULT_KEY)
    try:
        check_key(key)
    except ValueError as error:
        raise HttpError(400, f"field 'key': {error}") from error
    message = text_field(body, "message") if status == "firing" else str(
        body.get("message") or "")
    return AlertIn(text_field(body, "service_id"), status, message, key)


def moment(body: dict[str, Any], name: str) -> datetime | None:
    """An optional ISO 8601 time with its offset (`Z` or `+01:00`)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise HttpError(400, f"field {name!r} must be an ISO 8601 time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise HttpError(400, f"field {name!r} is not an ISO 8601 time: {value[:40]!r}") \
            from error
    if parsed.tzinfo is None:
        raise HttpError(400, f"field {name!r} needs a UTC offset, such as Z or +01:00")
    return parsed


def alertmanager_alerts(body: dict[str, Any], label: str) -> list[AlertIn | HttpError]:
    """The webhook's alerts (payload version 4), each understood or refused on its own."""
    version = body.get("version")
    if version is not None and str(version) != "4":
        raise HttpError(400, f"unsupported Alertmanager payload version {version!r} "
                             "(expected \"4\")")
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise HttpError(400, "missing field 'alerts' (a list)")
    return [_alertmanager_alert(alert, label) for alert in alerts]


def _alertmanager_alert(alert: Any, label: str) -> AlertIn | HttpError:
    """One alert, or why it is refused (never echoing text that cannot be encoded)."""
    if not isinstance(alert, dict):
        return HttpError(400, "an alert must be a JSON object")
    labels: Any = alert.get("labels") or {}
    annotations: Any = alert.get("annotations") or {}
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        return HttpError(400, "labels and annotations must be objects")
    for part, values in (("labels", labels), ("annotations", annotations)):
        where = invalid_text(values)
        if where is not None:
            return HttpError(400, f"{part}.{where} is not valid Unicode text (lone surrogate)")
    service_id = labels.get(label)
    if not isinstance(service_id, str) or not service_id:
        return HttpError(400, f"alert has no {label!r} label")
    status = alert.get("status")
    alertname = labels.get("alertname")
    alertname = alertname if isinstance(alertname, str) else None
    if status not in ("firing", "resolved"):
        return HttpError(400, f"unknown alert status {str(status)[:40]!r}")
    fingerprint = alert.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint.isprintable() \
            or not 1 <= len(fingerprint) <= 200:
        return HttpError(400, "alert has no usable 'fingerprint' (its dedup key)")
    message = next((str(text) for text in (annotations.get("summary"),
                                           annotations.get("description"), alertname)
                    if text), "alert from Alertmanager")
    return AlertIn(service_id, status, message, fingerprint, alertname)
