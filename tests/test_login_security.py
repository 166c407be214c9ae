"""Sign-in hardening (issue 11): only failed sign-ins are limited, per username and per client (finding 4);
X-Forwarded-For counts only from a configured proxy (4); unknown and disabled usernames cost a password
check like known ones (8); failed sign-ins, rejected API tokens and 403 refusals are audited, and the
answer never says why a sign-in failed (10); password change and admin reset with a forced change, in
the API and the web UI (12); the sign-in page of a fresh install says how to make the first admin.
Through the real app on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from helpers import open_finder
from service_helpers import USERS, assert_error, backend, make_served, password  # noqa: F401

from facefinder.services.server import accounts as accounts_module

NEW_PASSWORD = "a-brand-new-password"


@pytest.fixture
def fresh(backend, tmp_path, pipeline):
    """Factory of unseeded apps (five users with tokens), each on a fresh catalog of this backend."""
    made = []

    def make(**config):
        app = make_served(tmp_path / f"data{len(made)}", pipeline, backend.new_url(), seed=False, **config)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


def peer(app, address: str, **headers) -> TestClient:
    """A client connecting from ``address`` (the TCP peer the server sees)."""
    client = TestClient(app.app, raise_server_exceptions=False, client=(address, 40000), headers=headers)
    app.clients.append(client)
    return client


def sign_in(client: TestClient, user: str, secret: str | None = None, forwarded: str | None = None):
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.post("/api/session", json={"username": user, "password": secret or password(user)}, headers=headers)


def details(app, action: str) -> list[dict]:
    return [json.loads(e.details) | {"actor": e.actor} for e in app.service.audit.entries(action=action)]


# ----- finding 4: count failures only, per username and per client, behind trusted proxies only ----------
def test_successful_sign_ins_are_never_limited(fresh):
    """The finding: 11 sign-ins by 4 users from one address locked everyone out for 5 minutes."""
    app = fresh(login_rate=(10, 300.0))
    client = peer(app, "192.0.2.10")
    for n in range(12):
        user = ["admin", "ivan", "inga", "aud"][n % 4]
        assert sign_in(client, user).status_code == 200, n


def test_repeated_failures_for_one_username_are_limited_from_any_address(fresh):
    app = fresh(login_rate=(10, 300.0), forwarded_allow_ips=["10.0.0.1"])
    proxy = peer(app, "10.0.0.1")
    for n in range(10):
        assert_error(sign_in(proxy, "ivan", "wrong-password", forwarded=f"198.51.100.{n}"), 401)
    response = sign_in(proxy, "ivan", forwarded="198.51.100.99")  # even the right password, from elsewhere
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    assert sign_in(proxy, "inga", forwarded="198.51.100.1").status_code == 200  # other users are not held up


def test_repeated_failures_from_one_client_are_limited(fresh):
    app = fresh(login_rate=(10, 300.0))
    guesser = peer(app, "192.0.2.66")
    for n in range(10):
        assert_error(sign_in(guesser, f"user{n}", "wrong-password"), 401)
    assert_error(sign_in(guesser, "ivan"), 429, "rate_limited")
    assert sign_in(peer(app, "192.0.2.67"), "ivan").status_code == 200


def test_a_success_clears_the_usernames_failures(fresh):
    app = fresh(login_rate=(10, 300.0), forwarded_allow_ips=["10.0.0.1"])
    proxy = peer(app, "10.0.0.1")
    for n in range(9):
        assert_error(sign_in(proxy, "ivan", "wrong-password", forwarded=f"198.51.100.{n}"), 401)
    assert sign_in(proxy, "ivan", forwarded="203.0.113.1").status_code == 200
    for n in range(9):
        assert_error(sign_in(proxy, "ivan", "wrong-password", forwarded=f"198.51.100.{50 + n}"), 401)


def test_x_forwarded_for_is_ignored_unless_from_an_allowed_proxy(fresh):
    app = fresh(login_rate=(3, 300.0))
    direct = peer(app, "192.0.2.5")
    for n in range(3):  # a client cannot dodge its limit by naming other addresses
        assert_error(sign_in(direct, f"nobody{n}", "wrong-password", forwarded=f"198.51.100.{n}"), 401)
    assert_error(sign_in(direct, "ivan", forwarded="198.51.100.200"), 429)
    assert {d["client"] for d in details(app, "login.failed")} == {"192.0.2.5"}


def test_the_client_behind_trusted_proxies_is_the_right_most_untrusted_address(fresh):
    app = fresh(forwarded_allow_ips=["10.0.0.0/8", "2001:db8::1"])
    cases = [
        ("10.0.0.1", "203.0.113.7", "203.0.113.7"),
        ("10.0.0.1", "6.6.6.6, 203.0.113.8", "203.0.113.8"),  # the left entry is the client's own word
        ("10.0.0.1", "203.0.113.9, 10.0.0.2", "203.0.113.9"),  # two proxies of ours
        ("2001:db8::1", "203.0.113.10", "203.0.113.10"),
        ("10.0.0.1", "10.0.0.3", "10.0.0.3"),  # all trusted: the left-most
        ("10.0.0.1", "not-an-address", "10.0.0.1"),  # a proxy that wrote nonsense: its own address
        ("192.0.2.99", "203.0.113.11", "192.0.2.99"),  # not a proxy of ours: the header is ignored
    ]
    for address, forwarded, _ in cases:
        assert_error(sign_in(peer(app, address), "ivan", "wrong-password", forwarded=forwarded), 401)
    assert [d["client"] for d in details(app, "login.failed")] == [want for _, _, want in cases]


def test_a_bad_forwarded_allow_ips_entry_is_one_clear_error(tmp_path, pipeline):
    from facefinder.errors import FaceFinderError
    from facefinder.interfaces.http.app import ServiceConfig, create_app

    finder = open_finder(tmp_path / "data", pipeline)
    try:
        with pytest.raises(FaceFinderError, match="forwarded-allow-ips: 'proxy.local'"):
            create_app(finder=finder, config=ServiceConfig(forwarded_allow_ips=["proxy.local"]))
    finally:
        finder.close()


# ----- finding 8: no timing difference between unknown, disabled and known usernames -------------------
class SpyHasher(PasswordHasher):
    """The real argon2 hasher (cheap settings), recording which hashes passwords are checked against."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.checked: list[str] = []

    def verify(self, hash, password) -> bool:  # noqa: A002 - argon2's own parameter name
        self.checked.append(hash if isinstance(hash, str) else hash.decode())
        return super().verify(hash, password)


