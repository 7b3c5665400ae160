"""[[users]] and [server] trusted_proxies: people and proxies are checked like the rest, and no
problem line ever shows a password hash."""

from __future__ import annotations

import ipaddress

import bcrypt
import pytest

from pager_actors.cli import main
from pager_actors.console.passwords import hash_password, verify_password
from pager_actors.daemon.config import load_config
from pager_actors.domain import EmailTarget, SmsTarget
from tests.unit.test_config import GOOD, problems, write

ARGON2 = "$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"
BCRYPT = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()


def users(*entries: str) -> str:
    return GOOD + "".join(f"\n[[users]]\n{entry}\n" for entry in entries)


def test_users_load_with_their_hashes_and_contacts(tmp_path):
    """id, name, an argon2 or bcrypt hash, and contacts parsed as targets."""
    config = load_config(write(tmp_path, users(
        f'id = "alice"\nname = "Alice Martin"\npassword_hash = "{ARGON2}"\n'
        'contacts = ["mailto:alice@example.com", "sms:+33600000009"]',
        f'id = "bob"\nname = "Bob"\npassword_hash = "{BCRYPT}"',
        'id = "carol"\nname = "Carol"\ncontacts = ["sms:+33600000010"]')), {})
    alice, bob, carol = config.users
    assert (alice.id, alice.name, alice.password_hash) == ("alice", "Alice Martin", ARGON2)
    assert alice.contacts == (EmailTarget("alice@example.com"), SmsTarget("+33600000009"))
    assert bob.password_hash == BCRYPT and bob.contacts == ()
    assert carol.password_hash is None, "a contact-only person needs no hash"
    assert ARGON2 not in repr(alice), "a hash never shows in a repr"


def test_no_users_is_fine(tmp_path):
    """[[users]] is optional: the console then lets nobody in."""
    assert load_config(write(tmp_path, GOOD), {}).users == ()


@pytest.mark.parametrize("entry,where,says", [
    ('id = "alice"\nname = "A"\nemail = "a@example.com"', "[[users]] #1 email", "unknown key"),
    ('name = "A"', "[[users]] #1 id", "not a user id"),
    ('id = "al ice"\nname = "A"', "[[users]] #1 id", "not a user id"),
    ('id = "alice"', "(id 'alice') name", "printable characters"),
    ('id = "alice"\nname = "   "', "(id 'alice') name", "printable characters"),
    ('id = "alice"\nname = "A"\ncontacts = ["fax:123"]', "(id 'alice') contacts[0]",
     "malformed contact"),
    ('id = "alice"\nname = "A"\ncontacts = ["user:bob"]', "(id 'alice') contacts[0]",
     "malformed contact"),
    ('id = "al@ice"\nname = "A"', "[[users]] #1 id", "not a user id"),
    ('id = "alice"\nname = "A"\ncontacts = "mailto:a@example.com"', "(id 'alice') contacts",
     "expected a list"),
    ('id = "alice"\nname = "A"\npassword_hash = "$2b$31$' + "a" * 53 + '"',
     "(id 'alice') password_hash", "bcrypt cost 31"),
    ('id = "alice"\nname = "A"\npassword_hash = "$argon2id$v=19$m=4194304,t=1,p=1$'
     'c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"', "(id 'alice') password_hash",
     "too costly"),
])
def test_bad_users_are_refused_with_where_and_why(tmp_path, entry, where, says):
    """Each mistake in a [[users]] entry: one line naming the entry and the key."""
    [line] = problems(tmp_path, users(entry))
    assert where in line and says in line


def test_a_duplicate_user_id_is_refused(tmp_path):
    """Two entries with one id: refused, naming the first."""
    [line] = problems(tmp_path, users('id = "alice"\nname = "A"', 'id = "alice"\nname = "B"'))
    assert "[[users]] #2 (id 'alice') id: duplicate user id, first defined in [[users]] #1" \
        in line


