"""Server-side ingests from import roots: no symbolic link leads a job out of its root, and a grant on
one collection opens no server folder of another (issue 11, findings 1 and 2). Through the real app
(FastAPI TestClient) on the real models; runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from helpers import lfw
from service_helpers import assert_error, backend, make_served  # noqa: F401
from sqlalchemy import select
from typer.testing import CliRunner

from facefinder.errors import FaceFinderError, ImageError
from facefinder.interfaces.cli import app as cli_app
from facefinder.services.server.accounts import Principal
from facefinder.services.server.import_roots import ImportRoots
from facefinder.services.sources.folders import iter_sources
from facefinder.storage.catalog import ImageRecord

POLICY_JSON = {"purpose": "p", "legal_basis": "l", "retention_days": 9}


@pytest.fixture
def fresh(backend, tmp_path, pipeline):
    """Factory of unseeded apps with their own config."""
    made = []

    def make(**config):
        app = make_served(tmp_path / f"data{len(made)}", pipeline, backend.new_url(), seed=False, **config)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


def create(app, *names: str) -> None:
    admin = app.client("admin")
    for name in names:
        assert admin.post("/api/collections", json={"name": name, **POLICY_JSON}).status_code == 201


def held(app) -> dict[str, str]:
    """sha256 -> source of every photo the catalog holds, in any collection."""
    with app.service.catalog.session() as session:
        return dict(session.execute(select(ImageRecord.sha256, ImageRecord.source)).all())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ingest(client, collection: str, path: str):
    return client.post("/api/ingests", json={"collection": collection, "path": path})


# ----- finding 1: symbolic links out of an import root ------------------------------------------------------
def test_links_out_of_the_import_root_are_failed_items_never_ingested(fresh, tmp_path):
    app = fresh()
    create(app, "imp")
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    secret_photo = outside / "secret.jpg"
    secret_photo.write_bytes(lfw("Vladimir_Putin", 1).read_bytes())
    (outside / "folder" / "also.jpg").write_bytes(lfw("Vladimir_Putin", 2).read_bytes())
    (outside / "notes.json").write_text(json.dumps({"notes": "the secret notes"}))
    (outside / "manifest.csv").write_text("path,notes\ngood.jpg,from the outside manifest\n")
    batch = app.import_root / "batch"
    batch.mkdir()
    (batch / "good.jpg").write_bytes(lfw("Tony_Blair", 1).read_bytes())
    (app.import_root / "elsewhere.jpg").write_bytes(lfw("Tony_Blair", 2).read_bytes())
    (batch / "inside-link.jpg").symlink_to(app.import_root / "elsewhere.jpg")  # stays inside: fine
    (batch / "out.jpg").symlink_to(secret_photo)
    (batch / "hop.jpg").symlink_to(batch / "out.jpg")  # a link to a link that leads out
    (batch / "out-folder").symlink_to(outside / "folder")
    (batch / "sided.jpg").write_bytes(lfw("Colin_Powell", 1).read_bytes())
    (batch / "sided.jpg.json").symlink_to(outside / "notes.json")
    (batch / "manifest.csv").symlink_to(outside / "manifest.csv")

    admin = app.client("admin")
    response = ingest(admin, "imp", "batch")
    assert response.status_code == 202, response.text
    job = app.service.jobs.wait(response.json()["id"])
    assert job.state == "done", job.error
    reasons = {Path(f["source"]).name: f["reason"] for f in job.report["failures"]}
    assert reasons == {
        name: "symlink-escape" for name in ("out.jpg", "hop.jpg", "out-folder", "sided.jpg", "manifest.csv")
    }
    assert str(outside) not in json.dumps(job.report)  # where a link leads is not shown
    assert job.report["ingested"] == 2  # good.jpg and the link that stays inside

    photos = held(app)
    assert sha(secret_photo) not in photos and sha(outside / "folder" / "also.jpg") not in photos
    assert sha(batch / "sided.jpg") not in photos  # it waits for a sidecar inside the root
    assert not any(str(outside) in source for source in photos.values())
    with app.service.catalog.session() as session:
        notes = list(session.scalars(select(ImageRecord.notes)))
    assert "the secret notes" not in notes and "from the outside manifest" not in notes

    failures = {Path(f["source"]).name: f for f in admin.get("/api/collections/imp/failures").json()}
    assert failures["out.jpg"]["reason"] == "symlink-escape"
    assert "outside the import root" in failures["out.jpg"]["detail"]


def test_a_link_swapped_in_after_the_listing_is_not_read(tmp_path):
    """The fence checks the file it actually opens, not only what the listing saw."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "a.jpg").write_bytes(lfw("Tony_Blair", 1).read_bytes())
    (outside / "b.jpg").write_bytes(lfw("Tony_Blair", 2).read_bytes())
    items = list(iter_sources(root, confine_to=root))
    assert [Path(i.source).name for i in items] == ["a.jpg"] and items[0].location is None
    (root / "a.jpg").unlink()
    (root / "a.jpg").symlink_to(outside / "b.jpg")
    with pytest.raises(ImageError) as caught:
        items[0].read()
    assert caught.value.reason == "symlink-escape"
    # without a fence (the command line: the operator owns the disk) links are followed as before
    assert [i.read() for i in iter_sources(root)] == [(outside / "b.jpg").read_bytes()]


