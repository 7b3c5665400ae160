"""[mail] and [sms] max_per_contact and throttle_window: the daemon's defaults, per channel,
and what is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pager_actors import Throttle
from pager_actors.daemon.config import load_config
from pager_actors.daemon.run import throttling
from tests.unit.test_config import GOOD, problems, write


def with_keys(mail: str = "", sms: str = "") -> str:
    return GOOD.replace('password = "pw"', f'password = "pw"\n{mail}').replace(
        'auth_token = "tok"', f'auth_token = "tok"\n{sms}')


def test_the_daemon_throttles_1_sms_and_10_mails_a_minute_by_default(tmp_path):
    """Without the keys: SMS 1 per 60 s (GoAlert's), mail 10 per 60 s."""
    config = load_config(write(tmp_path, GOOD), {})
    limits = throttling(config)
    assert limits.sms == Throttle(1, timedelta(seconds=60))
    assert limits.mail == Throttle(10, timedelta(seconds=60))


def test_each_channel_has_its_own_limit_and_0_turns_one_off(tmp_path):
    """The keys are read per channel; max_per_contact = 0 means no throttle there."""
    text = with_keys(mail="max_per_contact = 0",
                     sms='max_per_contact = 3\nthrottle_window = "2m"')
    limits = throttling(load_config(write(tmp_path, text), {}))
    assert limits.sms == Throttle(3, timedelta(minutes=2)) and limits.mail is None


@pytest.mark.parametrize("key,value,message", [
    ("max_per_contact", "-1", "must be between 0 and 1000"),
    ("max_per_contact", "1001", "must be between 0 and 1000"),
    ("max_per_contact", '"1"', "expected an integer"),
    ("throttle_window", '"0s"', "must be longer than zero"),
    ("throttle_window", '"2d"', "must be at most 1d"),
    ("throttle_window", "60", "expected a duration string"),
])
def test_bad_throttle_settings_are_refused_where_they_are(tmp_path, key, value, message):
    """Each channel's keys are checked, and the problem names its section and key."""
    for section in ("mail", "sms"):
        text = with_keys(**{section: f"{key} = {value}"})
        [problem] = problems(tmp_path, text)
        assert f"[{section}] {key}" in problem and message in problem
