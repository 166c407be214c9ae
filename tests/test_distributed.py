"""Distributed ingest on a real local Ray cluster: the same catalog as a local ingest, row for row.

The Ray side writes to PostgreSQL and Milvus when the CI servers are up (FACEFINDER_TEST_POSTGRES_URL,
FACEFINDER_TEST_MILVUS_URI), else to SQLite and FAISS; the local ingest it is compared with always
uses SQLite and FAISS, so the comparison also shows the backends store the same thing.
"""

from __future__ import annotations

import os
import shutil
import uuid
import zipfile

import pytest
from helpers import LFW_PEOPLE, POLICY, lfw, open_finder
from service_helpers import backend  # noqa: F401
from sqlalchemy import select

from facefinder.storage.catalog import FaceRecord, ImageRecord, IngestFailure

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

IMAGE_COLUMNS = (
    "id",
    "sha256",
    "source",
    "width",
    "height",
    "source_url",
    "captured_at",
    "case_id",
    "consent_id",
    "notes",
)
FACE_COLUMNS = (
    "id",
    "image_id",
    "collection_id",
    "box",
    "landmarks",
    "detector_score",
    "quality",
    "quality_parts",
    "model_id",
    "embedding",
    "thumbnail",
)


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def photos(tmp_path):
    """Fifteen files as an operator might hold them: a folder with sidecars, a zip, a corrupt file and
    a byte-identical copy of it (each copy gets its own failure row), and the same photo twice."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for person in LFW_PEOPLE:
        for n in (1, 2):
            shutil.copy(lfw(person, n), folder / f"{person}_{n}.jpg")
    (folder / f"{LFW_PEOPLE[0]}_1.jpg.json").write_text('{"source_url": "https://example.org/1", "case_id": "K-1"}')
    shutil.copy(lfw(LFW_PEOPLE[1], 1), folder / "copy-of-the-same-photo.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    shutil.copy(folder / "broken.jpg", folder / "broken-again.jpg")  # analysed in the same batch as broken.jpg
    with zipfile.ZipFile(folder / "archive.zip", "w") as archive:
        archive.write(lfw(LFW_PEOPLE[2], 3), "inner/a.jpg")
        archive.writestr("inner/b.jpg", b"garbage")
    return folder


def catalog_rows(ff) -> tuple[list, list, set]:
    with ff.store.catalog.session() as session:
        images = [
            tuple(getattr(r, c) for c in IMAGE_COLUMNS)
            for r in session.scalars(select(ImageRecord).order_by(ImageRecord.id))
        ]
        faces = [
            tuple(getattr(r, c) for c in FACE_COLUMNS)
            for r in session.scalars(select(FaceRecord).order_by(FaceRecord.id))
        ]
        failures = {(r.source, r.reason, r.detail) for r in session.scalars(select(IngestFailure))}
    return images, faces, failures


def milvus_vectors() -> str | None:
    uri = os.environ.get("FACEFINDER_TEST_MILVUS_URI")
    return f"{uri}/ray{uuid.uuid4().hex[:10]}" if uri else None


def test_ray_ingest_stores_what_a_local_ingest_stores(tmp_path, photos, ray_cluster, backend, pipeline):
    local = open_finder(tmp_path / "local", pipeline, workers=2)
    local_report = local.ingest(photos, "people", **POLICY)
    distributed = open_finder(tmp_path / "ray", catalog_url=backend.new_url(), vectors=milvus_vectors(), workers=2)
    ray_report = distributed.ingest(photos, "people", ray="local", **POLICY)

    for field in ("seen", "ingested", "duplicates", "faces", "photos_without_faces"):
        assert getattr(ray_report, field) == getattr(local_report, field), field
    assert (ray_report.ingested, ray_report.duplicates, len(ray_report.failures)) == (11, 1, 3)
    broken = {(f.source, f.reason) for f in ray_report.failures if "broken" in f.source}
    assert broken == {(str(photos / "broken.jpg"), "corrupt"), (str(photos / "broken-again.jpg"), "corrupt")}
    assert sorted((f.source, f.reason, f.detail) for f in ray_report.failures) == sorted(
        (f.source, f.reason, f.detail) for f in local_report.failures
    )
    ours, theirs = catalog_rows(distributed), catalog_rows(local)
    for name, a, b in zip(("images", "faces", "failures"), ours, theirs):
        assert len(a) == len(b), name
        for row_a, row_b in zip(a, b) if name != "failures" else [(a, b)]:
            assert row_a == row_b, name  # bit for bit: embeddings, thumbnails, boxes

    [record] = distributed.search(lfw(LFW_PEOPLE[0], 3))
    assert LFW_PEOPLE[0] in record.candidates[0].source
    [first] = [c for c in record.candidates if c.source.endswith(f"{LFW_PEOPLE[0]}_1.jpg")]
    assert first.provenance["case_id"] == "K-1"
    cid = distributed.store.collection("people").id
    assert distributed.store.index_size(cid) == ray_report.faces

    again = distributed.ingest(photos, "people", ray="local")  # resumable: what is stored is skipped
    assert (again.ingested, again.duplicates, again.faces) == (0, 12, 0)
    shutil.copy(lfw(LFW_PEOPLE[3], 3), photos / "new.jpg")
    more = distributed.ingest(photos, "people", ray="local")
    assert (more.ingested, more.duplicates) == (1, 12)
    assert distributed.store.index_size(cid) == ray_report.faces + more.faces
    local.close()
    distributed.close()
