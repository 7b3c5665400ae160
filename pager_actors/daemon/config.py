"""The daemon's TOML config: parsed with stdlib tomllib, checked completely before anything starts.

Every problem is reported with its location, one line each; `load_config`
raises ConfigError carrying all of them. Secrets may come from the
environment instead of the file: PAGER_SERVER_TOKEN, PAGER_MAIL_USERNAME,
PAGER_MAIL_PASSWORD, PAGER_SMS_ACCOUNT_SID, PAGER_SMS_AUTH_TOKEN, and so may
PAGER_SMS_FROM (the environment wins). So may PAGER_STATE, which replaces
`[pager] state` (a `postgresql://` URL carries a password: the environment keeps
it out of the file). A value from the environment is checked exactly as one
from the file, and no problem line ever shows a secret's value; a state URL is
only ever shown masked (`mask_url`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import ssl
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pager_actors.domain import (
    Contact,
    EmailTarget,
    EscalationPolicy,
    Level,
    RotationTarget,
    SmsTarget,
    Target,
    UserTarget,
    check_service_id,
    parse_contact,
    parse_target,
)
from pager_actors.domain.links import MIN_SECRET_BYTES
from pager_actors.domain.model import MIN_HEARTBEAT
from pager_actors.domain.people import User, check_user_id, check_user_name
from pager_actors.oncall import Rotation

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ApiToken:
    """A named API token and what it may do: `ingest` (alerts, webhooks, heartbeats),
    `operate` (ack, resolve, maintenance), `read` (GETs)."""

    name: str
    token: str = field(repr=False)
    scopes: frozenset[str]


SCOPES = ("ingest", "operate", "read")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 1 << 20
    # Where people reach the daemon: with it, mails carry signed links and SMS replies work.
    public_url: str | None = None
    secret: str | None = field(default=None, repr=False)
    previous_secret: str | None = field(default=None, repr=False)
    tokens: tuple[ApiToken, ...] = ()
    # A request not received completely (head and body) this long after its first byte
    # gets a 408 and its connection is closed: half-sent requests hold nothing for long.
    request_timeout: timedelta = timedelta(seconds=10)
    # Proxies whose X-Forwarded-For names the client (the console's login limits).
    trusted_proxies: tuple[IPNetwork, ...] = ()


_PASSWORD_PARAMETER = re.compile(r"(?i)([?&]password=)[^&]*")


def mask_url(url: str) -> str:
    """`postgresql://u:pw@h/db?password=pw` -> `postgresql://u:****@h/db?password=****`.

    Everything between the user name and the last `@` is taken for the password (so a
    password holding `@`, `/` or `:` is hidden whole)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = f"{user}{':****' if colon else ''}@{rest[at + 1:]}"
    return f"{scheme}://{_PASSWORD_PARAMETER.sub(lambda m: m[1] + '****', rest)}"


@dataclass(frozen=True)
class PostgresState:
    """`[pager] state` as a PostgreSQL URL (`postgresql://` or `postgres://`): the store
    gets `url`; str() and repr() show it masked."""

    url: str

    def __str__(self) -> str:
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"PostgresState({mask_url(self.url)!r})"

    @property
    def holds_password(self) -> bool:
        return mask_url(self.url) != self.url


POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class PagerConfig:
    ack_timeout: timedelta = timedelta(minutes=15)
    state: Path | PostgresState = Path("pager.db")
    passivate_after: timedelta | None = timedelta(minutes=5)
    max_live_services: int = 2000
    delivery_attempts: int = 5
    retry_backoff: timedelta = timedelta(seconds=1)
    ack_expiry: timedelta | None = None
    keep_timeline: timedelta = timedelta(days=90)
    status_updates: bool = False
    fallback: tuple[Contact, ...] = ()


