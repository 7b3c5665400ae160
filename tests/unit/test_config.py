"""The TOML config: a good file loads; every mistake gets one precise line and exit code 2."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from pager_actors.cli import main
from pager_actors.daemon.config import ConfigError, load_config, parse_duration
from pager_actors.domain import EmailTarget, SmsTarget

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
[server]
listen = "127.0.0.1:9090"
token = "from-file"

[pager]
ack_timeout = "15m"
state = "state/pager.db"

[mail]
kind = "smtp"
host = "127.0.0.1"
port = 2525
sender = "pager@example.com"
starttls = true
username = "pager"
password = "pw"

[sms]
kind = "twilio"
base_url = "http://127.0.0.1:9999"
account_sid = "AC1"
auth_token = "tok"
from = "+15550000000"

[[services]]
id = "checkout"
levels = [
  ["mailto:oncall@example.com", "sms:+33600000001"],
  ["sms:+33600000002"],
]
"""


def write(tmp_path, text) -> Path:
    path = tmp_path / "pager.toml"
    path.write_text(text)
    return path


def problems(tmp_path, text, environ=None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ or {})
    return caught.value.problems


def test_good_config_loads_every_section(tmp_path):
    """Listen address, durations, senders and services come out typed."""
    config = load_config(write(tmp_path, GOOD), {})
    assert (config.server.host, config.server.port, config.server.token) == ("127.0.0.1", 9090,
                                                                             "from-file")
    assert config.pager.ack_timeout == timedelta(minutes=15)
    assert config.pager.state == tmp_path / "state" / "pager.db"
    assert config.mail.starttls and config.sms.from_number == "+15550000000"
    [policy] = config.services
    assert policy.levels[0].targets == (EmailTarget("oncall@example.com"),
                                        SmsTarget("+33600000001"))


def test_the_shipped_example_is_valid():
    """examples/pager.toml, the config of `make run`, passes check-config."""
    assert main(["check-config", str(ROOT / "examples" / "pager.toml")]) == 0


@pytest.mark.parametrize("text,duration", [
    ("15m", timedelta(minutes=15)), ("2s", timedelta(seconds=2)),
    ("1h30m", timedelta(minutes=90)), ("500ms", timedelta(milliseconds=500))])
def test_durations(text, duration):
    """Durations are strings with units."""
    assert parse_duration(text) == duration


