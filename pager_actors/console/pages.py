"""The pages: overview, service, incident history, and the actions their forms post.

Reads go through the `Pager` facade on a worker thread; commands are awaited
without blocking the event loop. Every action names its user (`by` =
`console:<name>`), and Acknowledge and Resolve carry the incident number the
page showed; the engine acts only on that incident, so if another one is open
by the time the form arrives, the console says so instead of acting on an
incident its user has not seen.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pykka
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pager_actors.console import views
from pager_actors.console.site import Console, ConsoleError, settled
from pager_actors.domain import MonitoredService, PagerError, UnknownServiceError
from pager_actors.domain.model import MAX_WINDOW
from pager_actors.domain.timeline import summarize
from pager_actors.ports import StoreError

REFRESH_SECONDS = 10
REASON_MAX_CHARS = 200
TIMELINE_LIMIT = 500  # entries shown on a page, newest first


class ServicePages:
    def __init__(self, console: Console) -> None:
        self.console = console

    async def overview(self, request: Request) -> Response:
        console = self.console
        found = await console.authenticated(request)
        if found is None:
            return console.to_login(request)
        states, unreadable = await console.read(self._states, console.service_ids())
        rows = views.overview(states, console.now())
        unacked = sum(row.unacknowledged for row in rows)
        title = f"({unacked}) Services" if unacked else "Services"
        return await console.render(request, "overview.html", found=found, title=title,
                              rows=rows, open=[r for r in rows if r.open],
                              healthy=[r for r in rows if not r.open], unacked=unacked,
                              unreadable=unreadable,
                              now=views.when(console.now()), refresh=REFRESH_SECONDS)

    def _states(self, ids: list[str]) -> tuple[list[MonitoredService], list[tuple[str, str]]]:
        """Every service's state; one that cannot be read now (quarantined, the store
        failing) is listed with the reason rather than hiding all the others."""
        states, unreadable = [], []
        for service_id in ids:
            try:
                states.append(self.console.pager.state(service_id))
            except UnknownServiceError:
                continue  # removed by a reload since the list was read
            except (PagerError, StoreError, pykka.Timeout) as error:
                unreadable.append((service_id, str(error) or type(error).__name__))
        return states, unreadable

    async def service(self, request: Request) -> Response:
        console = self.console
        found = await console.authenticated(request)
        if found is None:
            return console.to_login(request)
        service_id = request.path_params["service_id"]
        state: MonitoredService = await console.read(console.pager.state, service_id)
        now = console.now()
        incident = state.incident
        timeline = []
        if incident is not None:
            entries = await console.read(console.pager.timeline, service_id, incident.number)
            timeline = views.timeline(entries[-TIMELINE_LIMIT:])
        in_force = console.policy(service_id)
        snapshot = incident.policy if incident is not None else None
        return await console.render(
            request, "service.html", found=found, title=service_id, service_id=service_id,
            row=views.service_row(state, now), timeline=timeline,
            windows=[views.window(w, now) for w in state.windows],
            policy=views.policy(in_force) if in_force else None,
            snapshot=views.policy(snapshot) if snapshot and snapshot != in_force else None,
            ack_timeout=views.duration(console.ack_timeout) if console.ack_timeout else None,
            window_end=views.default_window_end(now), now=views.when(now),
            max_window_days=MAX_WINDOW.days, reason_max=REASON_MAX_CHARS)

    async def history(self, request: Request) -> Response:
        console = self.console
        found = await console.authenticated(request)
        if found is None:
            return console.to_login(request)
        service_id = request.path_params["service_id"]
        summaries = await console.read(console.pager.incidents, service_id)
        now = console.now()
        return await console.render(request, "incidents.html", found=found,
                              title=f"{service_id}: incidents", service_id=service_id,
                              incidents=[views.incident(s, now) for s in summaries])

    async def incident(self, request: Request) -> Response:
        console = self.console
        found = await console.authenticated(request)
        if found is None:
            return console.to_login(request)
        service_id, number = request.path_params["service_id"], request.path_params["number"]
        entries = await console.read(console.pager.timeline, service_id, number)
        summary = summarize(number, entries)
        if summary is None:
            raise ConsoleError(404, "No such incident",
                               f"{service_id} has no incident #{number}, or it is older than "
                               "the timeline keeps.")
        # Still open (the link in a page's mail leads here): its buttons too.
        state: MonitoredService = await console.read(console.pager.state, service_id)
        now = console.now()
        open_now = state.incident is not None and state.incident.number == number
        return await console.render(request, "incident.html", found=found,
                              title=f"{service_id}: incident #{number}", service_id=service_id,
                              incident=views.incident(summary, now),
                              row=views.service_row(state, now) if open_now else None,
                              timeline=views.timeline(entries[-TIMELINE_LIMIT:]))

    # -- actions ---------------------------------------------------------------

    def _known(self, request: Request) -> str:
        service_id: str = request.path_params["service_id"]
        if self.console.policy(service_id) is None:
            raise ConsoleError(404, "No such service", f"There is no service {service_id!r}.")
        return service_id

    async def acknowledge(self, request: Request) -> Response:
        return await self._on_incident(request, "acknowledge")

    async def resolve(self, request: Request) -> Response:
        return await self._on_incident(request, "resolve")

    async def _on_incident(self, request: Request, action: str) -> Response:
        console = self.console
        session, user, form = await console.posted(request)
        service_id = self._known(request)
        shown = form.get("incident", "")
        if not shown.isdigit() or len(shown) > 18:
            raise ConsoleError(400, "This form could not be read", "It names no incident.")
        number, by = int(shown), f"console:{user.name}"
        # The engine acts only if incident `number` is the open one, so nobody acts on an
        # incident their page did not show.
        if action == "acknowledge":
            outcome = await settled(console.pager.acknowledge(service_id, by=by,
                                                              incident=number))
        else:
            outcome = await settled(console.pager.healthy(service_id, by=by, incident=number))
        await console.flash(session, _said(action, outcome, number))
        return _back(service_id)

    async def start_maintenance(self, request: Request) -> Response:
        console = self.console
        session, _, form = await console.posted(request)
        service_id = self._known(request)
        now = console.now()
        try:
            end = _window_end(form.get("end", ""), now)
            reason = _reason(form.get("reason", ""))
        except ValueError as error:
            await console.flash(session, ("error", f"No maintenance window started: {error}"))
            return _back(service_id)
        outcome = await settled(console.pager.start_maintenance(service_id, end, None, reason))
        if outcome.event == "maintenance_started":
            window = outcome.state.windows[-1]
            said = ("success", f"Maintenance window {window.id} runs until "
                               f"{views.when(window.end)}: alerts are held and nobody is "
                               "paged for them.")
        else:
            said = ("error", "No maintenance window started: the pager refused it "
                             f"({outcome.reason}).")
        await console.flash(session, said)
        return _back(service_id)

    async def end_maintenance(self, request: Request) -> Response:
        console = self.console
        session, _, _ = await console.posted(request)
        service_id, window = self._known(request), request.path_params["window"]
        outcome = await settled(console.pager.end_maintenance(service_id, window))
        await console.flash(session, (
            ("info", f"Maintenance window {window} had already ended.")
            if outcome.reason == "unknown_window" else
            ("success", f"Maintenance window {window} ended: alerts still firing page now.")))
        return _back(service_id)


def _said(action: str, outcome: Any, number: int) -> tuple[str, str]:
    """What the page says after Acknowledge or Resolve on incident `number`."""
    if outcome.event == "acknowledged":
        return "success", f"You acknowledged incident #{number}: escalation stopped."
    if outcome.event == "resolved":
        return "success", f"Incident #{number} resolved."
    current = outcome.state.incident
    if current is not None and current.number != number:
        return "warning", (f"Incident #{number} is closed; incident #{current.number} is open "
                           "now. Read it before you act on it.")
    if outcome.reason == "already_acknowledged" and current is not None:
        return "info", (f"Incident #{number} was already acknowledged by "
                        f"{current.acknowledged_by or 'someone'}.")
    return "info", f"Incident #{number} is already closed: nothing to do."


def _window_end(text: str, now: datetime) -> datetime:
    """The form's end time: datetime-local text, read as UTC."""
    try:
        end = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("give the end as a date and time (UTC)") from None
    end = end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)
    if end <= now:
        raise ValueError(f"the end, {views.when(end)}, is already past")
    if end - now > MAX_WINDOW:
        raise ValueError(f"a window lasts at most {MAX_WINDOW.days} days")
    return end


def _reason(text: str) -> str:
    reason = " ".join(text.split())
    if len(reason) > REASON_MAX_CHARS or not reason.isprintable():
        raise ValueError(f"the reason is at most {REASON_MAX_CHARS} printable characters")
    return reason


def _back(service_id: str) -> RedirectResponse:
    return RedirectResponse(f"/services/{service_id}", status_code=303)