def test_unknown_and_disabled_usernames_are_checked_against_a_dummy_hash(fresh, monkeypatch):
    app = fresh()
    assert app.client("admin").patch("/api/users/olga", json={"active": False}).status_code == 200
    spy = SpyHasher()
    monkeypatch.setattr(accounts_module, "_hasher", spy)
    answers = {}
    for user, secret in (("nobody", "wrong-password"), ("olga", password("olga")), ("ivan", "wrong-password")):
        spy.checked.clear()
        response = sign_in(app.client(None), user, secret)
        answers[user] = (response.status_code, response.json())
        assert len(spy.checked) == 1, (user, spy.checked)  # one argon2 check, whoever it is
        if user == "ivan":
            assert spy.checked[0] != accounts_module._dummy_hash()
        else:
            assert spy.checked[0] == accounts_module._dummy_hash()
    assert len({json.dumps(a) for a in answers.values()}) == 1  # the same answer, whatever went wrong


# ----- finding 10: failed authentication and refusals are audited -----------------------------------------
def test_failed_sign_ins_are_audited_with_their_reason_but_answered_alike(fresh):
    app = fresh()
    app.client("admin").patch("/api/users/olga", json={"active": False})
    client = peer(app, "192.0.2.20")
    bodies = [
        sign_in(client, "nobody", "wrong-password").json(),
        sign_in(client, "ivan", "wrong-password").json(),
        sign_in(client, "olga").json(),
    ]
    assert bodies[0] == bodies[1] == bodies[2]
    assert not any(reason in json.dumps(bodies) for reason in ("unknown-user", "wrong-password", "disabled"))
    page = client.post("/login", data={"username": "nobody", "password": "x", "csrf_token": "forged"})
    assert "unknown" not in page.text.lower()
    failed = [(d["actor"], d["reason"], d["client"]) for d in details(app, "login.failed")]
    assert failed == [
        ("nobody", "unknown-user", "192.0.2.20"),
        ("ivan", "wrong-password", "192.0.2.20"),
        ("olga", "disabled", "192.0.2.20"),
    ]
    sign_in(client, "ivan")
    assert details(app, "login")[-1] == {"actor": "ivan", "client": "192.0.2.20"}