@pytest.mark.parametrize("value", [
    '"plain-text-password"',
    '"$argon2id$v=19$m=65536,t=3,p=4$not-base64!$nope"',
    '"$2b$12$tooshort"',
    "12345",
])
def test_a_bad_hash_is_refused_without_showing_it(tmp_path, value, capsys):
    """Not a hash, a broken one, a number: refused, and the value is in no line."""
    path = write(tmp_path, users(f'id = "alice"\nname = "A"\npassword_hash = {value}'))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "(id 'alice') password_hash" in err
    assert value.strip('"') not in err and "not-base64" not in err and "tooshort" not in err


def test_check_config_never_prints_a_good_hash_either(tmp_path, capsys):
    """A valid config with hashes: the summary line shows none of them."""
    path = write(tmp_path, users(f'id = "alice"\nname = "A"\npassword_hash = "{ARGON2}"'))
    assert main(["check-config", str(path)]) == 0
    assert "argon2" not in capsys.readouterr().out


def test_users_are_an_array_of_tables(tmp_path):
    """users = "alice" is not [[users]]."""
    [line] = problems(tmp_path, 'users = "alice"\n' + GOOD)
    assert "[[users]]: must be an array of tables" in line


def test_trusted_proxies_are_addresses_and_networks(tmp_path):
    """Addresses and CIDR networks, v4 and v6; none by default."""
    text = GOOD.replace('token = "from-file"', 'token = "from-file"\n'
                        'trusted_proxies = ["10.0.0.1", "192.168.0.0/24", "fd00::/8"]')
    config = load_config(write(tmp_path, text), {})
    assert config.server.trusted_proxies == (ipaddress.ip_network("10.0.0.1"),
                                             ipaddress.ip_network("192.168.0.0/24"),
                                             ipaddress.ip_network("fd00::/8"))
    assert load_config(write(tmp_path, GOOD), {}).server.trusted_proxies == ()


@pytest.mark.parametrize("value,says", [
    ('"10.0.0.1"', "expected a list"),
    ('["10.0.0.5/24"]', "not an IP address or network: '10.0.0.5/24'"),
    ('["proxy.example.com"]', "not an IP address or network"),
    ("[10]", "expected an address or network string"),
])
def test_bad_trusted_proxies_are_refused(tmp_path, value, says):
    """Host bits set, names, wrong types: one line under [server] trusted_proxies."""
    text = GOOD.replace('token = "from-file"', f'token = "from-file"\ntrusted_proxies = {value}')
    [line] = problems(tmp_path, text)
    assert "[server] trusted_proxies" in line and says in line


def test_hash_password_reads_a_line_from_stdin(monkeypatch, capsys):
    """Not a terminal: the first line, without its line break, hashed with argon2id."""
    monkeypatch.setattr("sys.stdin", _Stdin("s3cret pass\n", tty=False))
    assert main(["hash-password"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("$argon2id$") and verify_password(printed, "s3cret pass")
    assert not verify_password(printed, "s3cret pass\n")


def test_hash_password_asks_twice_on_a_terminal(monkeypatch, capsys):
    """A terminal: getpass twice; the same password gives a hash, two different ones none."""
    monkeypatch.setattr("sys.stdin", _Stdin("", tty=True))
    answers = iter(["typed", "typed", "typed", "other"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["hash-password"]) == 0
    assert verify_password(capsys.readouterr().out.strip(), "typed")
    assert main(["hash-password"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "differ" in captured.err


def test_hash_password_refuses_an_empty_password(monkeypatch, capsys):
    """An empty line: exit 2, nothing printed on stdout."""
    monkeypatch.setattr("sys.stdin", _Stdin("\n", tty=False))
    assert main(["hash-password"]) == 2
    assert capsys.readouterr().out == ""


def test_a_printed_hash_is_accepted_by_the_config(tmp_path):
    """What hash-password prints is a valid password_hash."""
    made = hash_password("x")
    config = load_config(write(tmp_path, users(
        f'id = "alice"\nname = "A"\npassword_hash = "{made}"')), {})
    assert config.users[0].password_hash == made


class _Stdin:
    def __init__(self, text: str, tty: bool) -> None:
        self.text, self.tty = text, tty

    def isatty(self) -> bool:
        return self.tty

    def readline(self) -> str:
        line, _, self.text = self.text.partition("\n")
        return line + "\n" if _ else line
