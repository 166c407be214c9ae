"""Browser sessions are kept server-side (issue 11, finding 3): signing out ends the session, so a copy of
the old cookie no longer works; disabling an account or setting its password ends its sessions (a user's own
change keeps the session that made it); the cookie carries only the session token; session_max_age still
applies. Through the real app on SQLite and PostgreSQL, and a catalog from before the sessions table."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from service_helpers import assert_error, backend, make_served, password  # noqa: F401
from sqlalchemy import create_engine, select, text, update

from facefinder.storage.accounts import User, UserSession
from facefinder.storage.base import utcnow
from facefinder.storage.catalog import Catalog


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


def replay(app, cookie: str):
    """A new client that presents a copy of a session cookie (what a thief or a shared machine keeps)."""
    client = app.client(None)
    client.cookies.set("ff_session", cookie)
    return client


def cookie_payload(cookie: str) -> dict:
    """What a Starlette session cookie carries (base64 JSON before the signature)."""
    data = cookie.split(".")[0]
    return json.loads(base64.b64decode(data + "=" * (-len(data) % 4)))


def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(fresh):
    app = fresh()
    browser, csrf = app.browser("ivan")
    cookie = browser.cookies["ff_session"]
    assert cookie_payload(cookie).keys() == {"sid"}  # no user id, no sign-in time: only the session token
    assert browser.delete("/api/session", headers={"X-CSRF-Token": csrf}).status_code == 200
    thief = replay(app, cookie)
    assert_error(thief.get("/api/me"), 401, "unauthenticated")
    assert_error(thief.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf}), 401)
    assert thief.get("/account", follow_redirects=False).headers["location"].startswith("/login")
    with app.service.catalog.session() as session:
        row = session.scalar(select(UserSession))
        assert row.revoked_at is not None and row.user_id == app.service.accounts.user("ivan").id
        assert row.id != cookie_payload(cookie)["sid"] and len(row.id) == 64  # only its sha256 is stored


def test_the_web_sign_out_ends_the_session_too(fresh):
    app = fresh()
    client = app.client(None)
    token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post(
        "/login", data={"username": "inga", "password": password("inga"), "csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    cookie = client.cookies["ff_session"]
    page_csrf = client.get("/account").text.split('name="csrf-token" content="')[1].split('"')[0]
    assert client.post("/logout", data={"csrf_token": page_csrf}, follow_redirects=False).status_code == 303
    assert_error(replay(app, cookie).get("/api/me"), 401)
    assert ("inga", "logout") in [(e.actor, e.action) for e in app.service.audit.entries(action="logout")]


def test_disabling_ends_every_session_and_enabling_brings_none_back(fresh):
    app = fresh()
    first, _ = app.browser("inga")
    second, _ = app.browser("inga")
    cookies = [first.cookies["ff_session"], second.cookies["ff_session"]]
    admin = app.client("admin")
    assert admin.patch("/api/users/inga", json={"active": False}).status_code == 200
    assert admin.patch("/api/users/inga", json={"active": True}).status_code == 200
    for cookie in cookies:
        assert_error(replay(app, cookie).get("/api/me"), 401)
    disable = app.service.audit.entries(action="user.disable")[-1]
    assert json.loads(disable.details) == {"username": "inga", "sessions_ended": 2}
    assert app.browser("inga")[0].get("/api/me").status_code == 200  # a new sign-in works again


def test_a_password_change_keeps_only_the_session_that_made_it(fresh):
    app = fresh()
    here, csrf = app.browser("ivan")
    elsewhere, _ = app.browser("ivan")
    response = here.post(
        "/api/me/password",
        json={"current_password": password("ivan"), "new_password": "a-brand-new-password"},
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status_code == 200 and response.json() == {"changed": True, "sessions_ended": 1}
    assert here.get("/api/me").status_code == 200
    assert_error(elsewhere.get("/api/me"), 401)
    assert app.client("ivan").get("/api/me").status_code == 200  # API tokens are not sessions: they stay


def test_an_admin_reset_ends_every_session(fresh):
    app = fresh()
    browser, _ = app.browser("ivan")
    assert app.client("admin").post("/api/users/ivan/password").status_code == 200
    assert_error(browser.get("/api/me"), 401)


def test_session_max_age_still_applies(fresh):
    app = fresh()
    browser, _ = app.browser("ivan")
    assert browser.get("/api/me").status_code == 200
    with app.service.catalog.session() as session, session.begin():
        session.execute(update(UserSession).values(created_at=utcnow() - timedelta(hours=8, seconds=1)))
    assert_error(browser.get("/api/me"), 401)
    # the next sign-in clears rows that can never be valid again
    app.browser("inga")
    with app.service.catalog.session() as session:
        assert len(session.scalars(select(UserSession)).all()) == 1


def test_last_seen_is_kept(fresh):
    app = fresh()
    browser, _ = app.browser("ivan")
    past = utcnow() - timedelta(minutes=5)
    with app.service.catalog.session() as session, session.begin():
        session.execute(update(UserSession).values(last_seen_at=past))
    assert browser.get("/api/me").status_code == 200
    with app.service.catalog.session() as session:
        assert session.scalar(select(UserSession.last_seen_at)) > past


def test_a_catalog_from_before_sessions_opens_and_signs_in(tmp_path):
    """An older catalog has no user_sessions table and no must_change_password column: both are added."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, username VARCHAR(100) UNIQUE, "
                "password_hash VARCHAR(200), role VARCHAR(20), active BOOLEAN, created_at DATETIME)"
            )
        )
        connection.execute(text("INSERT INTO users VALUES (1, 'old', 'not-a-hash', 'admin', 1, '2024-01-01 00:00:00')"))
    engine.dispose()
    catalog = Catalog(url)
    try:
        from facefinder.services.audit import AuditLog
        from facefinder.services.server.accounts import Accounts, Principal

        accounts = Accounts(catalog, AuditLog(catalog))
        with catalog.session() as session:
            assert session.scalar(select(User.must_change_password)) is None  # read as "no"
        accounts.reset_password(Principal(0, "local:test", "admin"), "old")
        assert accounts.user("old").must_change_password is True
        token = accounts.start_session(accounts.principal(1))
        assert accounts.session_principal(token).username == "old"
    finally:
        catalog.close()


def test_signing_in_again_ends_the_browsers_previous_session(fresh):
    app = fresh()
    browser, _ = app.browser("ivan")
    before = browser.cookies["ff_session"]
    assert browser.post("/api/session", json={"username": "inga", "password": password("inga")}).status_code == 200
    assert browser.get("/api/me").json()["username"] == "inga"
    assert_error(replay(app, before).get("/api/me"), 401)
