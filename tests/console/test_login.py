"""Logging in and out, and sessions that end when they must."""

from __future__ import annotations

from dataclasses import replace

from tests.console.conftest import PASSWORD, cheap_hash, csrf_of, log_in, logged_in


def test_a_page_without_a_session_sends_to_the_login_form(site):
    """GET / without a session: 303 to /login, with the page to come back to."""
    response = site.client().get("/services/checkout")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fservices%2Fcheckout"


def test_logging_in_sets_a_session_cookie_and_goes_where_asked(site):
    """The right password: 303 to `next`, an HttpOnly SameSite=Lax session cookie."""
    client = site.client()
    response = log_in(client, next_page="/services/checkout")
    assert response.status_code == 303 and response.headers["location"] == "/services/checkout"
    cookie = next(c for c in response.headers.get_list("set-cookie")
                  if c.startswith("pager_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    page = client.get("/")
    assert page.status_code == 200 and "Signed in as <strong>Alice Martin</strong>" in page.text


def test_the_cookie_is_secure_when_people_reach_the_console_over_https(site):
    """secure_cookies (public_url is https): the cookie is Secure and __Host- prefixed."""
    client = site.client(site.app(secure_cookies=True), base_url="https://testserver")
    response = log_in(client)
    cookie = next(c for c in response.headers.get_list("set-cookie")
                  if c.startswith("__Host-pager_session="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "Domain" not in cookie
    assert client.get("/").status_code == 200


def test_a_wrong_password_or_an_unknown_user_is_refused_alike(site):
    """Wrong password, unknown user, user without a hash: the same 401 page, no cookie."""
    client = site.client()
    answers = [log_in(client, "alice", "wrong"), log_in(client, "mallory", PASSWORD),
               log_in(client, "carol", "")]
    for response in answers:
        assert response.status_code == 401
        assert "Wrong user or password." in response.text
        assert not any(c.startswith("pager_session=")
                       for c in response.headers.get_list("set-cookie"))
    assert client.get("/").status_code == 303


def test_login_gives_a_new_session_whatever_cookie_came_with_it(site):
    """A session id planted before login is not the one used after it (no fixation)."""
    client = site.client()
    client.cookies.set("pager_session", "planted-by-someone", domain="testserver.local")
    response = log_in(client)
    [cookie] = [c for c in response.headers.get_list("set-cookie")
                if c.startswith("pager_session=")]
    assert not cookie.startswith("pager_session=planted-by-someone;")
    assert client.get("/").status_code == 200


def test_the_next_page_is_always_on_this_site(site):
    """`next` pointing elsewhere (//evil, https://evil, /\\evil) lands on / instead."""
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = log_in(site.client(), next_page=target)
        assert response.headers["location"] == "/"


def test_logout_ends_the_session_at_once(site):
    """After logout the old cookie opens nothing, even replayed."""
    client = logged_in(site.client())
    cookie = client.cookies.get("pager_session")
    response = client.post("/logout", data={"csrf": csrf_of(client.get("/").text)})
    assert response.status_code == 303 and response.headers["location"] == "/login?out=1"
    replay = site.client(site.apps[-1])
    replay.cookies.set("pager_session", cookie)
    assert replay.get("/").status_code == 303


def test_removing_a_user_from_the_config_ends_their_sessions_at_once(site):
    """The next request after a reload without the user: back to the login form."""
    client = logged_in(site.client())
    assert client.get("/").status_code == 200
    site.users[:] = [u for u in site.users if u.id != "alice"]
    assert client.get("/").status_code == 303
    site.users.append(replace(site.users[0], id="alice", name="Alice Again"))
    assert client.get("/").status_code == 303, "a session never comes back"


def test_a_changed_password_ends_the_sessions_made_with_the_old_one(site):
    """A reload that changes a user's hash logs them out everywhere."""
    client = logged_in(site.client())
    site.users[0] = replace(site.users[0], password_hash=cheap_hash("new password"))
    assert client.get("/").status_code == 303


def test_a_session_expires(site):
    """Twelve hours after login the session is gone."""
    client = logged_in(site.client())
    site.clock.advance(12 * 3600 - 1)
    assert client.get("/").status_code == 200
    site.clock.advance(2)
    assert client.get("/").status_code == 303


def test_the_login_form_itself_needs_its_csrf_token(site):
    """A login posted without the login cookie, or with another token: 403, no session."""
    client = site.client()
    token = csrf_of(client.get("/login").text)
    wrong = client.post("/login", data={"csrf": token[:-2] + "00", "user": "alice",
                                        "password": PASSWORD})
    assert wrong.status_code == 403 and "This form was refused" in wrong.text
    bare = site.client(site.apps[-1])  # no login cookie at all
    response = bare.post("/login", data={"csrf": token, "user": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert client.get("/").status_code == 303


def test_the_api_token_does_not_log_into_the_console(site):
    """A bearer token, even the API's, is not a session: 303 to the login form."""
    client = site.client(headers={"Authorization": "Bearer the-api-token"})
    assert client.get("/").status_code == 303
    response = client.post("/services/checkout/acknowledge", data={"csrf": "x", "incident": "1"})
    assert response.status_code == 403
