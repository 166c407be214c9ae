"""kill -9 in the middle of `facefinder ingest`, then resume: nothing lost, nothing doubled.

The CLI runs in a subprocess with two worker processes (the default is one per core). Once the catalog holds some of the
photos the ingest process is SIGKILLed (no cleanup, no checkpoint of the FAISS index); its orphaned
workers are killed too. Re-running the same command must then store exactly the missing photos,
and the reopened index must hold exactly the catalog's faces.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import GALLERY, LFW, POLICY_ARGS, PROBES, cli_command
from sqlalchemy import select

from facefinder.storage.catalog import FaceRecord, ImageRecord
from facefinder.storage.store import FaceStore
from facefinder.vision.image import read_image


def count_images(db: Path) -> int:
    """Images committed so far, read the way another process would (WAL: never blocks the writer)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM images").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet, or a checkpoint in progress
        return 0


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """61 photos: the demo gallery (32 crops + 6 group photos), the 8 demo probes, 15 LFW photos."""
    folder = tmp_path / "photos"
    shutil.copytree(GALLERY, folder / "gallery")
    shutil.copytree(PROBES, folder / "probes")
    shutil.copytree(LFW, folder / "lfw")
    assert len([p for p in folder.rglob("*") if p.is_file()]) == 61
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, 24], ids=["early", "midway"])
def test_ingest_killed_midway_resumes_without_loss_or_duplicates(
    tmp_path, photo_folder, models_dir, pipeline, kill_after
):
    data = tmp_path / "data"
    db = data / "catalog.db"
    env = {**os.environ, "FACEFINDER_DATA_DIR": str(data), "FACEFINDER_MODELS_DIR": str(models_dir)}
    command = [
        *cli_command(),
        "ingest",
        str(photo_folder),
        "--collection",
        "photos",
        *POLICY_ARGS,
        "--workers",
        "2",
        "--json",
    ]
    total = 61

    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )  # its own process group: we can kill its workers too
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and count_images(db) < kill_after:
            time.sleep(0.005)
        assert proc.poll() is None, "the ingest finished before it could be killed: give it more photos"
        assert count_images(db) >= kill_after, "the ingest stored too little within 120 s"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_group(proc.pid)  # the orphaned worker processes
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    stored_at_kill = count_images(db)
    assert kill_after <= stored_at_kill < total, f"killed too late: {stored_at_kill} of {total} photos stored"

    # After the kill: whole photos only, and the index (never checkpointed) replays from the journal.
    store = FaceStore(data)
    cid = store.collection("photos").id
    with store.catalog.session() as session:
        faces_at_kill = len(session.scalars(select(FaceRecord.id)).all())
    assert store.index_size(cid) == faces_at_kill > 0
    store.catalog.close()  # no checkpoint: leave the on-disk state exactly as the kill left it

    # Resume: the same command again.
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["failures"] == []
    assert report["duplicates"] == stored_at_kill
    assert report["ingested"] == total - stored_at_kill

    # Every photo exactly once, with exactly the faces an uninterrupted run finds.
    expected = {
        str(path): len(faces)
        for path in sorted(p for p in photo_folder.rglob("*") if p.is_file())
        for faces in pipeline.analyze([read_image(str(path))])
    }
    store = FaceStore(data)
    with store.catalog.session() as session:
        images = session.execute(select(ImageRecord.id, ImageRecord.source, ImageRecord.sha256)).all()
        faces = session.execute(select(FaceRecord.id, FaceRecord.image_id, FaceRecord.box)).all()
    assert len(images) == total
    assert len({i.sha256 for i in images}) == total and len({i.source for i in images}) == total
    per_image = Counter(f.image_id for f in faces)
    assert {i.source: per_image.get(i.id, 0) for i in images} == expected
    assert len({(f.image_id, tuple(f.box)) for f in faces}) == len(faces)  # no face stored twice
    assert store.index_size(cid) == len(faces) == sum(expected.values())
    some_face = store.faces([faces[-1].id])[faces[-1].id][0]
    [[(hit, score)]] = store.search([cid], np.frombuffer(some_face.embedding, np.float32)[None], 1)
    assert hit == some_face.id and score > 0.999
    store.close()

    # And after a clean reopen (from the checkpoint the resumed run wrote) nothing changes.
    reopened = FaceStore(data)
    assert reopened.index_size(cid) == len(faces)
    reopened.close()
