"""Prometheus metrics. Engine figures are read from `Pager.stats()` at scrape time, so the
hot path pays nothing for them; only the HTTP layer's own counter is updated per request."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pager_actors._pager import Pager


class Metrics:
    """`cluster`: this node's lease and forwarding figures, when it is in a cluster."""

    def __init__(self, pager: Pager, timer_lag: Callable[[], tuple[float, float]],
                 cluster: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.alerts_received = Counter(
            "pager_alerts_received", "Alerts received, by source (api, alertmanager).",
            ["source"], registry=self.registry)
        self.registry.register(_EngineCollector(pager, timer_lag))
        if cluster is not None:
            self.registry.register(_ClusterCollector(cluster))

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
            ("pager_ledger_refusals", "ledger_refusals",
             "Throttled sends held back because other nodes used the contact's budget "
             "(cluster)."),
            ("pager_throttle_ledger_failures", "throttle_ledger_failures",
             "Throttled sends that went without the cluster's budget check (PostgreSQL "
             "unreachable)."),
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


class _ClusterCollector(Collector):
    """The node's figures (`LeaseKeeper.figures()`, `PgForwarder.figures()`)."""

    GAUGES = (
        ("pager_cluster_shards_held", "shards_held", "Shards whose lease this node holds."),
        ("pager_cluster_config_mismatch", "nodes_config_mismatch",
         "Live nodes whose config hash differs from this node's (reload every node)."),
    )
    COUNTERS = (
        ("pager_cluster_lease_renewals", "lease_renewals", "Lease renewals that succeeded."),
        ("pager_cluster_lease_renewal_failures", "lease_renewal_failures",
         "Lease renewals that failed (PostgreSQL unreachable)."),
        ("pager_cluster_failovers", "failovers",
         "Shards taken over from a node whose lease lapsed."),
        ("pager_cluster_shards_lost", "shards_lost", "Shards whose lease this node lost."),
        ("pager_cluster_shards_handed_over", "shards_handed_over",
         "Shards this node handed over gracefully (a node joined, or this one stopped)."),
        ("pager_cluster_shards_resynced", "shards_resynced",
         "Shards abandoned and adopted again after a lease renewal came back past its "
         "local deadline (their timers re-armed, pending pages resent)."),
        ("pager_cluster_forwarded_commands", "commands_forwarded",
         "Commands this node forwarded to the owner of their service."),
        ("pager_cluster_forward_timeouts", "forward_timeouts",
         "Forwarded commands the owner did not answer in time (504)."),
        ("pager_cluster_forwarded_served", "forwarded_served",
         "Commands other nodes forwarded that ran here."),
    )

    def __init__(self, figures: Callable[[], Mapping[str, int]]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Any]:
        figures = self._figures()
        for name, key, text in self.GAUGES:
            yield GaugeMetricFamily(name, text, value=figures.get(key, 0))
        for name, key, text in self.COUNTERS:
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], figures.get(key, 0))
            yield counter
