"""The rotations API: who is on call, their shifts, and overrides.

    GET    /api/v1/rotations
    GET    /api/v1/rotations/{id}/oncall?at=ISO            (default now)
    GET    /api/v1/rotations/{id}/shifts?from=ISO&until=ISO (at most 1,000)
    POST   /api/v1/rotations/{id}/overrides {"user", "start", "end"} -> 201 {"id", ...}
    DELETE /api/v1/rotations/{id}/overrides/{oid}

Times are ISO 8601 with an offset, in and out (answers in the rotation's zone).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pager_actors.daemon.payloads import HttpError, json_object, moment, require_text
from pager_actors.oncall import Override, Rotation, Shift
from pager_actors.oncall.directory import OnCall, UnknownRotationError

MAX_SHIFTS = 1000


class RotationsApi:
    def __init__(self, oncall: OnCall, limit: int) -> None:
        self._oncall, self._limit = oncall, limit

    async def list(self, request: Request) -> Response:
        now = datetime.now(UTC)
        return JSONResponse({"rotations": [
            {**_rotation(r), "on_call": _shift(self._oncall.on_call(r.id, now), r)}
            for r in self._oncall.rotations()]})

    async def on_call(self, request: Request) -> Response:
        rotation = self._rotation(request)
        at = _query_time(request, "at") or datetime.now(UTC)
        return JSONResponse(_shift(self._oncall.on_call(rotation.id, at), rotation))

    async def shifts(self, request: Request) -> Response:
        rotation = self._rotation(request)
        start, end = _query_time(request, "from"), _query_time(request, "until")
        if start is None or end is None:
            raise HttpError(400, "give 'from' and 'until' (ISO 8601 with an offset)")
        if end <= start:
            raise HttpError(400, "'until' must be after 'from'")
        try:
            found = self._oncall.shifts(rotation.id, start, end)
        except ValueError as error:  # more than MAX_SHIFTS
            raise HttpError(400, f"{error}: ask for a shorter range") from error
        return JSONResponse({"rotation": rotation.id,
                             "shifts": [_shift(s, rotation) for s in found]})

    async def add_override(self, request: Request) -> Response:
        rotation = self._rotation(request)
        body = await json_object(request, self._limit)
        require_text(body)
        user = body.get("user")
        start, end = moment(body, "start"), moment(body, "end")
        if not isinstance(user, str) or start is None or end is None:
            raise HttpError(400, "give 'user', 'start' and 'end' (ISO 8601 with an offset)")
        try:
            override = await asyncio.to_thread(self._oncall.add_override, rotation.id, user,
                                               start, end, datetime.now(UTC))
        except ValueError as error:
            raise HttpError(400, str(error)) from error
        return JSONResponse(_override(override, rotation), status_code=201)

    async def remove_override(self, request: Request) -> Response:
        rotation = self._rotation(request)
        number = request.path_params["override"]
        if not await asyncio.to_thread(self._oncall.remove_override, rotation.id, number):
            raise HttpError(404, f"rotation {rotation.id!r} has no override {number}")
        return JSONResponse({"removed": number})

    def _rotation(self, request: Request) -> Rotation:
        try:
            return self._oncall.rotation(request.path_params["rotation"])
        except UnknownRotationError as error:
            raise HttpError(404, str(error)) from error


def _query_time(request: Request, name: str) -> datetime | None:
    value = request.query_params.get(name)
    return moment({name: value}, name) if value is not None else None


def _local(moment_: datetime, rotation: Rotation) -> str:
    return moment_.astimezone(ZoneInfo(rotation.time_zone)).isoformat()


def _rotation(rotation: Rotation) -> dict[str, Any]:
    return {"id": rotation.id, "time_zone": rotation.time_zone,
            "shift_s": rotation.shift.total_seconds(),
            "start": rotation.start.isoformat(timespec="minutes"), "users": rotation.users}


def _shift(shift: Shift, rotation: Rotation) -> dict[str, Any]:
    start = None if shift.start.year == 1 else _local(shift.start, rotation)
    return {"user": shift.user, "from": start, "until": _local(shift.end, rotation),
            "override": shift.override is not None}


def _override(override: Override, rotation: Rotation) -> dict[str, Any]:
    return {"id": override.id, "rotation": rotation.id, "user": override.user,
            "start": _local(override.start, rotation), "end": _local(override.end, rotation)}