# ----- finding 2: import roots and collection grants --------------------------------------------------------
def test_an_investigator_cannot_ingest_another_collections_folder(fresh, tmp_path):
    """ivan holds a grant on 'a' only. The folder of 'b' (bound to it) and the admins' import root
    are refused him (403, on the field 'path'), whichever collection he names; his own folder works."""
    folder_a, folder_b = tmp_path / "folder-a", tmp_path / "folder-b"
    for folder, person in ((folder_a, "Tony_Blair"), (folder_b, "Vladimir_Putin")):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "one.jpg").write_bytes(lfw(person, 1).read_bytes())
    (folder_a / "sub" / "to-b.jpg").symlink_to(folder_b / "sub" / "one.jpg")
    app = fresh(collection_import_roots={"a": [folder_a], "b": [folder_b]})
    create(app, "a", "b")
    (app.import_root / "admins.jpg").write_bytes(lfw("Colin_Powell", 1).read_bytes())
    admin, ivan, olga = app.client("admin"), app.client("ivan"), app.client("olga")
    assert admin.put("/api/users/ivan/grants/a").status_code == 200

    for path in (str(folder_b), str(folder_b / "sub"), str(folder_a / ".." / "folder-b"), str(app.import_root)):
        error = assert_error(ingest(ivan, "a", path), 403, "forbidden", "path")
        assert error["message"].startswith("path: ")
    assert_error(ingest(ivan, "b", str(folder_b)), 403, "forbidden")  # no grant on b
    assert_error(ingest(olga, "a", str(folder_a)), 403, "forbidden")  # no grant at all
    assert_error(ingest(ivan, "a", "/etc"), 400, "bad_request", "path")  # outside every root
    assert not app.service.jobs.list(Principal(0, "admin", "admin"))

    # his own collection's folder: relative paths start there; a link into b's folder stays unread
    response = ingest(ivan, "a", "sub")
    assert response.status_code == 202, response.text
    job = app.service.jobs.wait(response.json()["id"])
    assert job.state == "done" and job.report["ingested"] == 1, job.report
    assert [(Path(f["source"]).name, f["reason"]) for f in job.report["failures"]] == [("to-b.jpg", "symlink-escape")]
    assert sha(folder_b / "sub" / "one.jpg") not in held(app)

    # admins may use the unbound roots for any collection, and each bound root for its own collection
    for collection, path in (("b", str(folder_b)), ("a", str(app.import_root / "admins.jpg"))):
        response = ingest(admin, collection, path)
        assert response.status_code == 202, response.text
        assert app.service.jobs.wait(response.json()["id"]).report["ingested"] == 1
    assert {c["name"]: c["images"] for c in admin.get("/api/collections").json()} == {"a": 2, "b": 1}
    assert_error(ingest(admin, "a", str(folder_b)), 403, "forbidden", "path")  # b's folder is b's, for admins too


