"""Cross-process locks on a collection's index checkpoint.

Several processes (a server, CLI ingests, a Ray driver) may hold the same collection's index in
memory. Saving a checkpoint is "catch up with the journal, write the file, record it, prune the
journal"; two processes doing that at once, or one doing it from a stale copy, would lose faces. So
it runs under one lock per collection, held by whichever process saves:

* a SQLite catalog lives on this machine, so an ``flock`` on ``<data dir>/locks/collection-N.lock``
  (released by the kernel if the process dies, even by ``kill -9``);
* a PostgreSQL catalog may be shared by processes on several machines, so a session-level advisory
  lock on a connection of its own (released when that connection closes, or the process dies).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

CHECKPOINT_LOCK_CLASS = 0x66666978  # advisory lock namespace for index checkpoints ("ffix")

# Lock files this process holds now. A forked child (an ingest worker started while another thread of a
# server checkpoints) would share them and keep the lock held for as long as it lives: it closes its copies.
_held: set[int] = set()


def _close_inherited() -> None:
    for fd in list(_held):
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_inherited)


class CheckpointLocks:
    """``with locks.hold(collection_id):`` serialises checkpoints of one collection across processes."""

    def __init__(self, engine: Engine, lock_dir: Path) -> None:
        self.engine = engine
        self.lock_dir = lock_dir
        self.advisory = engine.url.get_backend_name() == "postgresql"

    @contextmanager
    def hold(self, collection_id: int) -> Iterator[None]:
        if self.advisory:
            with self._advisory(collection_id):
                yield
        else:
            with self._flock(collection_id):
                yield

    @contextmanager
    def _flock(self, collection_id: int) -> Iterator[None]:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_dir / f"collection-{collection_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        _held.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            _held.discard(fd)
            os.close(fd)  # closing releases the lock

    @contextmanager
    def _advisory(self, collection_id: int) -> Iterator[None]:
        args = {"cls": CHECKPOINT_LOCK_CLASS, "cid": int(collection_id) & 0x7FFFFFFF}
        with self.engine.connect() as connection:
            try:
                connection.execute(text("SELECT pg_advisory_lock(:cls, :cid)"), args)
                connection.commit()
                yield
            finally:  # also after an interrupt while waiting: a pooled connection must not keep the lock
                connection.execute(text("SELECT pg_advisory_unlock_all()"))
                connection.commit()