@dataclass(frozen=True)
class MailConfig:
    kind: str = "log"
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "pager@localhost"
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    timeout: timedelta = timedelta(seconds=10)
    max_concurrency: int = 8
    max_per_contact: int = 10  # mails to one address per throttle_window; 0: no throttle
    throttle_window: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class SmsConfig:
    kind: str = "log"
    base_url: str = "https://api.twilio.com"
    account_sid: str | None = None
    auth_token: str | None = None
    from_number: str | None = None
    timeout: timedelta = timedelta(seconds=10)
    max_message_chars: int = 300
    max_concurrency: int = 8
    max_per_contact: int = 1  # SMS to one number per throttle_window (GoAlert's); 0: none
    throttle_window: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class AlertmanagerConfig:
    service_label: str = "service"


MIN_LEASE_TTL = timedelta(seconds=3)


@dataclass(frozen=True)
class ClusterConfig:
    """[cluster]: used when `[pager] state` is PostgreSQL, where every daemon is a node.

    `node` names this daemon among the others (default: the host name and the
    port, e.g. `pager-1:8080`); `lease_ttl` is how long a shard lease lasts
    without renewal: a dead node's services move after at most this long.
    """

    node: str | None = None
    lease_ttl: timedelta = timedelta(seconds=10)

    def node_id(self, port: int) -> str:
        return self.node or f"{socket.gethostname()}:{port}"


@dataclass(frozen=True)
class Config:
    source: Path
    server: ServerConfig = field(default_factory=ServerConfig)
    pager: PagerConfig = field(default_factory=PagerConfig)
    mail: MailConfig = field(default_factory=MailConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    alertmanager: AlertmanagerConfig = field(default_factory=AlertmanagerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    services: tuple[EscalationPolicy, ...] = ()
    users: tuple[User, ...] = ()
    rotations: tuple[Rotation, ...] = ()
    warnings: tuple[str, ...] = ()  # said by check-config and at start, not refused

    @property
    def replies(self) -> bool:
        """Whether SMS replies can arrive: a public URL and a Twilio gateway."""
        return self.server.public_url is not None and self.sms.kind == "twilio"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """"15m", "2s", "1h30m", "500ms", "1w" -> timedelta. Raises ValueError."""
    compact = text.replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"not a duration (try \"15m\", \"2s\" or \"1h\"): {text!r}")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


class _Checker:
    """Walks the TOML document, collecting every problem instead of stopping at the first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []
        self.invalid: set[tuple[str, str]] = set()  # given, but refused: not also "missing"

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.path}: {where}: {message}")

    def tables(self, entries: Any, section: str, keys: tuple[str, ...], kind: str,
               check_id: Callable[[Any], str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """The [[section]] entries as (where, id, table): each a table, with known keys and
        a valid id not given before; any other entry is a problem, and skipped."""
        if not isinstance(entries, list):
            self.problem(f"[[{section}]]", f"must be an array of tables ([[{section}]])")
            return
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            where = f"[[{section}]] #{i + 1}"
            if not isinstance(entry, dict):
                self.problem(where, "must be a table")
                continue
            for key in entry:
                if key not in keys:
                    self.problem(f"{where} {key}", f"unknown key (known: {', '.join(keys)})")
            try:
                item_id = check_id(entry.get("id"))
            except (TypeError, ValueError) as error:
                self.problem(f"{where} id", str(error))
                continue
            where = f"[[{section}]] #{i + 1} (id {item_id!r})"
            if item_id in seen:
                self.problem(f"{where} id", f"duplicate {kind} id, first defined in "
                                            f"[[{section}]] #{seen[item_id] + 1}")
                continue
            seen[item_id] = i
            yield where, item_id, entry

    def section(self, doc: Mapping[str, Any], name: str, fields: dict[str, Callable[[Any], Any]]
                ) -> dict[str, Any]:
        """Check a [name] table against `fields` (key -> converter); return converted values."""
        table = doc.get(name, {})
        if not isinstance(table, dict):
            self.problem(f"[{name}]", "must be a table")
            return {}
        values = {}
        for key, value in table.items():
            if key not in fields:
                self.problem(f"[{name}] {key}", f"unknown key (known: {', '.join(fields)})")
                continue
            try:
                values[key] = fields[key](value)
            except (TypeError, ValueError) as error:
                self.invalid.add((name, key))
                self.problem(f"[{name}] {key}", str(error))
        return values


def _of(kind: type, label: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"expected {label}, got {value!r}")
        return value
    return convert


def _duration(value: Any) -> timedelta:
    if not isinstance(value, str):
        raise TypeError(f"expected a duration string such as \"15m\", got {value!r}")
    return parse_duration(value)


def _positive_duration(value: Any) -> timedelta:
    duration = _duration(value)
    if duration <= timedelta(0):
        raise ValueError(f"must be longer than zero, got {value!r}")
    return duration


def _port(value: Any) -> int:
    number = _of(int, "a port number")(value)
    if not 0 < number < 65536:
        raise ValueError(f"not a port number: {value!r}")
    return int(number)


def _listen(value: Any) -> tuple[str, int]:
    text = _of(str, 'a "host:port" string')(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f'expected "host:port", got {value!r}')
    return host.strip("[]"), _port(int(port))


def _choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(map(repr, options))}, got {value!r}")
        return str(value)
    return convert


def _positive_int(value: Any) -> int:
    number = _of(int, "an integer")(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {value!r}")
    return int(number)


MAX_CONCURRENCY = 256  # sends in flight per channel: a thread and a connection each


_STR, _BOOL = _of(str, "a string"), _of(bool, "true or false")


def _secret(value: Any) -> str:
    """A secret: a non-empty string. Its value never appears in a problem line."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string (a {type(value).__name__} was given; "
                        "its value is not shown)")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _token(value: Any) -> str:
    """A bearer token: printable ASCII without spaces, as HTTP headers carry it."""
    text = _secret(value)
    if not all("!" <= char <= "~" for char in text):
        raise ValueError("must be printable ASCII without spaces (its value is not shown)")
    return text