def test_only_bound_roots_investigators_get_a_clear_refusal(fresh):
    app = fresh()  # one unbound import root: admins only
    create(app, "c")
    assert app.client("admin").put("/api/users/ivan/grants/c").status_code == 200
    (app.import_root / "x.jpg").write_bytes(lfw("Tony_Blair", 1).read_bytes())
    error = assert_error(ingest(app.client("ivan"), "c", "x.jpg"), 403, "forbidden", "path")
    assert "--import-root-for c=DIR" in error["message"]
    assert ingest(app.client("admin"), "c", "x.jpg").status_code == 202


def test_folders_of_different_collections_may_not_nest(tmp_path):
    outer, inner = tmp_path / "outer", tmp_path / "outer" / "inner"
    inner.mkdir(parents=True)
    with pytest.raises(FaceFinderError, match="lie one inside the other"):
        ImportRoots([], {"a": [outer], "b": [inner]})
    shared = ImportRoots([], {"a": [outer], "b": [outer]})  # the same folder, bound to both: shared
    ivan = Principal(7, "ivan", "investigator")
    assert shared.usable(ivan, "a") == shared.usable(ivan, "b") == [outer.resolve()]
    assert shared.usable(ivan, "c") == []

    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data"), "serve"]
    result = runner.invoke(cli_app, [*data, "--import-root-for", "nonsense"])
    assert result.exit_code == 2 and "import-root-for: 'nonsense' is not COLLECTION=DIR" in result.stderr
    result = runner.invoke(cli_app, [*data, "--import-root-for", f"a={tmp_path / 'missing'}"])
    assert result.exit_code == 2 and "is not a folder" in result.stderr
    result = runner.invoke(cli_app, [*data, "--import-root-for", f"a={outer}", "--import-root-for", f"b={inner}"])
    assert result.exit_code == 2 and "lie one inside the other" in result.stderr, result.output


def test_a_confined_ingest_reads_ordinary_files(tmp_path):
    """A confined ingest of ordinary files reads them all (the fence costs nothing else)."""
    (tmp_path / "a").mkdir()
    for n in (1, 2):
        (tmp_path / "a" / f"{n}.jpg").write_bytes(lfw("Tony_Blair", n).read_bytes())
    items = list(iter_sources(tmp_path / "a", confine_to=tmp_path))
    assert [len(i.read()) for i in items] == [os.path.getsize(tmp_path / "a" / f"{n}.jpg") for n in (1, 2)]


def test_results_read_import_roots_and_uploads_through_a_fence(tmp_path, pipeline):
    """The service hands Cases every import root and the uploads folder as fenced folders."""
    from facefinder.interfaces.http.app import create_app
    from facefinder.interfaces.http.deps import ServiceConfig

    bound, admin_root = tmp_path / "bound", tmp_path / "admin"
    bound.mkdir()
    admin_root.mkdir()
    config = ServiceConfig(import_roots=[admin_root], collection_import_roots={"a": [bound]})
    app = create_app(tmp_path / "data", config=config)
    try:
        fenced = set(app.state.service.cases.fenced_sources)
        assert {bound.resolve(), admin_root.resolve(), (tmp_path / "data" / "uploads")} <= fenced
    finally:
        app.state.service.close()


def test_another_collections_folder_inside_an_admin_root_stays_its_own(tmp_path):
    """A folder bound to collection b serves b only, also when an unbound admin root holds it."""
    from facefinder.services.server.accounts import Principal
    from facefinder.services.server.import_roots import ImportForbidden, ImportRoots

    admin_root = tmp_path / "all"
    bound_b = admin_root / "b"
    bound_b.mkdir(parents=True)
    (admin_root / "loose").mkdir()
    roots = ImportRoots([admin_root], {"b": [bound_b]})
    admin = Principal(1, "admin", "admin")
    assert roots.resolve(admin, "a", str(admin_root / "loose")).path == (admin_root / "loose").resolve()
    with pytest.raises(ImportForbidden):
        roots.resolve(admin, "a", str(bound_b))
    assert roots.resolve(admin, "b", str(bound_b)).path == bound_b.resolve()