def test_rejected_api_tokens_are_audited(fresh):
    app = fresh()
    olga_token = app.tokens["olga"]
    app.client("admin").patch("/api/users/olga", json={"active": False})
    for header in ("Bearer ff_nonsense", f"Bearer {olga_token}", "Basic abc"):
        assert_error(peer(app, "192.0.2.30", Authorization=header).get("/api/me"), 401, "unauthenticated")
    rejected = details(app, "token.rejected")
    assert [(d["actor"], d["reason"], d["client"]) for d in rejected] == [
        ("anonymous", "unknown", "192.0.2.30"),
        ("anonymous", "disabled", "192.0.2.30"),
        ("anonymous", "malformed", "192.0.2.30"),
    ]
    assert rejected[1]["username"] == "olga"
    assert "ff_nonsense" not in json.dumps(rejected) and olga_token not in json.dumps(rejected)


def test_rejected_tokens_count_as_failures_so_the_log_cannot_be_flooded(fresh):
    app = fresh(login_rate=(3, 300.0))
    guesser = peer(app, "192.0.2.31", Authorization="Bearer ff_guess")
    for _ in range(3):
        assert_error(guesser.get("/api/me"), 401)
    assert_error(guesser.get("/api/me"), 429, "rate_limited")
    assert len(details(app, "token.rejected")) == 3
    valid = peer(app, "192.0.2.31", Authorization=f"Bearer {app.tokens['ivan']}")
    assert valid.get("/api/me").status_code == 200  # a valid token is never held up


def test_403_refusals_are_audited_with_who_and_what(fresh):
    app = fresh()
    assert_error(app.client("ivan").get("/api/users"), 403, "forbidden")
    browser, csrf = app.browser("aud")
    assert browser.get("/accounts").status_code == 403  # a page
    assert_error(browser.post("/api/tokens", json={"name": "x"}), 403, "csrf_failed")
    refused = [(d["actor"], d["method"], d["path"], d["code"]) for d in details(app, "access.denied")]
    assert refused == [
        ("ivan", "GET", "/api/users", "forbidden"),
        ("aud", "GET", "/accounts", "forbidden"),
        ("aud", "POST", "/api/tokens", "csrf_failed"),
    ]
    assert_error(app.client(None).get("/api/users"), 401)  # anonymous: a 401, nothing more recorded
    assert len(details(app, "access.denied")) == 3


# ----- finding 12: password change and admin reset -----------------------------------------------------
def test_self_service_password_change(fresh):
    app = fresh()
    browser, csrf = app.browser("ivan")
    headers = {"X-CSRF-Token": csrf}

    def change(current: str, new: str, **kwargs):
        body = {"current_password": current, "new_password": new}
        return browser.post("/api/me/password", json=body, **({"headers": headers} | kwargs))

    assert_error(change(password("ivan"), NEW_PASSWORD, headers={}), 403, "csrf_failed")
    assert_error(change("not-my-password", NEW_PASSWORD), 400, "bad_request", "current_password")
    assert_error(change(password("ivan"), "short"), 422, "invalid", "new_password")
    assert_error(change(password("ivan"), password("ivan")), 400, "bad_request", "new_password")
    assert change(password("ivan"), NEW_PASSWORD).status_code == 200
    assert_error(sign_in(app.client(None), "ivan"), 401)
    assert sign_in(app.client(None), "ivan", NEW_PASSWORD).status_code == 200
    actions = [(e.actor, e.action) for e in app.service.audit.entries(actor="ivan")]
    assert ("ivan", "password.change.failed") in actions and ("ivan", "password.change") in actions


