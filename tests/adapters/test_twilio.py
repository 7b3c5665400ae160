"""TwilioSmsSender against a real Twilio-shaped HTTP server on 127.0.0.1."""

from __future__ import annotations

import pytest

from adapters.twilio import TwilioSmsSender
from pager_actors.ports import PermanentDeliveryError, TransientDeliveryError
from tests.servers import SmsGateway, free_port


@pytest.fixture
def gateway():
    with SmsGateway(account_sid="AC42", auth_token="tok") as gateway:
        yield gateway


def sender(gateway, token="tok") -> TwilioSmsSender:
    return TwilioSmsSender(gateway.base_url, "AC42", token, "+15550000000", timeout=5)


def test_message_is_posted_as_a_form_with_basic_auth(gateway):
    """201: To, From and Body arrive on the account's Messages.json."""
    sender(gateway).send_sms("+33600000001", "[checkout] level 1 page")
    [message] = gateway.messages
    assert (message.account, message.to, message.sender) == ("AC42", "+33600000001",
                                                             "+15550000000")
    assert message.body == "[checkout] level 1 page"


def test_wrong_credentials_are_permanent(gateway):
    """401 is not retried: the error names the status and Twilio's message."""
    with pytest.raises(PermanentDeliveryError, match="401: 20003 Authenticate"):
        sender(gateway, token="nope").send_sms("+33600000001", "x")


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limit_and_server_errors_are_transient(gateway, status):
    """429 and 5xx are worth retrying."""
    gateway.fail_next(status)
    with pytest.raises(TransientDeliveryError, match=str(status)):
        sender(gateway).send_sms("+33600000001", "x")


def test_bad_request_is_permanent(gateway):
    """400 (for example an invalid number) is final."""
    gateway.fail_next(400)
    with pytest.raises(PermanentDeliveryError, match="400"):
        sender(gateway).send_sms("+33600000001", "x")


def test_unreachable_gateway_is_transient():
    """Connection refused: a network error, worth retrying."""
    down = TwilioSmsSender(f"http://127.0.0.1:{free_port()}", "AC42", "tok", "+1555", timeout=2)
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        down.send_sms("+33600000001", "x")
