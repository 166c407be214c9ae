"""Clustering runs at the same time on one collection (issue 13): serialised at the write.

A run another run overtook (it wrote between this one's read and write) finds out under the
collection's lock, raises StaleRun and is started again on what the other left, so the people come out
as after one run. Faces a human assigned, and people a human merged away, while a run was reading are
left as the human left them. SQLite and PostgreSQL (the ``backend`` fixture), and real processes.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from helpers import POLICY, open_finder
from service_helpers import backend  # noqa: F401
from sqlalchemy import func, select
from test_people import by_identity, gallery

from facefinder.services.people.clustering import ClusterRun, StaleRun, cluster
from facefinder.storage.catalog import FaceRecord, ImageRecord
from facefinder.storage.people import Person, PersonFace


@pytest.fixture
def finder(backend, tmp_path, pipeline):
    ff = open_finder(tmp_path / "data", pipeline, catalog_url=backend.new_url())
    ff.ingest(gallery(tmp_path), collection="lfw", **POLICY)
    yield ff
    ff.close()


def counts(ff) -> tuple[int, int]:
    """(people, assignments) in the catalog."""
    with ff.store.catalog.session() as session:
        people = session.scalar(select(func.count()).select_from(Person))
        return people, session.scalar(select(func.count()).select_from(PersonFace))


def test_an_overtaken_run_starts_again_on_what_the_other_left(finder):
    ff, collection = finder, finder.store.collection("lfw")
    overtaken = []

    class Overtaken(ClusterRun):
        def _write(self, grouping, watermark):
            if not overtaken:  # another process's run writes between this one's read and its write
                overtaken.append(cluster(ff.store, collection, ff.people.settings, False))
            super()._write(grouping, watermark)

    with pytest.raises(StaleRun, match="another clustering run on collection 'lfw' wrote first"):
        Overtaken(ff.store, collection, ff.people.settings, False).run()
    assert overtaken[0].new_people == 5 and counts(ff) == (5, 15)
    assert cluster(ff.store, collection, ff.people.settings, False).considered == 0  # nothing left to do
    assert counts(ff) == (5, 15) and len(by_identity(ff.people.list("lfw", members=True))) == 5


def test_a_human_change_during_a_run_is_kept(backend, tmp_path, pipeline):
    ff = open_finder(tmp_path / "data", pipeline, catalog_url=backend.new_url())
    try:
        ff.ingest(gallery(tmp_path, numbers=(1, 2)), collection="lfw", **POLICY)
        ff.people.cluster("lfw")
        named = by_identity(ff.people.list("lfw", members=True))
        ff.ingest(gallery(tmp_path, numbers=(3,), name="more"), collection="lfw", **POLICY)
        a, b, c, d = (named[name] for name in sorted(named)[:4])
        third = {p.name: f for f, p in _sources(ff).items() if p.name.endswith("_0003.jpg")}
        c_new = third[f"{identity_of(c)}_0003.jpg"]

        a_new = third[f"{identity_of(a)}_0003.jpg"]

        class HumanMeanwhile(ClusterRun):
            def _write(self, grouping, watermark):
                assert grouping.assigned[c_new][0] == c.person_id  # what the run means to do
                assert grouping.assigned[a_new][0] == a.person_id
                ff.people.merge(a.person_id, b.person_id)  # b is gone before this run writes
                ff.people_review.assign(c_new, d.person_id)  # and c's new face is d's, a human says
                ff.people_review.reject(a_new, None)  # and a's new face is not a person to group
                super()._write(grouping, watermark)

        report = HumanMeanwhile(ff.store, ff.store.collection("lfw"), ff.people.settings, False).run()
        assert report.considered == 5
        b_new = third[f"{identity_of(b)}_0003.jpg"]
        with ff.store.catalog.session() as session:
            held = dict(session.execute(select(PersonFace.face_id, PersonFace.person_id)).all())
        assert held[c_new] == d.person_id and b_new not in held and a_new not in held  # as the humans left them
        assert counts(ff) == (4, 13)
    finally:
        ff.close()


def identity_of(person) -> str:
    return Path(person.members[0].source).parent.name


def _sources(ff) -> dict[int, Path]:
    """face id -> the path of its photo."""
    with ff.store.catalog.session() as session:
        rows = session.execute(select(FaceRecord.id, ImageRecord.source).join(ImageRecord)).all()
    return {face: Path(source) for face, source in rows}


def _cluster_in_a_process(data_dir: str, catalog_url: str | None, start, out) -> None:
    from facefinder import FaceFinder

    with FaceFinder(data_dir, catalog_url=catalog_url, workers=0, actor="racer") as ff:
        start.wait()
        out.put(ff.people.cluster("lfw").to_dict())


def test_runs_in_several_processes_give_the_people_of_one(finder, backend):
    ff = finder
    url = None if backend.name == "sqlite" else ff.store.catalog.url
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(3), context.Queue()
    racers = [context.Process(target=_cluster_in_a_process, args=(str(ff.data_dir), url, start, out)) for _ in range(3)]
    for racer in racers:
        racer.start()
    reports = [out.get(timeout=120) for _ in racers]
    for racer in racers:
        racer.join(60)
        assert racer.exitcode == 0
    assert sum(r["new_people"] for r in reports) == 5 and sum(r["new_people_faces"] for r in reports) == 15
    assert counts(ff) == (5, 15)
    assert len(by_identity(ff.people.list("lfw", members=True))) == 5