@pytest.mark.parametrize("bad", ["15", "m", "15 minutes", "", "-1s"])
def test_bad_durations_are_refused(bad):
    """A number without a unit, or words, is refused."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(bad)


def test_bad_toml_is_one_line_with_its_position(tmp_path):
    """Broken TOML: one problem naming line and column."""
    [problem] = problems(tmp_path, "[server]\nlisten = \n")
    assert "invalid TOML" in problem and "line 2" in problem


def test_unknown_key_is_named_with_its_section(tmp_path):
    """A typo in a key is refused, with the known keys listed."""
    [problem] = problems(tmp_path, GOOD.replace('port = 2525', 'prot = 2525'))
    assert "[mail] prot: unknown key" in problem and "port" in problem


def test_malformed_target_points_at_its_level_and_position(tmp_path):
    """A bad target names the service, the level and the index."""
    [problem] = problems(tmp_path, GOOD.replace("sms:+33600000002", "sms:call-me"))
    assert "(id 'checkout') levels[1][0]: malformed target" in problem


def test_duplicate_service_id_is_refused(tmp_path):
    """Two services with one id: the second is refused, the first is named."""
    twice = GOOD + '\n[[services]]\nid = "checkout"\nlevels = [["sms:+331234"]]\n'
    [problem] = problems(tmp_path, twice)
    assert "duplicate service id" in problem and "#1" in problem


def test_every_problem_is_reported_at_once(tmp_path):
    """Several mistakes give several lines, not just the first."""
    found = problems(tmp_path, GOOD.replace('ack_timeout = "15m"', 'ack_timeout = "soon"')
                     .replace('kind = "twilio"', 'kind = "carrier-pigeon"')
                     .replace('listen = "127.0.0.1:9090"', 'listen = "nowhere"'))
    assert len(found) == 3


def test_twilio_needs_its_credentials_unless_the_environment_has_them(tmp_path):
    """auth_token may come from PAGER_SMS_AUTH_TOKEN instead of the file."""
    without = GOOD.replace('auth_token = "tok"\n', "")
    [problem] = problems(tmp_path, without)
    assert "[sms] auth_token: required" in problem and "PAGER_SMS_AUTH_TOKEN" in problem
    config = load_config(write(tmp_path, without), {"PAGER_SMS_AUTH_TOKEN": "from-env"})
    assert config.sms.auth_token == "from-env"


def test_environment_secret_wins_over_the_file(tmp_path):
    """PAGER_SERVER_TOKEN overrides [server] token."""
    config = load_config(write(tmp_path, GOOD), {"PAGER_SERVER_TOKEN": "from-env"})
    assert config.server.token == "from-env"


def test_check_config_exits_2_and_prints_each_problem(tmp_path, capsys):
    """The CLI prints one line per problem on stderr and exits 2."""
    path = write(tmp_path, GOOD.replace("sms:+33600000002", "fax:123") + "\n[extra]\n")
    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(str(path)) for line in lines)


def test_missing_file_is_a_clear_error(tmp_path):
    """A path that does not exist is reported, not a traceback."""
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2


@pytest.mark.parametrize("change,where", [
    (('token = "from-file"', 'token = ""'), "[server] token: must not be empty"),
    (('base_url = "http://127.0.0.1:9999"', 'base_url = "api.twilio.com"'),
     "[sms] base_url: expected an http:// or https:// URL"),
    (('sender = "pager@example.com"', 'sender = "pager"'), "[mail] sender: not an email"),
    (('from = "+15550000000"', 'from = "twilio"'), "[sms] from: not a phone number"),
    (('starttls = true', 'starttls = true\nca_file = "/nonexistent/ca.pem"'),
     "[mail] ca_file: no such file"),
])
def test_values_that_would_fail_at_run_time_are_refused_up_front(tmp_path, change, where):
    """An empty token, a URL without scheme, a bad sender or CA file: refused by check-config."""
    [problem] = problems(tmp_path, GOOD.replace(*change))
    assert where in problem


def test_a_file_that_is_not_a_ca_certificate_is_refused(tmp_path):
    """ca_file must load as a CA bundle, not just exist."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    [problem] = problems(tmp_path, GOOD.replace("starttls = true",
                                                f'starttls = true\nca_file = "{junk}"'))
    assert "[mail] ca_file: not a usable CA certificate file" in problem


def test_request_timeout_defaults_to_at_most_10_s_and_can_be_set(tmp_path):
    """Half-sent requests are closed within 15 s by default; [server] request_timeout moves it."""
    assert timedelta(0) < load_config(write(tmp_path, GOOD), {}).server.request_timeout \
        <= timedelta(seconds=10)
    tuned = GOOD.replace('token = "from-file"', 'token = "from-file"\nrequest_timeout = "3s"')
    assert load_config(write(tmp_path, tuned), {}).server.request_timeout == timedelta(seconds=3)


@pytest.mark.parametrize("bad", ['"0s"', '"soon"', "10"])
def test_a_request_timeout_that_is_not_a_positive_duration_is_refused(tmp_path, bad):
    """Zero would close every connection at once; a bare number has no unit."""
    found = problems(tmp_path, GOOD.replace('token = "from-file"',
                                            f'token = "from-file"\nrequest_timeout = {bad}'))
    assert len(found) == 1 and "[server] request_timeout" in found[0]


@pytest.mark.parametrize("token", ["has space", "tab\there", "naïve", "line\nbreak"])
def test_a_token_must_be_printable_ascii_without_spaces_from_file_or_environment(tmp_path,
                                                                                 token):
    """A token HTTP cannot carry is refused wherever it comes from, and never printed."""
    escaped = token.replace("\t", "\\t").replace("\n", "\\n")
    [from_file] = problems(tmp_path, GOOD.replace('token = "from-file"', f'token = "{escaped}"'))
    [from_env] = problems(tmp_path, GOOD, {"PAGER_SERVER_TOKEN": token})
    for problem in (from_file, from_env):
        assert "[server] token: must be printable ASCII without spaces" in problem
        assert token not in problem


