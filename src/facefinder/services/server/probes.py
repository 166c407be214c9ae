"""Analysed probe photos, held in memory for their owner while they pick the face to search."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from facefinder.errors import NotFound
from facefinder.services.server.accounts import Principal


@dataclass
class ProbeFaceData:
    """One face found in a probe photo: where, how good, its template and its thumbnail."""

    box: list[float]
    quality: float
    embedding: np.ndarray
    thumbnail: bytes  # JPEG of the aligned 112x112 crop


@dataclass
class Probe:
    """An analysed probe photo, held in memory only (see ProbeCache)."""

    id: str
    owner_id: int
    sha256: str
    width: int
    height: int
    faces: list[ProbeFaceData]
    photo: bytes | None = None  # kept only when probe retention > 0
    created: float = field(default_factory=time.monotonic)


class ProbeCache:
    """Analysed probes by random id, for their owner only, for ``ttl`` seconds; never written to disk."""

    def __init__(self, ttl: float = 1800, capacity: int = 64) -> None:
        self.ttl, self.capacity = ttl, capacity
        self._items: dict[str, Probe] = {}
        self._lock = threading.Lock()

    def put(self, probe: Probe) -> None:
        with self._lock:
            self._expire()
            while len(self._items) >= self.capacity:
                self._items.pop(next(iter(self._items)))
            self._items[probe.id] = probe

    def get(self, principal: Principal, probe_id: str) -> Probe:
        with self._lock:
            self._expire()
            probe = self._items.get(probe_id)
        if probe is None or probe.owner_id != principal.id:
            raise NotFound(f"probe {probe_id!r} does not exist or has expired: upload the photo again")
        return probe

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, p in self._items.items() if now - p.created > self.ttl]:
            del self._items[key]
