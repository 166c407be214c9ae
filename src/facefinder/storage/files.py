"""Index checkpoint files on disk: their names, the v3 header, durable writes and scrubbing.

Every file carries a CRC-32 of its bytes (the index file in its header, the vector file in the index
file's header), verified on load: a flipped bit is a damaged checkpoint, rebuilt from the catalog,
never a wrong vector served. The header also says what the file holds (journal position, face
count, id sum, largest id: a ``Fingerprint``), which is how the store proves index == catalog and
notices a catalog that lost committed data (see storage/opening.py).

A file is written beside its final name, fsynced, then renamed over it (``written_file`` and
``replace_file``): a crash leaves the old file or the new one, whole. Erased data is overwritten with
zeros before its file is removed (``scrub_file``).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

MAGIC = b"FFIDX3\0\0"  # + u32 header length + JSON header + u32 CRC-32 of the header, then the payload


@dataclass(frozen=True)
class Fingerprint:
    """A cheap summary of a set of face ids, computed the same way from an index and from the catalog:
    equal fingerprints mean (short of a contrived collision) the same faces."""

    faces: int
    id_sum: int
    max_id: int

    @classmethod
    def of(cls, ids: np.ndarray) -> Fingerprint:
        ids = np.asarray(ids, np.int64)
        return cls(len(ids), int(ids.sum(dtype=np.int64)) if len(ids) else 0, int(ids.max()) if len(ids) else 0)


def vector_path(path: Path, token: str) -> Path:
    """The full-precision vector file of the checkpoint ``token`` of index file ``path``."""
    return path.with_name(f"{path.name}.{token}.vec")


def index_files(path: Path) -> list[Path]:
    """An index file and the files beside it (full-precision vectors, unfinished writes)."""
    return [path, path.with_suffix(path.suffix + ".tmp"), *sorted(path.parent.glob(f"{path.name}.*vec*"))]


def header_bytes(header: dict) -> bytes:
    """An index file's start: the magic, the JSON header's length, the header, and its own CRC-32."""
    head = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + struct.pack("<I", zlib.crc32(head))


def parse_header(path: Path, handle: BinaryIO) -> dict:
    """The header of the index file open in ``handle``, which is left at the start of the payload."""
    start = handle.read(len(MAGIC) + 4)
    if not start.startswith(MAGIC):
        raise ValueError(f"{path}: not a facefinder index file of this version")
    (length,) = struct.unpack("<I", start[len(MAGIC) :])
    if length > 1 << 20:
        raise ValueError(f"{path}: damaged header")
    head = handle.read(length)
    crc = handle.read(4)
    if len(head) != length or len(crc) != 4 or struct.unpack("<I", crc)[0] != zlib.crc32(head):
        raise ValueError(f"{path}: checksum mismatch in its header (the file is damaged)")
    return json.loads(head)


@contextmanager
def written_file(tmp: Path) -> Iterator[BinaryIO]:
    """A new file, flushed and fsynced when the block ends; removed if writing it fails (a full disk)."""
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_file(tmp: Path, path: Path, scrub: bool) -> None:
    """Rename ``tmp`` over ``path`` durably; with ``scrub`` the replaced file's bytes are zeroed after the
    rename (through a handle opened before it), so a crash never leaves a zeroed file in its place."""
    old = open(path, "r+b") if scrub and path.exists() else None
    try:
        os.replace(tmp, path)
        fsync_dir(path.parent)
        if old is not None:
            size = os.fstat(old.fileno()).st_size
            chunk = b"\0" * (1 << 20)
            for start in range(0, size, len(chunk)):
                old.write(chunk[: min(len(chunk), size - start)])
            old.flush()
            os.fsync(old.fileno())
    finally:
        if old is not None:
            old.close()


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (the new name survives a power loss)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def scrub_file(path: Path, unlink: bool = True) -> None:
    """Overwrite a file with zeros in place (fsynced), then remove it unless ``unlink`` is False.

    On an ordinary filesystem (ext4, xfs) this overwrites the blocks that held the data. On
    copy-on-write filesystems (btrfs, ZFS), in snapshots, and inside SSD firmware, old copies can
    survive; full-disk encryption is the answer there (see the README, "Privacy and compliance").
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    with open(path, "r+b") as handle:
        chunk = b"\0" * (1 << 20)
        for start in range(0, size, len(chunk)):
            handle.write(chunk[: min(len(chunk), size - start)])
        handle.flush()
        os.fsync(handle.fileno())
    if unlink:
        path.unlink(missing_ok=True)
