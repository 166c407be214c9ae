"""A process that writes to, reads from or erases in a store, for the fault tests (run as a script).

    python store_worker.py write DATA_DIR TAG PHOTOS CHECKPOINT_EVERY
    python store_worker.py read DATA_DIR SECONDS        (open, search now and then, close at the end)
    python store_worker.py erase DATA_DIR SEED COUNT    (erase random photos, as the privacy service does)
    python store_worker.py churn DATA_DIR TAG           (write, checkpoint, erase, compact: until killed)

The catalog URL and the vector backend come from FACEFINDER_DATABASE_URL and FACEFINDER_VECTORS.
With FF_WORKER_EXIT_HARD set, ``write`` checkpoints the index and exits without closing the catalog, so
the photos it wrote are still in SQLite's write-ahead log. Embeddings are random unit vectors derived from (tag, photo number), so a test can recompute them.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import numpy as np
from sqlalchemy import select

from facefinder.storage.catalog import ImageRecord
from facefinder.storage.store import FaceStore, NewFace, NewImage

DIM = 192
COLLECTION = "c"
FACES_PER_PHOTO = 2


def embedding(tag: str, photo: int, face: int) -> np.ndarray:
    seed = int.from_bytes(f"{tag}/{photo}/{face}".encode(), "little") % (2**63)
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def photo(tag: str, number: int) -> tuple[NewImage, list[NewFace]]:
    """Photo ``number`` of ``tag``: its own bytes (sha256 stand-in) and FACES_PER_PHOTO faces."""
    faces = [
        NewFace([0, 0, 10, 10], [[1, 1]] * 5, 0.9, 0.8, {}, embedding(tag, number, face), b"thumb")
        for face in range(FACES_PER_PHOTO)
    ]
    return NewImage(f"{tag}-{number}", f"/photos/{tag}/{number}.jpg", 100, 100), faces


def open_store(data_dir: str) -> FaceStore:
    return FaceStore(Path(data_dir), os.environ.get("FACEFINDER_DATABASE_URL"), os.environ.get("FACEFINDER_VECTORS"))


def write(data_dir: str, tag: str, photos: int, checkpoint_every: int) -> None:
    store = open_store(data_dir)
    cid = store.collection(COLLECTION).id
    for number in range(photos):
        store.add_image(cid, *photo(tag, number), "test-model")
        if checkpoint_every and number % checkpoint_every == checkpoint_every - 1:
            store.checkpoint()
    if os.environ.get("FF_WORKER_EXIT_HARD"):  # leave without closing: SQLite's WAL stays as it is
        store.checkpoint()
        os._exit(0)
    store.close()


def read(data_dir: str, seconds: float) -> None:
    store = open_store(data_dir)
    cid = store.collection(COLLECTION).id
    query = embedding("probe", 0, 0)[None, :]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        store.search([cid], query, 5)
        time.sleep(0.2)
    store.close()


def erase_one(store: FaceStore, rng: random.Random) -> None:
    """Erase a random stored photo as the privacy service does: delete, then rewrite the index files."""
    with store.catalog.session() as session:
        ids = list(session.scalars(select(ImageRecord.id)))
    if ids:
        store.delete_images([rng.choice(ids)])
        store.compact()


def erase(data_dir: str, seed: int, count: int) -> None:
    store = open_store(data_dir)
    rng = random.Random(seed)
    for _ in range(count):
        erase_one(store, rng)
        time.sleep(0.05)
    store.close()


def churn(data_dir: str, tag: str) -> None:
    store = open_store(data_dir)
    cid = store.collection(COLLECTION).id
    rng = random.Random(tag)
    for round_ in range(10_000):
        store.add_images(cid, [photo(tag, round_ * 10 + n) for n in range(4)], "test-model")
        store.checkpoint()
        erase_one(store, rng)


if __name__ == "__main__":
    command, data_dir, *rest = sys.argv[1:]
    if command == "write":
        write(data_dir, rest[0], int(rest[1]), int(rest[2]))
    elif command == "read":
        read(data_dir, float(rest[0]))
    elif command == "churn":
        churn(data_dir, rest[0])
    elif command == "erase":
        erase(data_dir, int(rest[0]), int(rest[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")