def _link_secret(value: Any) -> str:
    """The key that signs links: at least 32 bytes, never shown."""
    text = _secret(value)
    if len(text.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes (its value is not shown; "
                         "`openssl rand -base64 48` makes one)")
    return text


def _tokens_placeholder(value: Any) -> Any:
    """[[server.tokens]] is checked with the environment, by `_api_tokens`."""
    return value


def _between(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        number = _of(int, "an integer")(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {value!r}")
        return int(number)
    return convert


def _nonempty(value: Any) -> str:
    text = _STR(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return str(text)


def _http_url(value: Any) -> str:
    url = _STR(value)
    scheme, sep, rest = url.partition("://")
    if scheme not in ("http", "https") or not sep or not rest.strip("/"):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return str(url)


def _email(value: Any) -> str:
    return EmailTarget(_STR(value)).address


def _phone(value: Any) -> str:
    return SmsTarget(_STR(value)).number


def _readable_file(value: Any) -> Path:
    path = Path(_STR(value))
    if not path.is_file():
        raise ValueError(f"no such file: {value!r}")
    return path

def _state(value: Any) -> str | PostgresState:
    """[pager] state: a file (a path, made absolute by `_assemble`) or a PostgreSQL URL,
    whose host and port are checked here (the rest, when the daemon connects)."""
    text = _STR(value)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return str(text)
    shown = mask_url(text)
    if scheme not in POSTGRES_SCHEMES:
        raise ValueError(f"expected a file path or a postgresql:// URL, got {shown!r}")
    hosts = re.split(r"[/?]", rest[rest.rfind("@") + 1:], maxsplit=1)[0]
    for host in filter(None, hosts.split(",")):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, number = port.rpartition(":") if ":" in port else ("", "", "")
        if colon and number and not (number.isdigit() and 0 < int(number) < 65536):
            raise ValueError(f"not a port number: {number!r} in {shown!r}")
    return PostgresState(text)


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    """[server] trusted_proxies: a list of IP addresses or CIDR networks."""
    if not isinstance(value, list):
        raise TypeError(f'expected a list of addresses or networks such as ["10.0.0.1", '
                        f'"192.168.0.0/24"], got {value!r}')
    networks = []
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"expected an address or network string, got {item!r}")
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as error:
            raise ValueError(f"not an IP address or network: {item!r} ({error})") from None
    return tuple(networks)


def _fallback(value: Any) -> tuple[Contact, ...]:
    """[pager] fallback: contacts paged when a level reaches nobody."""
    if not isinstance(value, list) or not value:
        raise TypeError('expected a non-empty list of "mailto:…"/"sms:…" contacts')
    return tuple(parse_contact(uri if isinstance(uri, str) else repr(uri)) for uri in value)


def _lease_ttl(value: Any) -> timedelta:
    ttl = _positive_duration(value)
    if ttl < MIN_LEASE_TTL:
        raise ValueError(f"must be at least 3s (a node renews its leases every third of it), "
                         f"got {value!r}")
    return ttl


_SECTIONS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "server": {"listen": _listen, "token": _token, "max_body_bytes": _positive_int,
               "request_timeout": _positive_duration, "public_url": _http_url,
               "secret": _link_secret, "previous_secret": _link_secret,
               "tokens": _tokens_placeholder},
    "pager": {"ack_timeout": _positive_duration, "state": _state,
              "passivate_after": _positive_duration, "max_live_services": _positive_int,
              "delivery_attempts": _positive_int, "retry_backoff": _positive_duration,
              "ack_expiry": _positive_duration, "keep_timeline": _positive_duration,
              "status_updates": _BOOL, "fallback": _fallback},
    "mail": {"kind": _choice("smtp", "log"), "host": _nonempty, "port": _port,
             "sender": _email, "starttls": _BOOL, "username": _secret,
             "password": _secret, "ca_file": _readable_file, "timeout": _positive_duration,
             "max_concurrency": _between(1, MAX_CONCURRENCY)},
    "sms": {"kind": _choice("twilio", "log"), "base_url": _http_url,
            "account_sid": _secret, "auth_token": _secret, "from": _phone,
            "timeout": _positive_duration, "max_message_chars": _between(20, 1000),
            "max_concurrency": _between(1, MAX_CONCURRENCY)},
    "alertmanager": {"service_label": _nonempty},
    "cluster": {"node": _nonempty, "lease_ttl": _lease_ttl},
}

_SECTIONS["server"]["trusted_proxies"] = _networks

# Per-contact throttles, the same two keys in [mail] and [sms]: max_per_contact messages to
# one contact per throttle_window (0 turns the channel's throttle off).
MAX_PER_CONTACT = 1000
MAX_THROTTLE_WINDOW = timedelta(days=1)


def _throttle_window(value: Any) -> timedelta:
    window = _positive_duration(value)
    if window > MAX_THROTTLE_WINDOW:
        raise ValueError(f"must be at most 1d, got {value!r}")
    return window


def _add_throttle_keys(sections: dict[str, dict[str, Callable[[Any], Any]]]) -> None:
    for name in ("mail", "sms"):
        sections[name]["max_per_contact"] = _between(0, MAX_PER_CONTACT)
        sections[name]["throttle_window"] = _throttle_window


_add_throttle_keys(_SECTIONS)

# Keys the environment may set, PAGER_<SECTION>_<KEY>; all but `from` are secrets.
_FROM_ENVIRONMENT = (("server", "token"), ("server", "secret"), ("server", "previous_secret"),
                     ("mail", "username"), ("mail", "password"), ("sms", "account_sid"),
                     ("sms", "auth_token"), ("sms", "from"))


def config_hash(config: Config) -> str:
    """What the nodes of a cluster must agree on, hashed: the services and their policies,
    the people and rotations, and the settings that decide who is paged, when and how
    often. Not the node's own: its name, address, state URL, gateways or secrets."""
    pager = replace(config.pager, state=Path())
    mail, sms = config.mail, config.sms
    agreed = (config.services, config.users, config.rotations, pager, config.alertmanager,
              mail.max_per_contact, mail.throttle_window, sms.max_per_contact,
              sms.throttle_window, sms.max_message_chars, config.server.public_url,
              config.cluster.lease_ttl)
    return hashlib.sha256(repr(agreed).encode("utf-8")).hexdigest()[:16]


def listen_address(path: str | Path) -> tuple[str, int]:
    """Only `[server] listen` of the file (for the health check, which needs no secrets)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError([f"{path}: cannot read: {error}"]) from error
    server = doc.get("server", {})
    if not isinstance(server, dict) or "listen" not in server:
        return ServerConfig.host, ServerConfig.port
    try:
        return _listen(server["listen"])
    except (TypeError, ValueError) as error:
        raise ConfigError([f"{path}: [server] listen: {error}"]) from error


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and check the whole config; raise ConfigError listing every problem."""
    path = Path(path)
    environ = os.environ if environ is None else environ
    check = _Checker(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: invalid TOML: {error}"]) from error
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not UTF-8 text: {error}"]) from error

    for name in doc:
        if name not in (*_SECTIONS, "services", "users", "rotations"):
            check.problem(f"[{name}]", f"unknown section (known: {', '.join(_SECTIONS)}, "
                                       "[[services]], [[users]], [[rotations]])")
    for section, key in _FROM_ENVIRONMENT:  # checked below exactly as the file's values
        value = environ.get(f"PAGER_{section.upper()}_{key.upper()}")
        if value and isinstance(doc.setdefault(section, {}), dict):
            doc[section][key] = value
    state_from_environment = bool(environ.get("PAGER_STATE"))
    if state_from_environment and isinstance(doc.setdefault("pager", {}), dict):
        doc["pager"]["state"] = environ["PAGER_STATE"]
    raw = {name: check.section(doc, name, fields) for name, fields in _SECTIONS.items()}
    raw["server"]["tokens"] = _api_tokens(raw["server"].get("tokens", []), environ, check)
    # A refused [pager] ack_expiry is reported once, there; the services then default to none.
    services = _services(doc.get("services", []), check, raw["pager"].get("ack_expiry"))
    users = _users(doc.get("users", []), check)
    declared: set[str] = set()
    rotations = _rotations(doc.get("rotations", []), check, declared)
    _check_people(services, users, rotations, declared, check)
    config = _assemble(path, raw, services, check)
    if check.problems:
        raise ConfigError(check.problems)
    assert config is not None
    state = config.pager.state
    if isinstance(state, PostgresState) and state.holds_password and not state_from_environment:
        config = replace(config, warnings=(*config.warnings, (
            f"{path}: warning: [pager] state holds a password ({state}): set PAGER_STATE "
            "instead, so that it stays out of the file")))
    if "cluster" in doc and not isinstance(state, PostgresState):
        config = replace(config, warnings=(*config.warnings, (
            f"{path}: warning: [cluster] is ignored: a cluster shares a PostgreSQL state "
            "([pager] state = \"postgresql://…\" or PAGER_STATE), and this one is a file")))
    if not config.pager.fallback:
        config = replace(config, warnings=(*config.warnings, (
            f"{path}: warning: no [pager] fallback: a level that reaches nobody (no one on "
            "call) pages nobody, and an exhausted escalation tells no one")))
    return replace(config, users=users, rotations=rotations)


_ROTATION_KEYS = ("id", "time_zone", "shift", "start", "users")


def _rotation_id(value: Any) -> str:
    return RotationTarget(value).id


def _rotations(entries: Any, check: _Checker, declared: set[str]) -> tuple[Rotation, ...]:
    """[[rotations]]: id, time_zone (IANA), shift (at least 1h), start (local wall time of
    the first handoff, no offset), users (ids, in turn order). `declared` gets every id
    given, valid or not, so a refused rotation is not also reported as missing."""
    found: list[Rotation] = []
    for where, rotation_id, entry in check.tables(entries, "rotations", _ROTATION_KEYS,
                                                  "rotation", _rotation_id):
        declared.add(rotation_id)
        try:
            found.append(_rotation(rotation_id, entry))
        except (TypeError, ValueError, ZoneInfoNotFoundError) as error:
            what = "time_zone: unknown zone" if isinstance(error, ZoneInfoNotFoundError) \
                else str(error)
            check.problem(where, what)
    return tuple(found)


def _rotation(rotation_id: str, entry: dict[str, Any]) -> Rotation:
    zone = entry.get("time_zone")
    if not isinstance(zone, str) or not zone:
        raise ValueError("time_zone: an IANA zone such as \"Europe/Paris\" is required")
    try:
        ZoneInfo(zone)
    except (ValueError, ZoneInfoNotFoundError) as error:
        raise ValueError(f"time_zone: unknown zone {zone!r}") from error
    shift = _duration(entry.get("shift"))
    start = entry.get("start")
    if not isinstance(start, str):
        raise ValueError('start: the local wall time of the first handoff, such as '
                         '"2026-11-30T09:00"')
    try:
        first = datetime.fromisoformat(start)
    except ValueError as error:
        raise ValueError(f"start: not a local time: {start!r}") from error
    if first.tzinfo is not None:
        raise ValueError("start: a local wall time in time_zone, without an offset")
    users = entry.get("users")
    if not isinstance(users, list) or not users or not all(isinstance(u, str) for u in users):
        raise ValueError("users: a non-empty list of user ids")
    if shift < timedelta(hours=1):
        raise ValueError(f"shift: at least 1h, got {entry.get('shift')!r}")
    return Rotation(rotation_id, zone, shift, first, tuple(users))


def _check_people(services: tuple[EscalationPolicy, ...], users: tuple[User, ...],
                  rotations: tuple[Rotation, ...], declared: set[str],
                  check: _Checker) -> None:
    """Every user a rotation or a level names exists and can be reached; every rotation a
    level names exists. (A console-only user needs no contacts.)"""
    contacts = {user.id: user.contacts for user in users}
    for rotation in rotations:
        for user_id in rotation.users:
            _reachable(user_id, contacts, f"[[rotations]] (id {rotation.id!r}) users", check)
    for policy in services:
        for n, level in enumerate(policy.levels):
            where = f"[[services]] (id {policy.service_id!r}) levels[{n}]"
            for target in level.targets:
                if isinstance(target, UserTarget):
                    _reachable(target.id, contacts, where, check)
                elif isinstance(target, RotationTarget) and target.id not in declared:
                    check.problem(where, f"no rotation {target.id!r} ([[rotations]])")


def _reachable(user_id: str, contacts: dict[str, tuple[Contact, ...]], where: str,
               check: _Checker) -> None:
    if user_id not in contacts:
        check.problem(where, f"no user {user_id!r} ([[users]])")
    elif not contacts[user_id]:
        check.problem(where, f"user {user_id!r} has no contacts: nobody could be paged")



def _api_tokens(entries: Any, environ: Mapping[str, str], check: _Checker
                ) -> tuple[ApiToken, ...]:
    """[[server.tokens]]: name, token or token_env (an environment variable), scopes."""
    if not isinstance(entries, list):
        check.problem("[[server.tokens]]", "must be an array of tables ([[server.tokens]])")
        return ()
    tokens: list[ApiToken] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"[[server.tokens]] #{i + 1}"
        if not isinstance(entry, dict):
            check.problem(where, "must be a table")
            continue
        for key in entry:
            if key not in ("name", "token", "token_env", "scopes"):
                check.problem(f"{where} {key}", "unknown key (known: name, token, token_env, "
                                                "scopes)")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip() or name in names:
            check.problem(f"{where} name", "a unique, non-empty name is required")
            continue
        names.add(name)
        where = f"[[server.tokens]] #{i + 1} ({name!r})"
        scopes = entry.get("scopes")
        if not isinstance(scopes, list) or not scopes or not set(scopes) <= set(SCOPES):
            check.problem(f"{where} scopes", f"a non-empty list of {', '.join(SCOPES)}")
            continue
        if ("token" in entry) == ("token_env" in entry):
            check.problem(where, "give exactly one of token and token_env")
            continue
        value = entry.get("token")
        if "token_env" in entry:
            variable = entry["token_env"]
            value = environ.get(variable) if isinstance(variable, str) else None
            if not value:
                check.problem(f"{where} token_env", f"the environment has no {variable!r}")
                continue
        try:
            tokens.append(ApiToken(name, _token(value), frozenset(scopes)))
        except (TypeError, ValueError) as error:
            check.problem(f"{where} token", str(error))
    return tuple(tokens)


_SERVICE_KEYS = ("id", "levels", "repeat", "ack_expiry", "heartbeat")


def _services(entries: Any, check: _Checker, default_expiry: timedelta | None
              ) -> tuple[EscalationPolicy, ...]:
    policies: list[EscalationPolicy] = []
    for where, service_id, entry in check.tables(entries, "services", _SERVICE_KEYS,
                                                 "service", check_service_id):
        levels = _levels(entry.get("levels"), where, check)
        options = _service_options(entry, where, check, default_expiry)
        if levels and options is not None:
            policies.append(EscalationPolicy(service_id, levels, **options))
    return tuple(policies)


def _service_options(entry: dict[str, Any], where: str, check: _Checker,
                     default_expiry: timedelta | None) -> dict[str, Any] | None:
    """repeat (>= 0), ack_expiry (a duration, or "off" against [pager] ack_expiry),
    heartbeat (>= 10 s). None if any is wrong (each problem reported)."""
    options: dict[str, Any] = {"ack_expiry": default_expiry}
    ok = True
    try:
        if "repeat" in entry:
            repeat = _of(int, "a whole number")(entry["repeat"])
            if repeat < 0:
                raise ValueError(f"must be 0 or more, got {repeat}")
            options["repeat"] = repeat
    except (TypeError, ValueError) as error:
        check.problem(f"{where} repeat", str(error))
        ok = False
    try:
        if "ack_expiry" in entry:
            options["ack_expiry"] = None if entry["ack_expiry"] == "off" \
                else _positive_duration(entry["ack_expiry"])
    except (TypeError, ValueError) as error:
        check.problem(f"{where} ack_expiry", f"{error} (or \"off\")")
        ok = False
    try:
        if "heartbeat" in entry:
            heartbeat = _duration(entry["heartbeat"])
            if heartbeat < MIN_HEARTBEAT:
                raise ValueError(f"must be at least 10s, got {entry['heartbeat']!r}")
            options["heartbeat"] = heartbeat
    except (TypeError, ValueError) as error:
        check.problem(f"{where} heartbeat", str(error))
        ok = False
    return options if ok else None


def _levels(value: Any, where: str, check: _Checker) -> list[Level]:
    if not isinstance(value, list) or not value:
        check.problem(f"{where} levels", "expected a non-empty list of levels, each a list of "
                                         "\"mailto:…\"/\"sms:…\" targets")
        return []
    levels = []
    for n, targets in enumerate(value):
        if not isinstance(targets, list) or not targets:
            check.problem(f"{where} levels[{n}]", f"expected a non-empty list of targets, "
                                                  f"got {targets!r}")
            continue
        parsed: list[Target] = []
        for m, uri in enumerate(targets):
            try:
                parsed.append(parse_target(uri if isinstance(uri, str) else repr(uri)))
            except ValueError as error:
                check.problem(f"{where} levels[{n}][{m}]", f"malformed target: {error}")
        if len(parsed) == len(targets):
            levels.append(Level(parsed))
    return levels if len(levels) == len(value) else []


def _assemble(path: Path, raw: dict[str, dict[str, Any]], services: tuple[EscalationPolicy, ...],
              check: _Checker) -> Config | None:
    server, pager, mail, sms = raw["server"], raw["pager"], raw["mail"], raw["sms"]
    host, port = server.pop("listen", (ServerConfig.host, ServerConfig.port))
    # A relative state file lives next to the config, wherever the daemon is started from.
    state = pager.get("state", PagerConfig.state)
    pager["state"] = state if isinstance(state, PostgresState) else path.parent / Path(state)
    if "ca_file" in mail:
        try:
            ssl.create_default_context(cafile=str(mail["ca_file"]))
        except (ssl.SSLError, OSError) as error:
            check.problem("[mail] ca_file", f"not a usable CA certificate file: {error}")
    if "from" in sms:
        sms["from_number"] = sms.pop("from")
    _check_senders(mail, sms, check)
    if not services and not check.problems:
        check.problem("[[services]]", "no service defined: the pager would page nobody")
    warnings = _check_public(server, check)
    if check.problems:
        return None
    return Config(source=path, server=ServerConfig(host=host, port=port, **server),
                  pager=PagerConfig(**pager), mail=MailConfig(**mail), sms=SmsConfig(**sms),
                  alertmanager=AlertmanagerConfig(**raw["alertmanager"]),
                  cluster=ClusterConfig(**raw["cluster"]), services=services, warnings=warnings)


def _check_public(server: dict[str, Any], check: _Checker) -> tuple[str, ...]:
    """A daemon people reach (public_url) must sign its links and must not be open."""
    if "public_url" not in server:
        return (f"{check.path}: warning: no [server] public_url: mails carry no "
                "Acknowledge/Resolve links and SMS replies are off",)
    if "secret" not in server and ("server", "secret") not in check.invalid:
        check.problem("[server] secret", "required with public_url, to sign links (or set "
                                         "PAGER_SERVER_SECRET; at least 32 bytes)")
    if "token" not in server and not server.get("tokens"):
        check.problem("[server] token", "required with public_url: a daemon people reach "
                                        "must not leave its API open (or [[server.tokens]])")
    return ()


def _check_senders(mail: dict[str, Any], sms: dict[str, Any], check: _Checker) -> None:
    """Keys that become required once a real sender is chosen."""
    if mail.get("kind") == "smtp":
        for key in ("host", "sender"):
            if key not in mail and ("mail", key) not in check.invalid:
                check.problem(f"[mail] {key}", 'required when kind = "smtp"')
        given = {key for key in ("username", "password")
                 if key in mail or ("mail", key) in check.invalid}
        if len(given) == 1:
            check.problem("[mail] username", "username and password go together")
    if sms.get("kind") == "twilio":
        for key, shown in (("account_sid", "account_sid"), ("auth_token", "auth_token"),
                           ("from_number", "from")):
            if key not in sms and ("sms", shown) not in check.invalid:
                check.problem(f"[sms] {shown}", 'required when kind = "twilio" (or set '
                                                f"PAGER_SMS_{shown.upper()})")


_USER_KEYS = ("id", "name", "password_hash", "contacts")


def _users(entries: Any, check: _Checker) -> tuple[User, ...]:
    """[[users]]: people, with an optional password hash (the console) and contacts.
    A hash's value never appears in a problem line."""
    from pager_actors.console.passwords import check_password_hash  # noqa: PLC0415 - argon2

    users: list[User] = []
    for where, user_id, entry in check.tables(entries, "users", _USER_KEYS, "user",
                                              check_user_id):
        ok = True
        try:
            name = check_user_name(entry.get("name"))
        except ValueError as error:
            check.problem(f"{where} name", str(error))
            ok = False
        password_hash = None
        if "password_hash" in entry:
            try:
                password_hash = check_password_hash(entry["password_hash"])
            except (TypeError, ValueError) as error:
                check.problem(f"{where} password_hash", str(error))
                ok = False
        contacts = _contacts(entry.get("contacts", []), where, check)
        if ok and contacts is not None:
            users.append(User(user_id, name, password_hash, contacts))
    return tuple(users)


def _contacts(value: Any, where: str, check: _Checker) -> tuple[Contact, ...] | None:
    """A user's contacts: mail addresses and phone numbers; None if any is malformed."""
    if not isinstance(value, list):
        check.problem(f"{where} contacts", 'expected a list of "mailto:…"/"sms:…" contacts')
        return None
    parsed: list[Contact] = []
    for n, uri in enumerate(value):
        try:
            parsed.append(parse_contact(uri if isinstance(uri, str) else repr(uri)))
        except ValueError as error:
            check.problem(f"{where} contacts[{n}]", f"malformed contact: {error}")
    return tuple(dict.fromkeys(parsed)) if len(parsed) == len(value) else None
