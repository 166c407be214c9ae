"""Privacy by design: erasure, opt-out by face, retention, consent withdrawal and subject access.

``FaceFinder.privacy`` is a ``Privacy`` over that FaceFinder's store, models, audit log and
actor. Every operation here writes an audit entry.

Erasure (of a face, a photo, a collection, or a person found by a probe photo) removes the catalog
rows (faces with their embeddings and thumbnails, and the photo's row with its provenance), which
SQLite overwrites on disk (``secure_delete``), and the vectors, which the flat FAISS index removes
physically. Right after it (``Privacy.after_erasure``), the case records stop showing the face:
candidates whose face is gone are stamped (their thumbnail came from the faces table), and when a
person is erased (by probe photo, opt-out or consent withdrawal) the probe face of every case search
whose probe was that person is emptied (services/privacy/case_records.py says how those are
found); upload copies that no photo row names any more are zeroed and removed (services/server/uploads.py);
then ``FaceStore.compact`` rewrites the changed index files (zeroing the old file's bytes first) and
empties SQLite's write-ahead log (``wal_checkpoint(TRUNCATE)``), after all of the above, so that no
old copy of a row lingers there. A collection does not keep copies of photos ingested from the
operator's folders (it holds the path or URI), which stay the operator's; photos uploaded through the
server are kept under ``<data dir>/uploads`` and are zeroed and removed with their row
(``FaceStore.owned_copies``).

The subject access report is built in services/privacy/access.py, and what these operations return
(``PersonMatches``, ``Erasure``, ``OptOutResult``) is in services/privacy/results.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from facefinder.errors import FaceFinderError
from facefinder.services.audit import AuditLog
from facefinder.services.calibration import default_calibration
from facefinder.services.privacy import access, case_records, expansion
from facefinder.services.privacy import consent as consents
from facefinder.services.privacy import optout as optouts
from facefinder.services.privacy.results import Erasure, OptOutResult, PersonMatches
from facefinder.services.privacy.retention import PurgeReport, run_purge
from facefinder.services.search import Match, Searcher
from facefinder.services.server import uploads
from facefinder.storage.base import utcnow
from facefinder.storage.catalog import FaceRecord
from facefinder.storage.store import FaceStore
from facefinder.storage.video import whole_tracks
from facefinder.vision.image import decode_photo, read_photo_bytes
from facefinder.vision.pipeline import Face, FacePipeline

Photo = str | os.PathLike | bytes


class Privacy:
    """Erasure, opt-out, consent, retention and subject access over one store, each audited under ``actor``.

    Built from its parts like ``Cases`` is: ``pipeline`` is called only when a photo must be analysed
    (the models load on first use), so opening a Privacy to erase or purge costs no model load.
    """

    def __init__(self, store: FaceStore, audit: AuditLog, pipeline: Callable[[], FacePipeline], actor: str) -> None:
        self.store, self.audit, self.actor = store, audit, actor
        self._pipeline = pipeline
        self.calibration = default_calibration()

    @property
    def pipeline(self) -> FacePipeline:
        """The vision pipeline (loaded by the owner on first use)."""
        return self._pipeline()

    @property
    def threshold(self) -> float:
        """The strict threshold (score at a false match rate of ``PRIVACY_FMR``): see calibration.py."""
        return self.calibration.privacy_threshold

    def _actor(self, actor: str | None) -> str:
        return actor or self.actor

    # ----- a person's face --------------------------------------------------------------------
    def subject_face(self, photo: Photo, face: int | None = None) -> tuple[Face, str]:
        """The person's face in ``photo`` (path or bytes) and the photo's sha256.

        A photo with several faces needs ``face`` (0-based, in the order ``faces_in`` lists them).
        It is read and decoded within the ingest's budget (an uploaded or named photo is untrusted):
        over the byte cap or the decode budget it is an ImageError ("too-large"), and the boxes it
        lists are in the photo's own pixels."""
        if isinstance(photo, (bytes, bytearray)):
            data, source = bytes(photo), "uploaded photo"
        else:
            source = str(photo)
            data = read_photo_bytes(photo)
        faces = self.pipeline.analyze_decoded([decode_photo(data, source)])[0]
        if not faces:
            raise FaceFinderError(f"{source}: no face found")
        if face is None and len(faces) > 1:
            boxes = "; ".join(f"{i}: {[round(float(v)) for v in f.box]}" for i, f in enumerate(faces))
            raise FaceFinderError(
                f"{source}: {len(faces)} faces found; say which one is the person (--face N; boxes {boxes})"
            )
        index = face or 0
        if not 0 <= index < len(faces):
            raise FaceFinderError(f"face: {source} has faces 0..{len(faces) - 1}, not {index}")
        return faces[index], hashlib.sha256(data).hexdigest()

    def find(
        self,
        embeddings: np.ndarray,
        collections: list[str] | None = None,
        threshold: float | None = None,
        expand: bool = False,
    ) -> list[Match]:
        """Every held face scoring at or above the threshold against any of the embeddings, best first;
        with ``expand``, every face likely the person's, each saying why (services/privacy/expansion.py)."""
        if expand:
            return expansion.expand(self, embeddings, collections, threshold)
        threshold = self.threshold if threshold is None else threshold
        searcher = Searcher(self.store, self.pipeline, self.calibration)
        collection_ids = searcher.collection_ids(collections)
        best: dict[int, float] = {}
        for row in self.store.search_above(collection_ids, np.atleast_2d(embeddings), threshold):
            for face_id, score in row:
                best[face_id] = max(score, best.get(face_id, -1.0))
        rows = self.store.faces(list(best))
        matches = [
            Match(**searcher.match_fields(face_id, score, rows)) for face_id, score in best.items() if face_id in rows
        ]
        return sorted(matches, key=lambda m: (-m.score, m.face_id))

    def find_person(
        self,
        photo: Photo,
        face: int | None = None,
        collections: list[str] | None = None,
        threshold: float | None = None,
        actor: str | None = None,
        expand: bool = False,
    ) -> PersonMatches:
        """Step one of erasure by person: what is held that matches the person in ``photo`` (logged);
        with ``expand``, every face likely theirs (services/privacy/expansion.py)."""
        subject, digest = self.subject_face(photo, face)
        threshold = self.threshold if threshold is None else threshold
        matches = self.find(subject.embedding, collections, threshold, expand)
        self.audit.record(
            self._actor(actor),
            "privacy.find",
            probe_sha256=digest,
            threshold=threshold,
            collections=collections or "all",
            face_ids=[m.face_id for m in matches],
            **expansion.audit_details(matches, expand),
        )
        return PersonMatches(digest, threshold, matches, subject.embedding, self.pipeline.model_id, expand)

    # ----- erasure ----------------------------------------------------------------------------
    def erase_faces(
        self,
        face_ids: list[int],
        action: str = "delete.face",
        drop_empty_images: bool = False,
        actor: str | None = None,
        person: dict[str, np.ndarray] | None = None,
        **details: Any,
    ) -> Erasure:
        """Erase faces (rows, embeddings, thumbnails, vectors); with ``drop_empty_images``, also the
        rows of photos left without a face. Logged as ``action`` when anything was erased.

        ``person`` (model id -> templates, possibly empty) says that these faces are a person's, erased
        at their request: the faces' own templates are added to it, and case searches whose probe was
        that person lose their probe face too (see ``after_erasure``). None for a face erased as such.
        A face from a video takes the other kept faces of its track with it (storage/video.py)."""
        with self.store.catalog.session() as session:
            face_ids, _ = whole_tracks(session, list(face_ids))
        rows = self.store.faces(face_ids)
        if person is not None:
            person = _by_model(
                [
                    *((v, m) for m, vs in person.items() for v in np.atleast_2d(vs)),
                    *((record.embedding, record.model_id) for record, _, _ in rows.values()),
                ]
            )
        image_ids = sorted({image.id for _, image, _ in rows.values()})
        count = self.store.delete_faces(list(rows))
        emptied: list[int] = []
        if drop_empty_images and image_ids:
            with self.store.catalog.session() as session:
                remaining = set(session.scalars(select(FaceRecord.image_id).where(FaceRecord.image_id.in_(image_ids))))
            emptied = [i for i in image_ids if i not in remaining]
            if emptied:
                self.store.delete_images(emptied)
        result = Erasure(count, len(emptied), sorted(rows), emptied)
        if count or emptied or person:
            self._finish(result, person)
        if count or emptied or result.case_searches or result.case_probe_photos:
            self.audit.record(
                self._actor(actor),
                action,
                faces=count,
                face_ids=result.face_ids,
                images=len(emptied),
                image_ids=emptied,
                **_case_details(result),
                **details,
            )
        return result

    def erase_image(self, image_id: int, actor: str | None = None) -> Erasure:
        """Erase one photo: its row and provenance, and all its faces."""
        count = self.store.delete_image(image_id)
        result = self._finish(Erasure(count, 1, [], [image_id]))
        self.audit.record(self._actor(actor), "delete.image", image_id=image_id, faces=count)
        return result

    def erase_collection(self, name: str, actor: str | None = None) -> Erasure:
        """Erase a whole collection; its index file is zeroed and removed, and its upload copies."""
        info = next((c for c in self.store.collections() if c.name == name), None)
        self.store.delete_collection(name)
        result = self._finish(Erasure(info.faces if info else 0, info.images if info else 0))
        self.audit.record(
            self._actor(actor), "delete.collection", collection=name, images=result.images, faces=result.faces
        )
        return result

    def after_erasure(
        self, person: dict[str, np.ndarray] | None = None
    ) -> tuple[tuple[int, int, int] | None, case_records.ProbeErasure, int]:
        """What every erasure does last (purge too): stamp case candidates whose face is gone; when a
        person was erased (``person``: their templates by model), empty the probe face of the case
        searches whose probe was them; zero and remove upload copies that no photo row names; then
        compact (index files rewritten, the WAL cut to zero bytes), last, so that the old copies of
        the rows changed here do not linger in catalog.db-wal either.
        Returns (the WAL checkpoint result, the case searches changed, upload copies removed)."""
        now = utcnow()
        case_records.mark_erased_candidates(self.store.catalog, now)
        probes = case_records.ProbeErasure()
        if person:
            probes = case_records.erase_probes_of(self.store.catalog, person, self.threshold, now, self._pipeline)
        copies = uploads.sweep(self.store)
        return self.store.compact(), probes, copies

    def _finish(self, result: Erasure, person: dict[str, np.ndarray] | None = None) -> Erasure:
        result.wal, probes, result.upload_copies = self.after_erasure(person)
        result.case_searches, result.case_probe_photos = probes.searches, probes.photos
        return result

    def erase_person(
        self, matches: PersonMatches, face_ids: list[int] | None = None, actor: str | None = None
    ) -> Erasure:
        """Step two of erasure by person: erase the reviewed matches (all, or the ``face_ids`` kept after
        review). Photos left without faces go too; photos that still show others keep their row."""
        chosen = self._chosen(matches.face_ids, face_ids)
        subject = {matches.model_id: matches.embedding} if matches.embedding is not None else {}
        return self.erase_faces(
            chosen,
            "delete.person",
            drop_empty_images=True,
            actor=actor,
            person=subject,
            probe_sha256=matches.probe_sha256,
            threshold=matches.threshold,
            listed=len(matches.matches),
            **({"expanded": True} if matches.expanded else {}),
        )

    @staticmethod
    def _chosen(listed: list[int], chosen: list[int] | None) -> list[int]:
        if chosen is None:
            return list(listed)
        unknown = sorted(set(chosen) - set(listed))
        if unknown:
            raise FaceFinderError(f"face {unknown[0]} is not among the listed matches; only those can be erased here")
        return list(dict.fromkeys(chosen))

    # ----- opt-out ------------------------------------------------------------------------------
    def optout_add(
        self,
        photos: list[Photo],
        reference: str = "",
        channel: str = "admin",
        face: int | None = None,
        delete_photos: bool = False,
        actor: str | None = None,
        expand: bool = False,
    ) -> OptOutResult:
        """Put a person on the opt-out list from one or more photos of them (more photos: more of their
        faces caught). Only the templates are kept; with ``delete_photos`` the photo files are
        overwritten and removed once the templates are made. Returns the held faces that match now,
        for review (with ``expand``, every face likely theirs): they are hidden from search at once, and
        erased by ``optout_erase``."""
        if not photos:
            raise FaceFinderError("an opt-out needs a photo of the person")
        faces = [self.subject_face(photo, face if len(photos) == 1 else None)[0] for photo in photos]
        model_id = self.pipeline.model_id
        optout_id = optouts.add(
            self.store.catalog,
            [(f.embedding, f.quality.score) for f in faces],
            model_id,
            reference,
            channel,
            self._actor(actor),
        )
        deleted = False
        if delete_photos:
            from facefinder.storage.index import scrub_file

            for photo in photos:
                if not isinstance(photo, (bytes, bytearray)):
                    scrub_file(Path(photo))
            deleted = True
        matches = self.find(np.stack([f.embedding for f in faces]), expand=expand)
        self.audit.record(
            self._actor(actor),
            "optout.add",
            optout_id=optout_id,
            reference=reference,
            channel=channel,
            templates=len(faces),
            photo_deleted=deleted,
            threshold=self.threshold,
            matches=[m.face_id for m in matches],
            **expansion.audit_details(matches, expand),
        )
        return OptOutResult(optout_id, len(faces), matches, deleted)

    def optout_matches(self, optout_id: int, actor: str | None = None, expand: bool = False) -> list[Match]:
        """The faces held now that match an opt-out's templates (logged: it is a biometric search); with
        ``expand``, every face likely the person's (services/privacy/expansion.py)."""
        by_model = optouts.templates(self.store.catalog, optout_id)
        vectors = by_model.get(self.pipeline.model_id)
        matches = self.find(vectors, expand=expand) if vectors is not None else []
        self.audit.record(
            self._actor(actor),
            "optout.review",
            optout_id=optout_id,
            threshold=self.threshold,
            matches=[m.face_id for m in matches],
            **expansion.audit_details(matches, expand),
        )
        return matches

    def optout_erase(
        self, optout_id: int, face_ids: list[int] | None = None, actor: str | None = None, expand: bool = False
    ) -> Erasure:
        """Erase the held faces that match an opt-out (all current matches, or the ``face_ids`` kept after
        review); photos left without faces go too. With ``expand`` the faces listed are every face likely
        the person's, and the templates of those erased join the opt-out's first, so that later photos
        of them are screened by all of them."""
        by_model = optouts.templates(self.store.catalog, optout_id)
        vectors = by_model.get(self.pipeline.model_id)
        listed = [m.face_id for m in self.find(vectors, expand=expand)] if vectors is not None else []
        chosen = self._chosen(listed, face_ids)
        added = expansion.keep_templates(self, optout_id, chosen) if expand else 0
        result = self.erase_faces(
            chosen,
            "optout.erase",
            drop_empty_images=True,
            actor=actor,
            person=by_model,
            optout_id=optout_id,
            listed=len(listed),
            **({"expanded": True, "templates_added": added} if expand else {}),
        )
        if not chosen and not (result.case_searches or result.case_probe_photos):
            self.audit.record(self._actor(actor), "optout.erase", optout_id=optout_id, faces=0, listed=len(listed))
        optouts.mark_erased(self.store.catalog, optout_id, self._actor(actor), utcnow())
        return result

    def optout_list(self) -> list[optouts.OptOutInfo]:
        return optouts.listing(self.store.catalog)

    def optout_remove(self, optout_id: int, note: str = "", actor: str | None = None) -> None:
        """Take someone off the list (their request withdrawn, or a public submission rejected)."""
        optouts.remove(self.store.catalog, optout_id)
        self.audit.record(self._actor(actor), "optout.remove", optout_id=optout_id, note=note)

    def public_optout_enabled(self) -> bool:
        return optouts.public_form_enabled(self.store.catalog)

    def set_public_optout(self, enabled: bool, actor: str | None = None) -> None:
        optouts.set_public_form(self.store.catalog, enabled)
        self.audit.record(self._actor(actor), "optout.public_form", enabled=enabled)

    # ----- consent ------------------------------------------------------------------------------
    def consent_record(
        self,
        consent_id: str,
        subject: str,
        scope: str,
        given_at: str,
        collection: str | None = None,
        actor: str | None = None,
    ) -> None:
        if collection is not None:
            self.store.collection(collection)  # must exist
        consents.record(self.store.catalog, consent_id, subject, scope, given_at, self._actor(actor), collection)
        self.audit.record(
            self._actor(actor),
            "consent.record",
            consent_id=consent_id,
            subject=subject,
            scope=scope,
            given_at=given_at,
            collection=collection,
        )

    def consents(self, consent_id: str | None = None) -> list[consents.ConsentInfo]:
        return consents.listing(self.store.catalog, consent_id)

    def consent_withdraw(self, consent_id: str, note: str | None = None, actor: str | None = None) -> Erasure:
        """Record the withdrawal and erase every photo that carries the consent id."""
        existed = consents.mark_withdrawn(self.store.catalog, consent_id, self._actor(actor), note, utcnow())
        image_ids = consents.linked_images(self.store.catalog, consent_id)
        person = self._templates_of_images(image_ids)  # the consenting person's faces, before they go
        images, faces = self.store.delete_images(image_ids) if image_ids else (0, 0)
        result = Erasure(faces, images, [], image_ids)
        if image_ids:
            self._finish(result, person)
        self.audit.record(
            self._actor(actor),
            "consent.withdraw",
            consent_id=consent_id,
            note=note,
            recorded_before=existed,
            images=images,
            faces=faces,
            image_ids=image_ids,
            **_case_details(result),
        )
        return result

    def _templates_of_images(self, image_ids: list[int]) -> dict[str, np.ndarray]:
        if not image_ids:
            return {}
        with self.store.catalog.session() as session:
            rows = session.execute(
                select(FaceRecord.embedding, FaceRecord.model_id).where(FaceRecord.image_id.in_(image_ids))
            ).all()
        return _by_model([(r.embedding, r.model_id) for r in rows])

    # ----- retention ----------------------------------------------------------------------------
    def purge(self, now: datetime | None = None, dry_run: bool = False, actor: str | None = None) -> PurgeReport:
        return run_purge(self.store, self.audit, self.after_erasure, now=now, dry_run=dry_run, actor=self._actor(actor))

    # ----- subject access -----------------------------------------------------------------------
    def subject_access(
        self,
        photo: Photo,
        approved_by: str,
        face: int | None = None,
        threshold: float | None = None,
        actor: str | None = None,
    ) -> dict:
        """What is held on the person in ``photo``: each matching face with its photo's source and
        provenance, the collection's purpose, legal basis and retention, the consent it rests on, and
        every logged search that returned it. JSON-ready; interfaces/web/documents.py renders it as HTML.
        Built by services/privacy/access.py."""
        return access.subject_access(self, photo, approved_by, face, threshold, self._actor(actor))


def _by_model(pairs: list[tuple[bytes | np.ndarray, str]]) -> dict[str, np.ndarray]:
    """(template, model id) pairs -> model id -> stacked float32 templates."""
    grouped: dict[str, list[np.ndarray]] = {}
    for vector, model_id in pairs:
        data = (
            np.frombuffer(vector, dtype=np.float32)
            if isinstance(vector, (bytes, bytearray, memoryview))
            else np.asarray(vector, dtype=np.float32).ravel()
        )
        grouped.setdefault(model_id, []).append(data)
    return {m: np.stack(vs) for m, vs in grouped.items() if m}


def _case_details(result: Erasure) -> dict[str, list[int]]:
    """For the audit entry: which case records lost a probe face or photo (ids only)."""
    details = {}
    if result.case_searches:
        details["case_searches"] = result.case_searches
    if result.case_probe_photos:
        details["case_probe_photos"] = result.case_probe_photos
    return details
