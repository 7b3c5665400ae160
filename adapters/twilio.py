"""TwilioSmsSender: SMS through the Twilio Messages API (or any service of the same shape).

A form POST to `{base_url}/2010-04-01/Accounts/{sid}/Messages.json` with HTTP
Basic auth (account SID, auth token). 201 is success; 429 and 5xx and network
errors are transient; any other status (400 bad number, 401 bad credentials)
is permanent.
"""

from __future__ import annotations

import httpx

from pager_actors.ports import PermanentDeliveryError, TransientDeliveryError


class TwilioSmsSender:
    """Thread-safe: httpx's client keeps up to `max_connections` connections alive and
    shares them; give it as many as there are concurrent senders, so none waits for one."""

    def __init__(self, base_url: str, account_sid: str, auth_token: str, from_number: str,
                 *, timeout: float = 10.0, max_connections: int = 8) -> None:
        self.account_sid = account_sid
        self.from_number = from_number
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections)
        self._client = httpx.Client(base_url=base_url.rstrip("/"),
                                    auth=(account_sid, auth_token), timeout=timeout,
                                    limits=limits)

    def send_sms(self, to: str, text: str) -> None:
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        try:
            response = self._client.post(path, data={"To": to, "From": self.from_number,
                                                     "Body": text})
        except httpx.HTTPError as error:
            raise TransientDeliveryError(f"SMS gateway unreachable: {error!r}") from error
        if response.status_code in (200, 201):
            return
        detail = f"SMS gateway answered {response.status_code}: {_reason(response)}"
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientDeliveryError(detail)
        raise PermanentDeliveryError(detail)

    def close(self) -> None:
        self._client.close()


def _reason(response: httpx.Response) -> str:
    """Twilio's error JSON has `code` and `message`; fall back to the raw body."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict) and "message" in data:
        return f"{data.get('code', '')} {data['message']}".strip()
    return response.text[:200]
