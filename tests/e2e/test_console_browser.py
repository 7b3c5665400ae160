"""The web console in a real browser: Debian's Chromium, driven by Selenium, against the
daemon as a subprocess. Screenshots go to tests/artifacts/ (the README's come from there)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from pager_actors.console import hash_password
from tests.e2e.daemon import ROOT, Daemon, new_port

pytestmark = pytest.mark.timeout(120)

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts"
TOKEN = "api-token-for-the-browser-test"
PASSWORD = "correct horse battery staple"
WAIT = 20  # seconds, for any page to show what the test waits for

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("Debian's chromium and chromium-driver are not installed "
                "(apt-get install chromium chromium-driver; .ci/run does)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402 - only once the browser is known to be there
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.selenium_manager import SeleniumManager  # noqa: E402
from selenium.webdriver.support import expected_conditions as shown  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def config(port: int, state: Path, password_hash: str) -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"
token = "{TOKEN}"

[pager]
ack_timeout = "15m"
state = "{state}"

[[services]]
id = "checkout"
levels = [["mailto:oncall@example.com", "sms:+33600000001"], ["sms:+33600000002"]]
repeat = 1

[[services]]
id = "search"
levels = [["mailto:search-oncall@example.com"], ["sms:+33600000003"]]

[[services]]
id = "nightly-backup"
levels = [["mailto:ops@example.com"]]
heartbeat = "26h"

[[services]]
id = "payments"
levels = [["sms:+33600000004"]]

[[users]]
id = "alice"
name = "Alice Martin"
password_hash = "{password_hash}"
contacts = ["mailto:alice@example.com"]

[[users]]
id = "bob"
name = "Bob Chen"
"""


@pytest.fixture
def daemon(tmp_path) -> Iterator[Daemon]:
    path = tmp_path / "pager.toml"
    path.write_text(config(new_port(), tmp_path / "pager.db", hash_password(PASSWORD)))
    running = Daemon(path, tmp_path / "daemon.log")
    try:
        yield running.start()
    finally:
        running.stop_quietly()


@pytest.fixture
def browser(monkeypatch) -> Iterator[webdriver.Chrome]:
    def no_downloads(*args, **kwargs):
        raise AssertionError("Selenium Manager was asked for a driver or a browser")

    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setattr(SeleniumManager, "binary_paths", no_downloads)
    profile = tempfile.mkdtemp(prefix="pager-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=1200,900", "--lang=en-US",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: webdriver.Chrome, name: str, width: int = 1200) -> Path:
    """The whole page, as tall as it is, saved under tests/artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    driver.set_window_size(width, 900)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(600, min(int(height) + 140, 4000)))
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1200, 900)
    return path


def api(daemon: Daemon, method: str, path: str, **kwargs) -> httpx.Response:
    return daemon.api(method, path, headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)


def wait_text(driver: webdriver.Chrome, text: str) -> None:
    WebDriverWait(driver, WAIT).until(shown.text_to_be_present_in_element((By.TAG_NAME, "body"),
                                                                          text))


def test_log_in_see_the_incident_acknowledge_it_and_see_the_timeline(daemon, browser):
    """A person logs in, sees the open incident first, acknowledges it, and the timeline
    shows who did; a form posted with a wrong CSRF token is refused (403)."""
    for key, message in (("HighLatency", "p99 latency above 2 s for 5 minutes"),
                         ("ErrorRate", "5xx rate at 4.2 % on /api/cart")):
        response = api(daemon, "POST", "/api/v1/alerts",
                       json={"service_id": "checkout", "key": key, "message": message})
        assert response.status_code == 202
    assert api(daemon, "POST", "/api/v1/alerts", json={
        "service_id": "search", "message": "index lag above 10 minutes"}).status_code == 202
    assert api(daemon, "POST", "/api/v1/services/search/acknowledge").status_code == 202
    end = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    assert api(daemon, "POST", "/api/v1/services/payments/maintenance", json={
        "end": end, "reason": "card processor migration"}).status_code == 201
    driver = browser

    driver.get(f"{daemon.url}/")
    WebDriverWait(driver, WAIT).until(shown.url_contains("/login"))
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    screenshot(driver, "console-login", width=800)
    driver.find_element(By.ID, "user").send_keys("alice")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()

    wait_text(driver, "Open incidents")
    assert "Signed in as Alice Martin" in driver.find_element(By.TAG_NAME, "header").text
    cards = driver.find_elements(By.CSS_SELECTOR, ".cards > li")
    assert [c.find_element(By.TAG_NAME, "h3").text for c in cards] == ["checkout", "search"]
    assert "Not acknowledged" in cards[0].text and "2 alerts firing" in cards[0].text
    assert "Acknowledged by api" in cards[1].text
    assert driver.title.startswith("(1) Services")
    assert "In maintenance" in driver.find_element(By.ID, "healthy-title").find_element(
        By.XPATH, "..").text
    screenshot(driver, "console-overview")
    screenshot(driver, "console-overview-phone", width=400)

    cards[0].find_element(By.LINK_TEXT, "checkout").click()
    wait_text(driver, "Incident #1: not acknowledged")
    policy = driver.find_element(By.ID, "policy-title").find_element(By.XPATH, "..").text
    assert "o***@example.com" in policy and "oncall@example.com" not in policy
    assert "+33600000001" not in driver.page_source
    screenshot(driver, "console-service")

    driver.find_element(By.XPATH, "//button[normalize-space()='Acknowledge']").click()
    wait_text(driver, "You acknowledged incident #1")
    status = driver.find_element(By.CSS_SELECTOR, "section.status").text
    assert "acknowledged by console:Alice Martin" in status
    latest = driver.find_element(By.CSS_SELECTOR, ".timeline li").text
    assert "Acknowledged" in latest and "by console:Alice Martin" in latest
    screenshot(driver, "console-service-acknowledged")
    shown_state = api(daemon, "GET", "/api/v1/services/checkout").json()
    assert shown_state["acknowledged_by"] == "console:Alice Martin"

    # The Resolve form, its CSRF token changed in the page: refused, and nothing happens.
    driver.execute_script(
        "document.querySelector(\"form[action$='/resolve'] input[name=csrf]\").value = 'forged'")
    driver.find_element(By.XPATH, "//button[normalize-space()='Resolve']").click()
    wait_text(driver, "This form was refused")
    screenshot(driver, "console-csrf-refused", width=800)
    assert api(daemon, "GET", "/api/v1/services/checkout").json()["health"] == "unhealthy"
    cookie = {c["name"]: c["value"] for c in driver.get_cookies()}["pager_session"]
    forged = httpx.post(f"{daemon.url}/services/checkout/resolve", timeout=10,
                        cookies={"pager_session": cookie},
                        data={"csrf": "forged", "incident": "1"})
    assert forged.status_code == 403

    # The session cookie does not open the API; the API token does not open the console.
    assert httpx.get(f"{daemon.url}/api/v1/services", cookies={"pager_session": cookie},
                     timeout=10).status_code == 401
    bearer = httpx.get(f"{daemon.url}/", headers={"Authorization": f"Bearer {TOKEN}"},
                       timeout=10)
    assert bearer.status_code == 303 and bearer.headers["location"].startswith("/login")

    driver.get(f"{daemon.url}/")
    driver.find_element(By.XPATH, "//button[normalize-space()='Log out']").click()
    wait_text(driver, "You are logged out")
    driver.get(f"{daemon.url}/services/checkout")
    WebDriverWait(driver, WAIT).until(shown.url_contains("/login"))