def test_wrong_current_passwords_count_as_failed_sign_ins(fresh):
    app = fresh(login_rate=(3, 300.0))
    client = app.client("ivan")
    body = {"current_password": "not-my-password", "new_password": NEW_PASSWORD}
    for _ in range(3):
        assert_error(client.post("/api/me/password", json=body), 400)
    assert_error(client.post("/api/me/password", json=body), 429, "rate_limited")


def test_admin_reset_forces_a_change_before_anything_else(fresh):
    app = fresh()
    assert_error(app.client("inga").post("/api/users/ivan/password"), 403, "forbidden")
    response = app.client("admin").post("/api/users/ivan/password")
    assert response.status_code == 200 and response.json()["username"] == "ivan"
    temporary = response.json()["temporary_password"]
    assert len(temporary) >= 10
    assert_error(sign_in(app.client(None), "ivan"), 401)  # the old password is gone
    browser = app.client(None)
    signed_in = sign_in(browser, "ivan", temporary)
    assert signed_in.status_code == 200
    csrf = signed_in.json()["csrf_token"]
    assert browser.get("/api/me").status_code == 200
    assert_error(browser.get("/api/collections"), 403, "password_change_required")
    assert_error(app.client("ivan").get("/api/collections"), 401)  # a reset revokes the user's API tokens
    assert_error(browser.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf}), 403)
    body = {"current_password": temporary, "new_password": NEW_PASSWORD}
    assert browser.post("/api/me/password", json=body, headers={"X-CSRF-Token": csrf}).status_code == 200
    assert browser.get("/api/collections").status_code == 200
    assert_error(app.client("ivan").get("/api/collections"), 401)  # and they stay revoked
    reset = details(app, "password.reset")
    assert reset == [{"actor": "admin", "username": "ivan", "sessions_ended": 0, "tokens_revoked": 1}]
    assert ("ivan", "GET", "/api/collections", "password_change_required") in [
        (d["actor"], d["method"], d["path"], d["code"]) for d in details(app, "access.denied")
    ]


def test_the_web_ui_sends_a_reset_user_to_the_account_page(fresh):
    app = fresh()
    temporary = app.client("admin").post("/api/users/inga/password").json()["temporary_password"]
    client = app.client(None)
    token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    form = {"username": "inga", "password": temporary, "csrf_token": token, "next": "/search"}
    response = client.post("/login", data=form, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/account"
    assert client.get("/search", follow_redirects=False).headers["location"] == "/account"
    page = client.get("/account")
    assert "An admin reset your password" in page.text and "token-form" not in page.text
    csrf = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    fields = {"current_password": temporary, "new_password": NEW_PASSWORD, "csrf_token": csrf}
    mismatch = client.post("/account/password", data=fields | {"new_password_again": "something-else"})
    assert mismatch.status_code == 400 and "The two new passwords differ" in mismatch.text
    wrong = client.post(
        "/account/password", data=fields | {"current_password": "nope-nope-nope", "new_password_again": NEW_PASSWORD}
    )
    assert wrong.status_code == 400 and "Current password: this is not your current password" in wrong.text
    done = client.post("/account/password", data=fields | {"new_password_again": NEW_PASSWORD})
    assert done.status_code == 200 and "Your password was changed" in done.text  # after the redirect
    assert client.get("/search", follow_redirects=False).status_code == 200


# ----- a fresh install ----------------------------------------------------------------------------------
def test_the_sign_in_page_says_how_to_create_the_first_admin(tmp_path, pipeline):
    from facefinder.interfaces.http.app import ServiceConfig, create_app

    finder = open_finder(tmp_path / "data", pipeline)
    app = create_app(finder=finder, config=ServiceConfig())
    try:
        with TestClient(app) as client:
            page = client.get("/login")
            assert page.status_code == 200 and "No account exists yet" in page.text
            assert "facefinder users add NAME --role admin" in page.text
            app.state.service.accounts.add_user("root", "a-good-password", "admin")
            assert "No account exists yet" not in client.get("/login").text
    finally:
        finder.close()


def test_every_seeded_user_is_known():
    """A guard: the tests above rely on these accounts."""
    assert {"admin", "ivan", "inga", "olga", "aud"} == set(USERS)
