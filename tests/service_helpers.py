"""Fixtures and helpers for the service tests (API, web UI, service CLI).

Catalogs run on SQLite and on a real PostgreSQL: the ``backend`` fixture is parametrised over both;
the PostgreSQL half is skipped only when FACEFINDER_TEST_POSTGRES_URL is not set (CI sets it, see
.ci/postgres.sh). Each app gets its own database. Nothing of our own is mocked: the app is the real
FastAPI app on a real FaceFinder with the real models.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from helpers import LFW, LFW_PEOPLE, POLICY, lfw, open_finder

from facefinder.services.server import accounts as accounts_module

# The service tests make hundreds of accounts and sign-ins: argon2 at its cheapest keeps them fast. The
# hash format and the code that checks it are the same; the service itself uses argon2-cffi's defaults.
accounts_module._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

POSTGRES_ENV = "FACEFINDER_TEST_POSTGRES_URL"
USERS = {"admin": "admin", "ivan": "investigator", "inga": "investigator", "olga": "investigator", "aud": "auditor"}
GRANTED = ("ivan", "inga")  # olga is an investigator without any grant
COLLECTION = "people"


def password(user: str) -> str:
    return f"{user}-password-1"


@dataclass
class Backend:
    name: str
    created: list[str] = field(default_factory=list)

    def new_url(self) -> str | None:
        """A fresh, empty catalog database: None (SQLite in the data dir) or a new PostgreSQL database."""
        if self.name == "sqlite":
            return None
        import psycopg
        from sqlalchemy.engine import make_url

        base = make_url(os.environ[POSTGRES_ENV])
        name = f"ff_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(_libpq(base), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return base.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if not self.created:
            return
        import psycopg
        from sqlalchemy.engine import make_url

        base = make_url(os.environ[POSTGRES_ENV])
        with psycopg.connect(_libpq(base), autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


def _libpq(url) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def make_backend(name: str) -> Backend:
    if name == "postgresql" and not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"{POSTGRES_ENV} is not set (CI starts a PostgreSQL with .ci/postgres.sh and sets it)")
    return Backend(name)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request):
    """Parametrises a test module over SQLite and PostgreSQL; ``backend.new_url()`` makes a fresh catalog."""
    made = make_backend(request.param)
    yield made
    made.drop_all()


@dataclass
class Served:
    """A running app (in-process, through TestClient) with users, tokens and optionally a seeded collection."""

    app: object
    finder: object
    data_dir: Path
    catalog_url: str | None
    tokens: dict[str, str] = field(default_factory=dict)
    clients: list[TestClient] = field(default_factory=list)
    search_id: int | None = None
    probe_id: str | None = None
    import_root: Path | None = None

    @property
    def service(self):
        return self.app.state.service

    def client(self, user: str | None = None) -> TestClient:
        """A client authenticating with ``user``'s API token (None: anonymous)."""
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        client = TestClient(self.app, raise_server_exceptions=False, headers=headers)
        self.clients.append(client)
        return client

    def browser(self, user: str) -> tuple[TestClient, str]:
        """A client signed in with a session cookie, and its CSRF token."""
        client = TestClient(self.app, raise_server_exceptions=False)
        self.clients.append(client)
        response = client.post("/api/session", json={"username": user, "password": password(user)})
        assert response.status_code == 200, response.text
        return client, response.json()["csrf_token"]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.service.close()
        self.finder.close()


def make_served(data_dir: Path, pipeline, catalog_url: str | None, seed: bool = True, **config) -> Served:
    """An app on a fresh catalog with the five users (and their API tokens); with ``seed``, a collection
    of 10 LFW photos (photos 2 and 3 of five people) granted to ivan and inga."""
    from facefinder.interfaces.http.app import ServiceConfig, create_app
    from facefinder.services.server.accounts import Principal

    import_root = data_dir.parent / f"{data_dir.name}-imports"
    import_root.mkdir(parents=True, exist_ok=True)
    config.setdefault("login_rate", (10_000, 60.0))
    config.setdefault("search_rate", (10_000, 60.0))
    config.setdefault("import_roots", [import_root])
    finder = open_finder(data_dir, pipeline, catalog_url=catalog_url)
    app = create_app(finder=finder, config=ServiceConfig(**config))
    served = Served(app, finder, data_dir, catalog_url, import_root=import_root)
    accounts = served.service.accounts
    for user, role in USERS.items():
        principal = accounts.add_user(user, password(user), role, by="test-setup")
        served.tokens[user] = accounts.create_token(principal, "tests")
    if seed:
        gallery = data_dir.parent / f"{data_dir.name}-gallery"
        for person in LFW_PEOPLE:
            for number in (2, 3):
                target = gallery / person / lfw(person, number).name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(lfw(person, number), target)
        report = finder.ingest(gallery, COLLECTION, **POLICY)
        assert report.ingested == 10 and not report.failures, report
        admin = Principal(0, "test-setup", "admin")
        for user in GRANTED:
            accounts.grant(admin, user, COLLECTION)
        shutil.copy(lfw(LFW_PEOPLE[0], 1), import_root / "one.jpg")
    return served


def probe_bytes(person: str | None = None, number: int = 1) -> bytes:
    return lfw(person or "Tony_Blair", number).read_bytes()


def upload_probe(client, photo: bytes) -> dict:
    """A probe photo uploaded as ``client``'s user (POST /api/probes): the answer, its faces found."""
    response = client.post("/api/probes", files={"photo": ("probe.jpg", photo, "image/jpeg")})
    assert response.status_code == 201, response.text
    return response.json()


def run_search(
    client: TestClient, csrf: str | None = None, person: str = "Tony_Blair", case_id: str = "K-1", **fields
) -> dict:
    """Upload a probe and search its face 0 for a case, through the API; returns the search record."""
    headers = {"X-CSRF-Token": csrf} if csrf else {}
    response = client.post(
        "/api/probes", files={"photo": ("probe.jpg", probe_bytes(person), "image/jpeg")}, headers=headers
    )
    assert response.status_code == 201, response.text
    body = {
        "probe_id": response.json()["probe_id"],
        "face": 0,
        "case_id": case_id,
        "purpose": "find the person in the probe photo",
        "category": "missing person",
        **fields,
    }
    response = client.post("/api/searches", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def assert_error(response, status: int, code: str | None = None, field_name: str | None = ...) -> dict:
    """The response is an error with the stable shape {"error": {"code", "message", "field"}}."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    if field_name is not ...:
        assert body["error"]["field"] == field_name, body
    return body["error"]


__all__ = [
    "Backend",
    "COLLECTION",
    "GRANTED",
    "LFW",
    "POSTGRES_ENV",
    "Served",
    "USERS",
    "assert_error",
    "backend",
    "make_backend",
    "make_served",
    "password",
    "probe_bytes",
    "run_search",
]
