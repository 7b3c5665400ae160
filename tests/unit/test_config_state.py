"""[pager] state as a PostgreSQL URL: from the file or PAGER_STATE, and never shown with its
password, whatever check-config or the daemon says."""

from __future__ import annotations

import pytest

from pager_actors.cli import main
from pager_actors.daemon.config import PostgresState, load_config, mask_url
from tests.unit.test_config import GOOD, problems, write

SECRET = "hunter2-s3cret"
URL = f"postgresql://pager:{SECRET}@db.example:5432/pager"


def with_state(value: str) -> str:
    return GOOD.replace('state = "state/pager.db"', f'state = "{value}"')


def test_a_postgresql_url_is_the_state_shown_masked(tmp_path):
    """A postgresql:// (or postgres://) URL is kept whole for the store; its str and repr
    show it without the password."""
    for url in (URL, URL.replace("postgresql://", "postgres://", 1)):
        state = load_config(write(tmp_path, with_state(url)), {}).pager.state
        assert isinstance(state, PostgresState) and state.url == url
        assert str(state) == url.replace(SECRET, "****")
        assert SECRET not in repr(state) and SECRET not in repr(load_config(
            write(tmp_path, with_state(url)), {}))


def test_pager_state_in_the_environment_wins_over_the_file(tmp_path):
    """PAGER_STATE replaces [pager] state: a URL, or a file (relative to the config)."""
    config = load_config(write(tmp_path, GOOD), {"PAGER_STATE": URL})
    assert isinstance(config.pager.state, PostgresState) and config.pager.state.url == URL
    config = load_config(write(tmp_path, with_state(URL)), {"PAGER_STATE": "other.db"})
    assert config.pager.state == tmp_path / "other.db"


def test_a_password_in_the_file_draws_a_warning_and_none_from_the_environment(tmp_path):
    """The file should not hold the password: a warning names PAGER_STATE (masked)."""
    [warning] = [w for w in load_config(write(tmp_path, with_state(URL)), {}).warnings
                 if "[pager] state" in w]
    assert "PAGER_STATE" in warning and SECRET not in warning
    from_env = load_config(write(tmp_path, GOOD), {"PAGER_STATE": URL})
    assert not [w for w in from_env.warnings if "[pager] state" in w]
    no_password = load_config(write(tmp_path, with_state("postgresql://pager@db/pager")), {})
    assert not [w for w in no_password.warnings if "[pager] state" in w]


@pytest.mark.parametrize(("url", "reason"), [
    (f"postgresql://pager:{SECRET}@db.example:port/pager", "port"),
    (f"mysql://pager:{SECRET}@db.example/pager", "postgresql://"),
    (f"postgresql://pager:{SECRET}@db.example:70000/pager", "port"),
])
def test_a_refused_url_is_reported_masked(tmp_path, url, reason):
    """A URL that cannot be a PostgreSQL database is refused, shown masked."""
    [line] = problems(tmp_path, with_state(url))
    assert "[pager] state" in line and reason in line and ":****@db.example" in line
    assert SECRET not in line


@pytest.mark.parametrize("source", ["file", "environment"])
@pytest.mark.parametrize("url", [URL, f"postgresql://pager:{SECRET}@db.example:port/pager",
                                 f"pg://pager:{SECRET}@db.example/pager",
                                 f"postgresql://pager@db.example/pager?password={SECRET}"])
def test_check_config_never_prints_the_password(tmp_path, capsys, monkeypatch, url, source):
    """Good or refused, from the file or PAGER_STATE: nothing check-config prints holds it."""
    if source == "file":
        path = write(tmp_path, with_state(url))
    else:
        path = write(tmp_path, GOOD)
        monkeypatch.setenv("PAGER_STATE", url)
    main(["check-config", str(path)])
    out = capsys.readouterr()
    assert out.out + out.err and SECRET not in out.out + out.err


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:pw@h:5432/db", "postgresql://u:****@h:5432/db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("postgresql://u:p@ss/w:rd@h/db", "postgresql://u:****@h/db"),
    ("postgresql://h/db?sslmode=require&password=pw&application_name=x",
     "postgresql://h/db?sslmode=require&password=****&application_name=x"),
    ("postgresql://:pw@h/db", "postgresql://:****@h/db"),
])
def test_mask_url_hides_every_password(url, shown):
    """The userinfo's password (whatever it holds) and a `password=` parameter are masked."""
    assert mask_url(url) == shown
