"""Analysed probe photos, held in memory for their owner while they pick the face to search.

Each user has their own slots (the newest ``per_user`` probes), so one user's burst of uploads never
evicts a colleague's probe. Memory stays bounded across users too: at most ``max_users`` users are
tracked (the one idle longest is forgotten first), and when the probes held pass ``max_bytes``
(a kept probe photo can be megabytes), the oldest probes of the user holding the most bytes go
first. A probe that is gone, by age or by eviction, is a NotFound that says to upload the photo again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from facefinder.errors import NotFound
from facefinder.services.server.accounts import Principal

PROBE_GONE = "probe expired or replaced by newer uploads: upload the photo again"


@dataclass
class ProbeFaceData:
    """One face found in a probe photo: where, how good, its template and its thumbnail."""

    box: list[float]
    quality: float
    embedding: np.ndarray
    thumbnail: bytes  # JPEG of the aligned 112x112 crop
    video_time: float | None = None  # a video probe: when this face (its track's best) was seen, in seconds


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

    @property
    def size(self) -> int:
        """Bytes this probe holds (photo, thumbnails, templates), for the cache's memory cap."""
        faces = sum(len(f.thumbnail) + f.embedding.nbytes for f in self.faces)
        return len(self.photo or b"") + faces + 256


class ProbeCache:
    """Analysed probes by random id, for their owner only, for ``ttl`` seconds; never written to disk.

    Slots are per user (see the module docstring): the newest ``per_user`` probes of each user,
    for at most ``max_users`` users and ``max_bytes`` in all.
    """

    def __init__(
        self, ttl: float = 1800, per_user: int = 8, max_users: int = 1000, max_bytes: int = 512 * 1024 * 1024
    ) -> None:
        self.ttl, self.per_user, self.max_users, self.max_bytes = ttl, per_user, max_users, max_bytes
        # owner id -> (probe id -> probe), both oldest first; a user moves to the end when they upload
        self._users: OrderedDict[int, OrderedDict[str, Probe]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, probe: Probe) -> None:
        """Hold a new probe; the owner's oldest goes when they hold ``per_user``, then the caps apply."""
        with self._lock:
            self._expire()
            mine = self._users.setdefault(probe.owner_id, OrderedDict())
            self._users.move_to_end(probe.owner_id)
            mine[probe.id] = probe
            self._bytes += probe.size
            while len(mine) > self.per_user:
                self._drop(probe.owner_id, next(iter(mine)))
            while len(self._users) > self.max_users:
                oldest_user = next(iter(self._users))
                for probe_id in list(self._users[oldest_user]):
                    self._drop(oldest_user, probe_id)
            while self._bytes > self.max_bytes and self._shed(keep=probe.id):
                pass

    def get(self, principal: Principal, probe_id: str) -> Probe:
        """The caller's own probe; another user's probe, an expired or an evicted one is a NotFound."""
        with self._lock:
            self._expire()
            probe = self._users.get(principal.id, {}).get(probe_id)
        if probe is None:
            raise NotFound(f"{PROBE_GONE} (probe {probe_id!r}; probes are held {self._terms()})")
        return probe

    def held(self, principal: Principal) -> list[str]:
        """The ids of the caller's probes held now, oldest first."""
        with self._lock:
            self._expire()
            return list(self._users.get(principal.id, {}))

    def _terms(self) -> str:
        return f"{self.ttl / 60:g} minutes, the newest {self.per_user} per user"

    def _shed(self, keep: str) -> bool:
        """Drop the oldest probe (never ``keep``) of the user holding the most bytes; False if none is left."""
        weights = {
            owner: sum(p.size for p in probes.values()) for owner, probes in self._users.items() if set(probes) - {keep}
        }
        if not weights:
            return False
        heaviest = max(weights, key=weights.__getitem__)
        self._drop(heaviest, next(k for k in self._users[heaviest] if k != keep))
        return True

    def _drop(self, owner_id: int, probe_id: str) -> None:
        probes = self._users[owner_id]
        self._bytes -= probes.pop(probe_id).size
        if not probes:
            del self._users[owner_id]

    def _expire(self) -> None:
        now = time.monotonic()
        for owner_id, probes in list(self._users.items()):
            for probe_id in [k for k, p in probes.items() if now - p.created > self.ttl]:
                self._drop(owner_id, probe_id)
