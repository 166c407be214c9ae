"""Real processes on one data directory, as a team works: several CLI ingests at once, and `facefinder
serve` started and stopped during an ingest while it searches and erases through its API.

Afterwards every stored photo must be found by searching itself (rank 1, score >= 0.99), the index must
hold exactly the catalog's faces, no photo may be stored twice, and no erased face may come back.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import GALLERY, LFW, POLICY_ARGS, cli_command, open_finder
from integrity import assert_sound, postgres_and_milvus
from PIL import Image
from sqlalchemy import func, select

from facefinder.storage.catalog import FaceRecord, ImageRecord
from facefinder.storage.store import FaceStore

PEOPLE = sorted(p.name for p in GALLERY.iterdir() if p.is_dir() and p.name != "group")


def folder_of(tmp_path: Path, name: str, sources: list[Path]) -> Path:
    """A folder holding copies of the photos under ``sources`` (same bytes: overlaps are duplicates)."""
    folder = tmp_path / name
    for source in sources:
        for photo in sorted(source.rglob("*.jpg")) + sorted(source.rglob("*.png")):
            target = folder / source.name / photo.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, target)
    return folder


def variants_of(tmp_path: Path, name: str, sources: list[Path], copies: int) -> Path:
    """``copies`` re-encodings of every photo under ``sources`` (other bytes, same faces): a folder big
    enough that an ingest is still running while a server starts, works and stops beside it."""
    folder = tmp_path / name
    folder.mkdir()
    for source in sources:
        for photo in sorted(source.rglob("*.jpg")):
            image = Image.open(photo).convert("RGB")
            for copy in range(copies):
                image.save(folder / f"{photo.stem}-{copy}.jpg", quality=80 + copy)
    return folder


def cli(data: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*cli_command(), "--data-dir", str(data), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def done(process: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


def assert_every_photo_finds_itself(
    data: Path, pipeline, folders: list[Path], url: str | None = None, vectors: str | None = None
) -> int:
    """Search each source photo through the real pipeline: its own stored face comes first at >= 0.99."""
    ff = open_finder(data, pipeline, catalog_url=url, vectors=vectors)
    try:
        with ff.store.catalog.session() as session:
            stored = dict(session.execute(select(ImageRecord.source, ImageRecord.id)).all())
            assert session.scalar(select(func.count()).select_from(ImageRecord)) == len(
                set(session.scalars(select(ImageRecord.sha256)))
            )  # no photo twice
        for source, image_id in stored.items():
            if "/group/" in source:
                continue  # several faces each; the single-face photos suffice here
            results = ff.search(source, top_k=3, threshold=-1.0)
            assert results and results[0].candidates, source
            best = results[0].candidates[0]
            assert best.score >= 0.99, (source, best)
        return len(stored)
    finally:
        ff.close()


@pytest.fixture(params=["sqlite+faiss", "postgresql+milvus"])
def servers(request, monkeypatch):
    """(catalog url, vectors): None for the defaults, else a fresh PostgreSQL database and Milvus namespace
    that the CLI processes read from FACEFINDER_DATABASE_URL and FACEFINDER_VECTORS."""
    if request.param == "sqlite+faiss":
        yield None, None
        return
    yield from postgres_and_milvus(monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("runs", [2, 3])
def test_concurrent_ingests_of_overlapping_folders(tmp_path, pipeline, runs, servers):
    """The same folder twice, the second a moment later (most of its photos turn out to be duplicates
    stored by the first, so its index goes stale), and a third folder overlapping both."""
    if servers[0] and runs == 3:
        pytest.skip("PostgreSQL + Milvus: the two-run case suffices (a Milvus round trip per batch is slow)")
    data = tmp_path / "data"
    big = variants_of(tmp_path, "big", [GALLERY / p for p in PEOPLE] + [LFW], copies=5)
    other = folder_of(tmp_path, "other", [LFW, GALLERY / "group"])
    done(cli(data, "collections", "create", "c", *POLICY_ARGS))
    started = [cli(data, "ingest", str(big), "-c", "c", "--workers", "1", "--json")]
    time.sleep(1.5)
    started.append(cli(data, "ingest", str(big), "-c", "c", "--workers", "1", "--json"))
    if runs == 3:
        started.append(cli(data, "ingest", str(other), "-c", "c", "--workers", "1", "--json"))
    reports = [json.loads(done(run)) for run in started]
    folders = [big, other][: runs - 1]
    unique = len({p.read_bytes() for f in folders for p in f.rglob("*.*")})
    assert sum(r["ingested"] for r in reports) == unique
    assert sum(r["ingested"] + r["duplicates"] for r in reports) == sum(r["seen"] for r in reports)
    assert assert_sound(data, *servers) > 0
    assert assert_every_photo_finds_itself(data, pipeline, folders, *servers) == unique


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, token: str, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
    request = urllib.request.Request(
        url + path,
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {token}", **({"Content-Type": content_type} if content_type else {})},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def upload(url: str, token: str, photo: Path) -> dict:
    boundary = "ffboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="{photo.name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return api(url, token, "POST", "/api/probes", body, f"multipart/form-data; boundary={boundary}")


def start_server(data: Path, port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [*cli_command(), "--data-dir", str(data), "serve", "--port", str(port)],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                return process
        except OSError:
            assert process.poll() is None, log.read_text()
            time.sleep(0.25)
    pytest.fail(f"the server did not start: {log.read_text()[-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["during", "after"])
def test_serve_started_during_an_ingest_searching_and_erasing_then_stopped(tmp_path, pipeline, stop):
    """The server opens the store mid-ingest and searches and erases through its API; it stops while the
    ingest still runs, or after it ended (then its copy of the index is the stale one at shutdown)."""
    data = tmp_path / "data"
    first = folder_of(tmp_path, "first", [GALLERY / p for p in PEOPLE[:3]])
    rest = variants_of(tmp_path, "rest", [GALLERY / p for p in PEOPLE[3:]] + [LFW], copies=10)
    done(cli(data, "collections", "create", "c", *POLICY_ARGS))
    done(cli(data, "ingest", str(first), "-c", "c", "--workers", "1"))
    add = subprocess.run(
        [*cli_command(), "--data-dir", str(data), "users", "add", "admin", "--role", "admin", "--password-stdin"],
        input="a long enough password\n",
        text=True,
        capture_output=True,
    )
    assert add.returncode == 0, add.stderr
    token = done(cli(data, "users", "token", "admin")).strip().splitlines()[-1]

    ingest = cli(data, "ingest", str(rest), "-c", "c", "--workers", "1")
    port = free_port()
    server = start_server(data, port, tmp_path / "server.log")
    url = f"http://127.0.0.1:{port}"
    with FaceStore(data).catalog.session() as session:
        erasable = list(
            session.execute(
                select(ImageRecord.id).where(ImageRecord.source.like("%/first/%")).order_by(ImageRecord.id)
            ).scalars()
        )[:3]
        erased_faces = set(session.scalars(select(FaceRecord.id).where(FaceRecord.image_id.in_(erasable))))
    for image_id in erasable:  # erase through the server while the CLI ingest writes
        api(url, token, "DELETE", f"/api/images/{image_id}")
        probe = upload(url, token, next((GALLERY / PEOPLE[0]).iterdir()))
        found = api(
            url,
            token,
            "POST",
            "/api/searches",
            json.dumps(
                {
                    "probe_id": probe["probe_id"],
                    "face": 0,
                    "case_id": "K-1",
                    "purpose": "fault test",
                    "category": "criminal investigation",
                }
            ).encode(),
            "application/json",
        )
        assert found["candidates"]
    if stop == "during":
        assert ingest.poll() is None, "the ingest ended before the server stopped: use a larger folder"
    else:
        done(ingest)
    server.terminate()  # its checkpoint at shutdown must not win over the ingest's
    assert server.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    assert "Application shutdown complete" in (tmp_path / "server.log").read_text()
    done(ingest)
    assert assert_sound(data, erased=erased_faces) > 0
    assert assert_every_photo_finds_itself(data, pipeline, [first, rest]) > 0
