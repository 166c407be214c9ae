"""Photos uploaded through the server are kept under <data dir>/uploads; erasing them removes the copy."""

import shutil

from helpers import POLICY, lfw


def test_erasing_an_uploaded_photo_removes_its_copy(tmp_path, make_finder):
    data = tmp_path / "data"
    ff = make_finder(data)
    uploads = data / "uploads" / "job-1"
    uploads.mkdir(parents=True)
    shutil.copy(lfw("Tony_Blair", 1), uploads / "a.jpg")
    shutil.copy(lfw("Tony_Blair", 2), uploads / "b.jpg")
    own = tmp_path / "own"
    own.mkdir()
    shutil.copy(lfw("Colin_Powell", 1), own / "c.jpg")
    ff.ingest(uploads, collection="up", **POLICY)
    ff.ingest(own, collection="own", **POLICY)
    with ff.store.catalog.session() as session:
        from sqlalchemy import select

        from facefinder.storage.catalog import ImageRecord

        ids = dict(session.execute(select(ImageRecord.source, ImageRecord.id)).all())

    ff.delete_image(ids[str(uploads / "a.jpg")])
    assert not (uploads / "a.jpg").exists() and (uploads / "b.jpg").exists()

    ff.delete_image(ids[str(own / "c.jpg")])
    assert (own / "c.jpg").exists()  # the operator's own files are never touched

    ff.delete_collection("up")
    assert not (uploads / "b.jpg").exists()