@pytest.mark.parametrize("key,value", [
    ("token", "12345"), ("password", "12345"), ("auth_token", "12345"), ("username", "12345"),
    ("account_sid", "12345"),
])
def test_a_secret_of_the_wrong_type_is_refused_without_showing_it(tmp_path, key, value):
    """No problem line ever carries a secret's value, even a mistyped one."""
    text = re.sub(rf'^{key} = ".*"$', f"{key} = {value}", GOOD, flags=re.MULTILINE)
    [problem] = problems(tmp_path, text)
    assert f"{key}: expected a string" in problem and value not in problem


def test_check_config_prints_no_secret(tmp_path, capsys):
    """A good config's summary and a bad one's problems name keys, never secret values."""
    path = write(tmp_path, GOOD.replace('ack_timeout = "15m"', 'ack_timeout = "x"'))
    assert main(["check-config", str(path)]) == 2
    assert main(["check-config", str(write(tmp_path, GOOD))]) == 0
    out = capsys.readouterr()
    for secret in ("from-file", '"pw"', "tok\n", "AC1"):
        assert secret not in out.out + out.err


@pytest.mark.parametrize("service_id", ["a/b", "-leading", "with space", "x" * 129, "", "é"])
def test_a_service_id_outside_the_allowed_characters_is_refused(tmp_path, service_id):
    """An id that cannot travel in a URL path segment (a/b) could never be acknowledged."""
    [problem] = problems(tmp_path, GOOD.replace('id = "checkout"', f'id = "{service_id}"'))
    assert "[[services]] #1 id: not a service id" in problem


def test_sms_from_and_max_message_chars(tmp_path):
    """PAGER_SMS_FROM sets [sms] from; max_message_chars is checked between 20 and 1000."""
    config = load_config(write(tmp_path, GOOD.replace('from = "+15550000000"\n', "")),
                         {"PAGER_SMS_FROM": "+15551112222"})
    assert config.sms.from_number == "+15551112222" and config.sms.max_message_chars == 300
    [problem] = problems(tmp_path, GOOD.replace("[sms]", "[sms]\nmax_message_chars = 5"))
    assert "[sms] max_message_chars: must be between 20 and 1000" in problem


def test_version(capsys):
    """pager-actors --version names the installed version."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(r"pager-actors \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_service_options_repeat_ack_expiry_and_heartbeat(tmp_path):
    """Per service: repeat, heartbeat, and ack_expiry overriding [pager] ack_expiry."""
    text = GOOD.replace('ack_timeout = "15m"', 'ack_timeout = "15m"\nack_expiry = "2h"\n'
                        'keep_timeline = "30d"') + """
