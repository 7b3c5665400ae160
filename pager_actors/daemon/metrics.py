"""Prometheus metrics. Engine figures are read from `Pager.stats()` at scrape time, so the
hot path pays nothing for them; only the HTTP layer's own counter is updated per request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pager_actors._pager import Pager


class Metrics:
    def __init__(self, pager: Pager, timer_lag: Callable[[], tuple[float, float]]) -> None:
        self.registry = CollectorRegistry()
        self.alerts_received = Counter(
            "pager_alerts_received", "Alerts received, by source (api, alertmanager).",
            ["source"], registry=self.registry)
        self.registry.register(_EngineCollector(pager, timer_lag))

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _EngineCollector(Collector):
    def __init__(self, pager: Pager, timer_lag: Callable[[], tuple[float, float]]) -> None:
        self._pager = pager
        self._timer_lag = timer_lag

    def collect(self) -> Iterator[Any]:
        stats = self._pager.stats()
        sent = CounterMetricFamily("pager_notifications_sent",
                                   "Notifications delivered, by channel.", labels=["channel"])
        failed = CounterMetricFamily("pager_notifications_failed",
                                     "Notifications that failed for good, by channel.",
                                     labels=["channel"])
        retried = CounterMetricFamily("pager_notification_retries",
                                      "Delivery attempts retried after a transient failure.",
                                      labels=["channel"])
        for channel in ("mail", "sms"):
            sent.add_metric([channel], stats.get(f"{channel}_sent", 0))
            failed.add_metric([channel], stats.get(f"{channel}_failed", 0))
            retried.add_metric([channel], stats.get(f"{channel}_retried", 0))
        yield from (sent, failed, retried)
        for name, key, text in (
            ("pager_incidents_opened", "opened", "Incidents opened."),
            ("pager_escalations", "escalated", "Escalations to a next level or round."),
            ("pager_escalations_exhausted", "exhausted",
             "Incidents whose escalation ran out of levels and rounds: nobody more is paged."),
            ("pager_acknowledgements", "acknowledged", "Incidents acknowledged."),
            ("pager_acknowledgements_expired", "ack_expired",
             "Acknowledgements that expired before the incident was resolved."),
            ("pager_alerts_suppressed", "suppressed", "Alerts that fired in a maintenance window."),
            ("pager_pages_withdrawn", "pages_withdrawn",
             "Pages held by a contact's throttle and withdrawn by an ack before they went out."),
            ("pager_service_restarts", "service_restarts", "Service actor restarts."),
            ("pager_dead_letters", "dead_letters", "Commands dropped after crashing twice."),
            ("pager_quarantines", "services_quarantined", "Services quarantined."),
        ):
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], stats.get(key, 0))
            yield counter
        yield GaugeMetricFamily("pager_open_incidents", "Services with an open incident.",
                                value=self._pager.open_incidents())
        yield GaugeMetricFamily("pager_service_actors", "Live service actors.",
                                value=stats.get("service_actors", 0))
        last, worst = self._timer_lag()
        lag = GaugeMetricFamily("pager_timer_lag_seconds",
                                "How late ack timeouts fired: last and max since start.",
                                labels=["stat"])
        lag.add_metric(["last"], last)
        lag.add_metric(["max"], worst)
        yield lag
        depth = GaugeMetricFamily("pager_mailbox_depth", "Messages waiting in an actor's inbox.",
                                  labels=["actor"])
        for actor, size in self._pager.mailbox_depths().items():
            depth.add_metric([actor], size)
        yield depth
