"""The daemon's composition root: config -> store -> socket -> Pager -> HTTP, and back down.

Start order, so that a daemon that cannot serve sends nothing:
1. the state store: an SQLite file's exclusive lock, then read-only checks (a
   file in use, corrupt, foreign or newer is refused before anything is
   written); or, for a `postgresql://` state, the connection and the schema
   (unreachable, refused login or newer schema: refused). A PostgreSQL state
   takes no lock: it is shared by design, and ownership comes with the
   cluster's leases (issue 11);
2. the listening socket (a port in use is refused);
3. senders, timer, and the Pager, whose recovery resends pending pages and
   re-arms timeouts;
4. `daemon_listening`, then uvicorn serves the socket.
Steps 1 and 2 raise StartupRefused: one line for the operator, exit code 2.

With a PostgreSQL state the daemon is a node of a cluster (daemon/cluster.py):
after the Pager starts, owning nothing, the node serves commands forwarded to
it and takes its share of the shard leases, adopting their services; SIGTERM
hands them over before the pager stops.

SIGHUP reloads the services, their policies and the users (`Reloader`); the
web console reads the users in force on every request. In a cluster the
node's config hash follows, so that nodes left on the old config are flagged.
SIGTERM/SIGINT: uvicorn stops accepting and finishes in-flight requests, then
(in a cluster) the node hands its shards over, then the pager drains and stops
its actors, then the timer and the store close. Exit code 0.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import ssl
import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route

from adapters.log import LogMailSender, LogSmsSender
from adapters.memory import InMemoryPolicyRepository
from adapters.pg_cluster import LeaseKeeper
from adapters.pg_console import PgConsoleState
from adapters.pg_forward import PgForwarder
from adapters.pg_throttle import PgSendLedger
from adapters.postgres import PostgresStore
from adapters.smtp import SmtpMailSender
from adapters.sqlite import SqliteStore
from adapters.timer import ThreadedTimer
from adapters.twilio import TwilioSmsSender
from pager_actors._adapter_actors import RetryPolicy
from pager_actors._pager import Pager
from pager_actors._throttle import Throttle, Throttling
from pager_actors.console import create_console
from pager_actors.daemon import replies
from pager_actors.daemon.cluster import Node
from pager_actors.daemon.config import (
    Config,
    ConfigError,
    PostgresState,
    ServerConfig,
    config_hash,
    load_config,
)
from pager_actors.daemon.http import COMMIT_TIMEOUT, create_app
from pager_actors.daemon.metrics import Metrics
from pager_actors.daemon.server import build_server
from pager_actors.domain import Contact, EscalationPolicy, Health, PageFormat
from pager_actors.domain.links import LinkKey, Links
from pager_actors.logs import get_logger
from pager_actors.oncall.directory import OnCall
from pager_actors.ports import MailSender, SmsSender, StateStore, StoreError

log = get_logger("pager_actors.daemon")

GRACEFUL_SECONDS = 4
# A forwarded command's owner must answer within this: the forwarder's 504, which says
# whether the command was applied, comes before the HTTP layer's own (COMMIT_TIMEOUT).
FORWARD_TIMEOUT = COMMIT_TIMEOUT - 0.5


class StartupRefused(Exception):
    """The daemon will not start; nothing was sent. Its message is one line."""


def mail_sender(config: Config) -> MailSender:
    mail = config.mail
    if mail.kind == "log":
        return LogMailSender()
    tls = ssl.create_default_context(cafile=str(mail.ca_file) if mail.ca_file else None)
    return SmtpMailSender(mail.host, mail.port, mail.sender, starttls=mail.starttls,
                          username=mail.username, password=mail.password,
                          timeout=mail.timeout.total_seconds(), tls_context=tls,
                          max_connections=mail.max_concurrency)


def sms_sender(config: Config) -> SmsSender:
    sms = config.sms
    if sms.kind == "log":
        return LogSmsSender()
    assert sms.account_sid and sms.auth_token and sms.from_number
    return TwilioSmsSender(sms.base_url, sms.account_sid, sms.auth_token, sms.from_number,
                           timeout=sms.timeout.total_seconds(),
                           max_connections=sms.max_concurrency)


def links(config: Config) -> Links | None:
    """Signed links in mails, when people can reach the daemon: signed with `secret`,
    verified with it and `previous_secret` (a rotation's old key)."""
    server = config.server
    if server.public_url is None or server.secret is None:
        return None
    secrets = [server.secret] + ([server.previous_secret] if server.previous_secret else [])
    return Links(server.public_url, tuple(LinkKey(s.encode()) for s in secrets))


def page_format(config: Config) -> PageFormat:
    return PageFormat(sms_message_chars=config.sms.max_message_chars, links=links(config),
                      reply_codes=config.replies, status_updates=config.pager.status_updates,
                      fallback=config.pager.fallback)


def throttling(config: Config) -> Throttling:
    """Per-contact throttles from [mail] and [sms] (max_per_contact 0: that channel has none)."""
    mail, sms = config.mail, config.sms
    return Throttling(
        mail=Throttle(mail.max_per_contact, mail.throttle_window) if mail.max_per_contact
        else None,
        sms=Throttle(sms.max_per_contact, sms.throttle_window) if sms.max_per_contact
        else None)


def open_store(config: Config) -> StateStore:
    """The store `[pager] state` names: PostgreSQL for a postgresql:// URL, else SQLite."""
    state = config.pager.state
    try:
        if isinstance(state, PostgresState):
            return PostgresStore(state.url)
        return SqliteStore(state)
    except StoreError as error:  # their messages never carry a password
        raise StartupRefused(str(error)) from error


def console_state(config: Config) -> PgConsoleState | None:
    """In a cluster, the console's shared state (its tables come with the store's schema)."""
    state = config.pager.state
    if not isinstance(state, PostgresState):
        return None
    try:
        return PgConsoleState(state.url)
    except StoreError as error:
        raise StartupRefused(str(error)) from error


def send_ledger(config: Config) -> PgSendLedger | None:
    """In a cluster, each contact's throttle budget is counted in PostgreSQL, over every
    node (its table comes with the store's schema)."""
    state = config.pager.state
    if not isinstance(state, PostgresState):
        return None
    try:
        return PgSendLedger(state.url)
    except StoreError as error:
        raise StartupRefused(str(error)) from error


def cluster_node(config: Config, store: StateStore, oncall: OnCall) -> Node | None:
    """With a PostgreSQL state, this daemon is a node of a cluster: its lease keeper fences
    the store's commits, and its forwarder carries commands to the other nodes."""
    state = config.pager.state
    if not isinstance(state, PostgresState):
        return None
    assert isinstance(store, PostgresStore)
    node_id = config.cluster.node_id(config.server.port)
    try:
        keeper = LeaseKeeper(state.url, node=node_id,
                             ttl=config.cluster.lease_ttl.total_seconds(),
                             config_hash=config_hash(config))
    except StoreError as error:
        raise StartupRefused(str(error)) from error
    try:
        forwarder = PgForwarder(state.url, node=node_id, timeout=FORWARD_TIMEOUT)
    except StoreError as error:
        keeper.stop()
        raise StartupRefused(str(error)) from error
    store.set_fence(keeper.fence, idle_timeout=config.cluster.lease_ttl.total_seconds() / 3)
    # A graceful hand-over (a node joined, or this one stops) must end well before the
    # leases, which are not renewed meanwhile, would lapse: ttl - ttl/4 at the latest.
    return Node(node_id, keeper, forwarder,
                hand_over_timeout=min(10.0, config.cluster.lease_ttl.total_seconds() * 0.4),
                refresh=lambda: oncall.refresh(datetime.now(UTC)))


def listen_socket(server: ServerConfig) -> socket.socket:
    """Bind and listen now, before recovery, so a port in use costs no resent page."""
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    try:
        sock = socket.create_server((server.host, server.port), family=family, backlog=2048)
    except OSError as error:
        reason = ("the address is already in use" if error.errno == errno.EADDRINUSE
                  else error.strerror or str(error))
        raise StartupRefused(f"cannot listen on {server.host}:{server.port}: {reason}"
                             ) from error
    # asyncio sets TCP_NODELAY only on sockets created with IPPROTO_TCP; create_server's
    # protocol 0 would leave every small answer waiting on Nagle and delayed ACKs (40 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.set_inheritable(True)
    return sock


def console_stores(shared: PgConsoleState | None) -> dict[str, Any]:
    """In a cluster, the console's sessions, failed logins and login-form key live in
    PostgreSQL, so that any node serves any request (reading the key is I/O: before the
    pager starts)."""
    if shared is None:
        return {}
    try:
        return {"sessions": shared.sessions(), "limiter": shared.limiter(),
                "login_key": shared.login_key()}
    except StoreError as error:
        raise StartupRefused(str(error)) from error


def console_app(pager: Pager, config: Config, policies: InMemoryPolicyRepository,
                reloader: Reloader, stores: dict[str, Any]) -> Starlette:
    """The web console, over what is in force: the policies and users of the last reload."""
    public_url = config.server.public_url or ""
    return create_console(pager, service_ids=policies.service_ids, policy=policies.get,
                          users=lambda: reloader.config.users,
                          ack_timeout=config.pager.ack_timeout,
                          secure_cookies=public_url.startswith("https://"),
                          trusted_proxies=config.server.trusted_proxies, **stores)


def start_pager(config: Config, *, policies: InMemoryPolicyRepository, store: StateStore,
                timer: ThreadedTimer, mail: MailSender, sms: SmsSender, oncall: OnCall,
                node: Node | None, ledger: PgSendLedger | None) -> Pager:
    """The engine, as the config says; in a cluster it owns nothing until the node joins."""
    return Pager.start(
        policies=policies, mail=mail, sms=sms, timer=timer,
        ack_timeout=config.pager.ack_timeout, store=store,
        passivate_after=config.pager.passivate_after,
        max_live_services=config.pager.max_live_services,
        retry=RetryPolicy(attempts=config.pager.delivery_attempts,
                          backoff=config.pager.retry_backoff.total_seconds()),
        page_format=page_format(config),
        keep_timeline=config.pager.keep_timeline,
        # Requests all arrive on the event loop's thread: per-thread backpressure would
        # block the loop. uvicorn's limit_concurrency bounds the load instead (503 past it).
        max_in_flight=0,
        mail_concurrency=config.mail.max_concurrency, sms_concurrency=config.sms.max_concurrency,
        resolver=oncall.resolve,
        throttle=throttling(config),
        ownership=node.leases if node is not None else None,
        forwarder=node.forwarding if node is not None else None,
        ledger=ledger,
    )


def shut_down(*, node: Node | None, pager: Pager, senders: tuple[object, ...],
              timer: ThreadedTimer, closing: tuple[PgConsoleState | PgSendLedger | None, ...],
              store: StateStore) -> None:
    """After uvicorn stopped: hand the shards over (in a cluster), then stop the pager, close
    the senders, the timer, the cluster's other connections (`closing`) and the store."""
    if node is not None:  # hand the shards over before the pager stops
        node.leave()
    pager.stop(timeout=5)
    for sender in senders:  # QUIT pooled SMTP connections, close HTTP ones
        close = getattr(sender, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):  # a send hung past the stop may race it
                close()
    timer.close()
    for opened in closing:
        if opened is not None:
            opened.close()
    store.close()


def run(config: Config) -> int:
    """Serve until SIGTERM or SIGINT; return the process exit code.

    Raises StartupRefused (before anything is sent) when the state or the
    port cannot be had.
    """
    store = open_store(config)
    shared: PgConsoleState | None = None
    ledger: PgSendLedger | None = None
    try:
        sock = listen_socket(config.server)
        oncall = OnCall(config.users, config.rotations, store)
        shared = console_state(config)
        stores = console_stores(shared)
        ledger = send_ledger(config)
        node = cluster_node(config, store, oncall)
    except StartupRefused:
        for opened in (shared, ledger):
            if opened is not None:
                opened.close()
        store.close()
        raise
    timer = ThreadedTimer()
    policies = InMemoryPolicyRepository(config.services)
    mail, sms = mail_sender(config), sms_sender(config)
    pager = start_pager(config, policies=policies, store=store, timer=timer, mail=mail,
                        sms=sms, oncall=oncall, node=node, ledger=ledger)
    server = None
    # From here on, whatever happens, the node hands its shards over and everything
    # stops: a daemon that refuses to serve must not go on paging without its API.
    try:
        if node is not None:
            try:
                node.join(pager)
            except StoreError as error:  # PostgreSQL went away since the store opened
                raise StartupRefused(str(error)) from error
        reloader = Reloader(config, policies, pager, oncall, node=node)
        metrics = Metrics(pager, lambda: (timer.last_lag, timer.max_lag),
                          cluster=node.figures if node is not None else None)
        app = create_app(pager, config, metrics, services=policies.service_ids,
                         oncall=oncall, extra_routes=reply_routes(config, pager, oncall),
                         console=console_app(pager, config, policies, reloader, stores),
                         node=node)
        server = build_server(app, config=config.server, graceful_shutdown=GRACEFUL_SECONDS)
        for warning in config.warnings:
            log.warning("config_warning", warning=warning)
        log.info("daemon_listening", host=config.server.host, port=config.server.port,
                 services=len(config.services), state=str(config.pager.state),
                 mail=config.mail.kind, sms=config.sms.kind,
                 node=node.node_id if node is not None else None)
        # uvicorn handles SIGTERM/SIGINT while serving, then raises the signal again for
        # the handler that was there before: make that one a no-op, so the shutdown below
        # runs and the process exits 0.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda number, frame: None)
        signal.signal(signal.SIGHUP, lambda number, frame: reloader.request())
        server.run(sockets=[sock])
    finally:
        log.info("daemon_stopping")
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        shut_down(node=node, pager=pager, senders=(mail, sms), timer=timer,
                  closing=(shared, ledger), store=store)
        sock.close()
        log.info("daemon_stopped")
    return 0 if server.started else 1


def reply_routes(config: Config, pager: Pager, oncall: OnCall) -> list[Route]:
    """Signed links and SMS replies; `by` names the user a contact belongs to, else the
    masked contact."""

    def who(channel: str, contact: Contact) -> str:
        owner = oncall.owner(contact.uri)
        return f"{channel}:{owner}" if owner else f"{channel}:{contact.masked}"

    return replies.routes(pager, links=links(config), public_url=config.server.public_url,
                          twilio_token=config.sms.auth_token if config.replies else None,
                          who=who)


class Reloader:
    """SIGHUP: read the config again and swap in its services, policies, users and rotations.

    An invalid file is refused whole: every problem is logged and the running
    config stays. Open incidents keep the policy snapshot they opened with. A
    service removed while its incident is open stays until that incident is
    resolved (and the config reloaded again), so no page is lost by a reload.
    `[server] listen` and `[pager] state`, and the other sections, need a
    restart: a change to them is logged and not applied.
    """

    def __init__(self, config: Config, policies: InMemoryPolicyRepository, pager: Pager,
                 oncall: OnCall | None = None, node: Node | None = None) -> None:
        self._config = config
        self._policies = policies
        self._pager = pager
        self._oncall = oncall
        self._node = node
        self._lock = threading.Lock()

    @property
    def config(self) -> Config:
        """The config in force: the settings read at start, the last reload's services
        and users."""
        return self._config

    def request(self) -> None:
        """From the signal handler: reload on a thread of its own, never in the handler."""
        threading.Thread(target=self.reload, name="pager-reload", daemon=True).start()

    def reload(self) -> bool:
        """Reload now; True if the new services are in force."""
        with self._lock:
            try:
                new = load_config(self._config.source)
            except ConfigError as error:
                for problem in error.problems:
                    log.error("config_reload_refused", problem=problem)
                return False
            ignored = [name for name, old, now in (
                ("[server]", self._config.server, new.server),
                # [pager] ack_expiry is a default of the services' policies: it is reloaded.
                ("[pager]", replace(self._config.pager, ack_expiry=None),
                 replace(new.pager, ack_expiry=None)),
                ("[mail]", self._config.mail, new.mail),
                ("[sms]", self._config.sms, new.sms),
                ("[alertmanager]", self._config.alertmanager, new.alertmanager),
            ) if old != now]
            if ignored:
                log.warning("config_reload_needs_restart", sections=ignored,
                            hint="listen, state, gateways and other settings change only "
                                 "with a restart; services and policies were reloaded")
            kept = self._still_open(self._config.services, new.services)
            self._policies.replace([*new.services, *kept])
            old_ids = {p.service_id for p in self._config.services}
            new_ids = {p.service_id for p in new.services}
            # The running settings stay; only the services, the people and rotations change.
            if self._oncall is not None:
                self._oncall.replace(new.users, new.rotations)
            self._config = replace(self._config, services=(*new.services, *kept),
                                   users=new.users, rotations=new.rotations)
            if self._node is not None:  # the other nodes compare it with theirs
                self._node.leases.set_config_hash(config_hash(self._config))
            # Logged once all of it is in force: whoever reads this sees the new tables.
            log.info("config_reloaded", services=len(new_ids), users=len(new.users),
                     added=sorted(new_ids - old_ids),
                     removed=sorted(old_ids - new_ids - {p.service_id for p in kept}),
                     kept_until_resolved=[p.service_id for p in kept])
            return True

    def _still_open(self, old: tuple[EscalationPolicy, ...], new: tuple[EscalationPolicy, ...]
                    ) -> list[EscalationPolicy]:
        """Removed services whose incident is still open: they stay for now."""
        new_ids = {p.service_id for p in new}
        kept = []
        for policy in old:
            if policy.service_id in new_ids:
                continue
            try:
                unhealthy = self._pager.status(policy.service_id).health is Health.UNHEALTHY
            except Exception:
                unhealthy = True  # cannot tell: keep it rather than lose its incident
            if unhealthy:
                kept.append(policy)
        return kept