[[services]]
id = "cron"
levels = [["sms:+33600000009"]]
repeat = 2
ack_expiry = "off"
heartbeat = "5m"
"""
    config = load_config(write(tmp_path, text))
    checkout, cron = config.services
    assert (checkout.repeat, checkout.ack_expiry, checkout.heartbeat) == (
        0, timedelta(hours=2), None)
    assert (cron.repeat, cron.ack_expiry, cron.heartbeat) == (2, None, timedelta(minutes=5))
    assert config.pager.keep_timeline == timedelta(days=30)


@pytest.mark.parametrize("option,message", [
    ("repeat = -1", "repeat: must be 0 or more"),
    ('repeat = "2"', "repeat: expected a whole number"),
    ('heartbeat = "5s"', "heartbeat: must be at least 10s"),
    ('heartbeat = "often"', "heartbeat: not a duration"),
    ('ack_expiry = "0s"', "ack_expiry: must be longer than zero"),
])
def test_bad_service_options_are_refused(tmp_path, option, message):
    """check-config names the service and the option."""
    text = GOOD.replace('  ["sms:+33600000002"],\n]', '  ["sms:+33600000002"],\n]\n' + option)
    [problem] = problems(tmp_path, text)
    assert "(id 'checkout')" in problem and message in problem


def test_max_concurrency_defaults_to_8_and_is_read_per_channel(tmp_path):
    """[mail] and [sms] max_concurrency: 8 unless given, each channel its own."""
    assert (load_config(write(tmp_path, GOOD), {}).mail.max_concurrency,
            load_config(write(tmp_path, GOOD), {}).sms.max_concurrency) == (8, 8)
    text = GOOD.replace('password = "pw"', 'password = "pw"\nmax_concurrency = 1').replace(
        'auth_token = "tok"', 'auth_token = "tok"\nmax_concurrency = 256')
    config = load_config(write(tmp_path, text), {})
    assert (config.mail.max_concurrency, config.sms.max_concurrency) == (1, 256)


@pytest.mark.parametrize("value,message", [
    ("0", "must be between 1 and 256"), ("257", "must be between 1 and 256"),
    ('"8"', "expected an integer"),
    ("true", "expected an integer"), ("2.5", "expected an integer"),
])
def test_max_concurrency_out_of_range_is_refused(tmp_path, value, message):
    """max_concurrency is an integer from 1 to 256."""
    text = GOOD.replace('auth_token = "tok"', f'auth_token = "tok"\nmax_concurrency = {value}')
    [problem] = problems(tmp_path, text)
    assert "[sms] max_concurrency" in problem and message in problem


PUBLIC = 'listen = "127.0.0.1:9090"\npublic_url = "https://pager.example.com"\n' \
         'secret = "' + "s" * 40 + '"'


def test_public_url_needs_a_secret_and_a_token_and_never_shows_the_secret(tmp_path):
    """A daemon people reach signs its links and keeps its API closed."""
    text = GOOD.replace('listen = "127.0.0.1:9090"', PUBLIC)
    config = load_config(write(tmp_path, text))
    assert config.server.public_url == "https://pager.example.com"
    assert not any("no [server] public_url" in warning for warning in config.warnings)
    assert config.replies  # and the SMS kind is twilio
    no_secret = problems(tmp_path, text.replace('secret = "' + "s" * 40 + '"', ""))
    assert ["[server] secret: required with public_url" in p for p in no_secret] == [True]
    no_token = problems(tmp_path, text.replace('token = "from-file"\n', ""))
    assert ["[server] token: required with public_url" in p for p in no_token] == [True]
    [short] = problems(tmp_path, text.replace("s" * 40, "tooshort"))
    assert "at least 32 bytes" in short and "tooshort" not in short


def test_without_public_url_check_config_warns_and_passes(tmp_path, capsys):
    """No links, no replies: said on stderr, exit 0."""
    assert main(["check-config", str(write(tmp_path, GOOD))]) == 0
    assert "warning: no [server] public_url" in capsys.readouterr().err


def test_scoped_tokens_from_the_file_or_the_environment(tmp_path):
    """[[server.tokens]]: a name, a token or token_env, and scopes among three."""
    text = GOOD + """
[[server.tokens]]
name = "cron"
token_env = "CRON_TOKEN"
scopes = ["ingest"]

[[server.tokens]]
name = "dashboard"
token = "read-only-token"
scopes = ["read"]
"""
    config = load_config(write(tmp_path, text), {"CRON_TOKEN": "cron-secret"})
    assert [(t.name, t.token, sorted(t.scopes)) for t in config.server.tokens] == [
        ("cron", "cron-secret", ["ingest"]), ("dashboard", "read-only-token", ["read"])]
    missing = problems(tmp_path, text)
    assert any("token_env: the environment has no 'CRON_TOKEN'" in p for p in missing)
    bad = problems(tmp_path, text.replace('["read"]', '["read", "admin"]'),
                   {"CRON_TOKEN": "x"})
    assert any("scopes: a non-empty list of ingest, operate, read" in p for p in bad)


def test_status_updates_is_a_pager_switch(tmp_path):
    """[pager] status_updates, off by default."""
    assert load_config(write(tmp_path, GOOD)).pager.status_updates is False
    text = GOOD.replace('ack_timeout = "15m"', 'ack_timeout = "15m"\nstatus_updates = true')
    assert load_config(write(tmp_path, text)).pager.status_updates is True


ONCALL = GOOD.replace('''  ["mailto:oncall@example.com", "sms:+33600000001"],
  ["sms:+33600000002"],
]''', '''  ["rotation:primary"],
  ["user:dave", "sms:+33600000009"],
]''') + """
[pager.fallback_placeholder]
"""


def oncall_text(*, users: str, rotations: str) -> str:
    return ONCALL.replace("[pager.fallback_placeholder]\n", "") + users + rotations


USERS = """
[[users]]
id = "alice"
name = "Alice"
contacts = ["mailto:alice@example.com", "sms:+33600000001"]

[[users]]
id = "dave"
name = "Dave"
contacts = ["sms:+33600000004"]

[[users]]
id = "console-only"
name = "Just Looking"
"""
ROTATION = """
[[rotations]]
id = "primary"
time_zone = "Europe/Paris"
shift = "1w"
start = "2026-11-30T09:00"
users = ["alice", "dave"]
"""


def test_rotations_users_and_level_targets_load(tmp_path):
    """A rotation, users with contacts, and levels naming them."""
    config = load_config(write(tmp_path, oncall_text(users=USERS, rotations=ROTATION)))
    [rotation] = config.rotations
    assert (rotation.time_zone, rotation.shift, rotation.users) == (
        "Europe/Paris", timedelta(weeks=1), ("alice", "dave"))
    assert [t.uri for t in config.services[0].levels[0].targets] == ["rotation:primary"]


@pytest.mark.parametrize("change,message", [
    (('time_zone = "Europe/Paris"', 'time_zone = "Europe/Atlantis"'), "unknown zone"),
    (('users = ["alice", "dave"]', 'users = []'), "users: a non-empty list"),
    (('users = ["alice", "dave"]', 'users = ["alice", "zoe"]'), "no user 'zoe'"),
    (('users = ["alice", "dave"]', 'users = ["console-only"]'),
     "user 'console-only' has no contacts"),
    (('shift = "1w"', 'shift = "30m"'), "shift: at least 1h"),
    (('start = "2026-11-30T09:00"', 'start = "2026-11-30T09:00+01:00"'), "without an offset"),
    (('id = "primary"', 'id = "primary"\n[[rotations]]\nid = "primary"'), "duplicate"),
])
def test_bad_rotations_are_refused(tmp_path, change, message):
    """check-config refuses unknown zones, empty or unknown users, short shifts, offsets."""
    found = problems(tmp_path, oncall_text(users=USERS, rotations=ROTATION.replace(*change)))
    assert any(message in problem for problem in found), found


def test_level_targets_must_name_known_reachable_people(tmp_path):
    """rotation:ID and user:ID must exist; a user paged by name needs contacts."""
    text = oncall_text(users=USERS, rotations=ROTATION)
    missing = problems(tmp_path, text.replace("rotation:primary", "rotation:night"))
    assert any("no rotation 'night'" in p for p in missing)
    mute = problems(tmp_path, text.replace("user:dave", "user:console-only"))
    assert any("user 'console-only' has no contacts" in p for p in mute)


def test_fallback_is_warned_about_when_missing(tmp_path):
    """[pager] fallback: contacts; without it, a warning."""
    text = oncall_text(users=USERS, rotations=ROTATION)
    assert any("no [pager] fallback" in w for w in load_config(write(tmp_path, text)).warnings)
    with_fallback = text.replace('ack_timeout = "15m"',
                                 'ack_timeout = "15m"\nfallback = ["sms:+33600000099"]')
    config = load_config(write(tmp_path, with_fallback))
    assert [c.uri for c in config.pager.fallback] == ["sms:+33600000099"]
    assert not any("no [pager] fallback" in w for w in config.warnings)
