"""Video as a source: sampling, bad input, ingest beside photos, results that point into the video,
and erasure of a whole track. The videos are made here from LFW photos, so who is on screen when is known."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import POLICY, lfw
from PIL import Image
from test_privacy import files_holding
from videos import scenes_of, write_video

from facefinder.errors import ImageError
from facefinder.vision.video import DEFAULT_SAMPLE_FPS, frame_at, probe_video, sample_frames

INTERVAL = 1 / DEFAULT_SAMPLE_FPS
PEOPLE = ["Tony_Blair", "Colin_Powell", "Hugo_Chavez"]  # on screen 1-4 s, 5-8 s, 9-12 s of a 13-second video


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("video")
    return write_video(folder / "street.mp4", scenes_of([lfw(p, 1) for p in PEOPLE], 3.0, gap=1.0), tail=1.0)


def test_frames_are_sampled_by_their_times(video):
    info = probe_video(video)
    assert (info.width, info.height, info.codec) == (320, 240, "mpeg4") and info.duration == pytest.approx(13, abs=0.2)
    times = [frame.time for frame in sample_frames(video)]
    assert times[0] == 0.0 and times[-1] >= 12.0
    steps = [b - a for a, b in zip(times, times[1:])]
    assert all(0 < step <= INTERVAL + 1e-6 for step in steps)  # never a gap longer than the interval
    assert len(times) == pytest.approx(13 * DEFAULT_SAMPLE_FPS, abs=3)
    assert all(frame.image.shape == (240, 320, 3) for frame in sample_frames(video, fps=0.5))


@pytest.mark.parametrize(
    ("name", "codec", "decoded_as"),
    [
        ("cam.avi", "mjpeg", "mjpeg"),  # CCTV recorders
        ("phone.mov", "libx264", "h264"),
        ("nvr.mp4", "libx265", "hevc"),  # H.265: network video recorders
        ("clip.mkv", "libx264", "h264"),
        ("web.webm", "libvpx-vp9", "vp9"),
    ],
)
def test_common_containers_and_codecs_decode(tmp_path, name, codec, decoded_as):
    path = write_video(tmp_path / name, scenes_of([lfw("Tony_Blair", 1)], 2.0), codec=codec)
    assert probe_video(path).codec == decoded_as
    frames = list(sample_frames(path))
    assert [f.time for f in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5], abs=0.01)
    assert frames[0].image.shape == (240, 320, 3) and frames[0].image.std() > 10  # a picture, not a blank


def test_bad_videos_fail_with_a_reason(video, tmp_path):
    renamed = tmp_path / "holiday.mp4"
    with zipfile.ZipFile(renamed, "w") as archive:
        archive.writestr("notes.txt", "not a video")
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(video.read_bytes()[: video.stat().st_size // 2])  # the index (moov) is at the end
    unknown = write_video(tmp_path / "unknown.avi", scenes_of([lfw("Tony_Blair", 1)], 1.0), codec="mjpeg")
    unknown.write_bytes(unknown.read_bytes().replace(b"MJPG", b"QQQQ"))  # a fourcc no decoder knows
    cut = tmp_path / "cut.mkv"  # Matroska needs no index: its frames simply stop half way
    write_video(cut, scenes_of([lfw("Tony_Blair", 1)], 6.0))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    cases = ((renamed, "not-a-video"), (truncated, "corrupt"), (cut, "truncated"), (unknown, "unsupported-codec"))
    for path, reason in cases:
        with pytest.raises(ImageError) as caught:
            list(sample_frames(path))
        assert caught.value.reason == reason and caught.value.source == str(path)
    with pytest.raises(ImageError) as caught:
        probe_video(video, max_seconds=5)
    assert caught.value.reason == "too-long"


@pytest.fixture
def ingested(video, tmp_path, make_finder):
    """A folder with the video, two photos and a renamed zip, ingested in one run."""
    folder = tmp_path / "footage"
    folder.mkdir()
    shutil.copy(video, folder / "street.mp4")
    for person in ("George_W_Bush", "Vladimir_Putin"):
        shutil.copy(lfw(person, 1), folder / f"{person}.jpg")
    (folder / "renamed.mov").write_bytes(b"PK\x03\x04" + b"not a video" * 50)
    ff = make_finder(tmp_path / "data")
    report = ff.ingest(folder, collection="cctv", **POLICY)
    return ff, report, folder


def test_a_video_ingests_with_the_photos_and_search_points_into_it(ingested):
    ff, report, folder = ingested
    assert report.ingested == 3 and [(f.source, f.reason) for f in report.failures] == [
        (str(folder / "renamed.mov"), "not-a-video")
    ]
    for number, person in enumerate(PEOPLE):
        on_screen = (1.0 + 4 * number, 4.0 + 4 * number)
        [probe] = ff.search(lfw(person, 2))
        from_video = [c for c in probe.candidates if c.source == str(folder / "street.mp4")]
        assert from_video, person
        best = from_video[0]
        assert on_screen[0] - INTERVAL <= best.video_time <= on_screen[1] + INTERVAL
        assert on_screen[0] - INTERVAL <= best.track["start"] <= best.track["end"] <= on_screen[1] + INTERVAL
        assert best.to_dict()["video_time"] == best.video_time
        spans = [(c.track["start"], c.track["end"]) for c in from_video]
        assert len(spans) == len(set(spans))  # one candidate per appearance, not one per kept face
    [lowered] = ff.search(lfw("Tony_Blair", 2), threshold=-1.0, top_k=4)
    assert len(lowered.candidates) == 4  # the list is filled to top_k with other appearances and photos
    assert len({(c.source, c.track["start"] if c.track else c.face_id) for c in lowered.candidates}) == 4
    [photo] = ff.search(lfw("George_W_Bush", 2))
    assert photo.candidates[0].video_time is None and photo.candidates[0].track is None


def test_erasing_a_video_face_erases_its_whole_track(ingested, tmp_path):
    ff, _, folder = ingested
    data = tmp_path / "data"
    [probe] = ff.search(lfw("Colin_Powell", 2))
    [face] = [c for c in probe.candidates if c.source == str(folder / "street.mp4")][:1]
    with sqlite3.connect(data / "catalog.db") as db:
        (track_id,) = db.execute("SELECT track_id FROM track_faces WHERE face_id = ?", (face.face_id,)).fetchone()
        doomed = db.execute(
            "SELECT f.id, f.embedding, f.thumbnail FROM faces f JOIN track_faces t ON t.face_id = f.id "
            "WHERE t.track_id = ?",
            (track_id,),
        ).fetchall()
        tracks_before = db.execute("SELECT count(*) FROM tracks").fetchone()[0]
    assert len(doomed) >= 2  # a track keeps its few best faces
    erased = ff.privacy.erase_faces([face.face_id])
    assert sorted(erased.face_ids) == sorted(row[0] for row in doomed)
    for _, embedding, thumbnail in doomed:
        assert files_holding(data, bytes(embedding)) == [] and files_holding(data, bytes(thumbnail)) == []
    with sqlite3.connect(data / "catalog.db") as db:
        assert db.execute("SELECT count(*) FROM tracks").fetchone()[0] == tracks_before - 1
        assert db.execute("SELECT count(*) FROM track_faces WHERE track_id = ?", (track_id,)).fetchone() == (0,)
    assert (folder / "street.mp4").is_file()  # the video file is the operator's: never touched
    [probe] = ff.search(lfw("Colin_Powell", 2))
    assert not [c for c in probe.candidates if c.source == str(folder / "street.mp4")]


def test_the_cli_shows_the_moment_and_json_carries_it(ingested, tmp_path):
    from typer.testing import CliRunner

    from facefinder.interfaces.cli.main import app

    ff, _, folder = ingested
    ff.close()
    args = ["--data-dir", str(tmp_path / "data"), "search", str(lfw("Hugo_Chavez", 2))]
    table = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    assert "street.mp4 @ 00:" in table.stdout  # Hugo Chavez is on screen from 00:09 to 00:12
    lines = CliRunner().invoke(app, [*args, "--json"]).stdout.splitlines()
    [record] = [json.loads(line) for line in lines]
    [candidate] = [c for c in record["candidates"] if c["source"] == str(folder / "street.mp4")][:1]
    assert 9.0 - INTERVAL <= candidate["video_time"] <= 12.0 + INTERVAL
    assert set(candidate["track"]) == {"start", "end"}


def test_api_candidates_carry_video_time_and_track(video, tmp_path, pipeline):
    from service_helpers import COLLECTION, make_served, run_search

    served = make_served(tmp_path / "data", pipeline, None)
    try:
        folder = tmp_path / "cctv"
        folder.mkdir()
        shutil.copy(video, folder / "street.mp4")
        assert served.finder.ingest(folder, COLLECTION, **POLICY).ingested == 1
        record = run_search(served.client("ivan"), person="Colin_Powell")
        from_video = [c for c in record["candidates"] if c["video_time"] is not None]
        assert from_video and 5.0 - INTERVAL <= from_video[0]["video_time"] <= 8.0 + INTERVAL
        assert from_video[0]["track"]["start"] <= from_video[0]["video_time"] <= from_video[0]["track"]["end"]
        photos = [c for c in record["candidates"] if c["video_time"] is None]
        assert photos and all(c["track"] is None for c in photos)
        # the result's picture is the frame the face was seen in, boxed (and logged as a result view)
        client = served.client("ivan")
        response = client.get(f"/api/searches/{record['id']}/candidates/{from_video[0]['rank']}/photo")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        frame = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
        assert frame.shape == (360, 480, 3)  # the 320x240 frame, enlarged to be shown as photos are
        orange = (frame[..., 0] > 200) & (frame[..., 1] > 60) & (frame[..., 1] < 120) & (frame[..., 2] < 60)
        assert orange.sum() > 100  # the box drawn round the face
        views = served.finder.audit.entries(action="result.view")
        assert any(json.loads(e.details).get("face_id") == from_video[0]["face_id"] for e in views)
        # the clip: from 3 s before the moment to 5 s after, H.264, only for those who may see the search
        clip_url = f"/api/searches/{record['id']}/candidates/{from_video[0]['rank']}/clip"
        response = client.get(clip_url)
        assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
        (tmp_path / "clip.mp4").write_bytes(response.content)
        info = probe_video(tmp_path / "clip.mp4")
        assert info.codec == "h264" and 5.0 <= info.duration <= 8.5
        views = [json.loads(e.details) for e in served.finder.audit.entries(action="result.view")]
        assert any(v.get("view") == "clip" and v["face_id"] == from_video[0]["face_id"] for v in views)
        assert served.client("olga").get(clip_url).status_code in (403, 404)  # not granted the collection
        browser, _ = served.browser("ivan")
        page = browser.get(f"/searches/{record['id']}/candidates/{from_video[0]['rank']}").text
        assert 'id="video-clip"' in page and f'src="{clip_url}"' in page and "Seen at <strong>00:0" in page
    finally:
        served.close()


def test_a_video_probe_searches_each_face_track_in_it(video, lfw_finder):
    from typer.testing import CliRunner

    from facefinder.interfaces.cli.main import app

    records = lfw_finder.search(video)
    found = {r.candidates[0].source.split("/")[-2] for r in records if r.candidates}
    assert set(PEOPLE) <= found  # each person on screen is found among the LFW photos
    for record in records:
        assert record.error is None and record.probe == str(video) and 0 <= record.video_time <= 13
    args = ["--data-dir", str(lfw_finder.store.data_dir), "search", str(video)]
    table = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "street.mp4 @ 00:0" in table.stdout  # each probe face says when it was seen


def test_a_video_in_an_archive_ingests_like_its_photos(video, tmp_path, make_finder):
    archive = tmp_path / "footage.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.write(video, "cam1/street.mp4")
        bundle.write(lfw("George_W_Bush", 1), "stills/bush.jpg")
    ff = make_finder(tmp_path / "data")
    report = ff.ingest(archive, collection="cctv", **POLICY)
    assert report.ingested == 2 and not report.failures
    [probe] = ff.search(lfw("Tony_Blair", 2))
    [best] = [c for c in probe.candidates if c.source == f"{archive}!cam1/street.mp4"][:1]
    assert 1.0 - INTERVAL <= best.video_time <= 4.0 + INTERVAL
    again = ff.ingest(archive, collection="cctv")
    assert again.ingested == 0 and again.duplicates == 2  # the video is known by its sha256: a re-run resumes


def test_variable_frame_rates_are_sampled_by_timestamp(tmp_path):
    import fractions

    import av

    times = [0, 0.1, 0.15, 0.9, 1.0, 1.05, 1.8, 2.6, 2.61, 3.4, 4.2]  # irregular, as a phone or CCTV records
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for t in times:
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 100, np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(t * 1000), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    # the first frame at or after each half second, by its own time, never by its number
    assert [round(f.time, 3) for f in sample_frames(path)] == [0.0, 0.9, 1.0, 1.8, 2.6, 3.4, 4.2]


def test_an_opted_out_person_leaves_no_track_at_ingest(video, tmp_path, make_finder):
    ff = make_finder(tmp_path / "data")
    ff.privacy.optout_add([lfw("Colin_Powell", 2)], reference="T-1")
    folder = tmp_path / "cctv"
    folder.mkdir()
    shutil.copy(video, folder / "street.mp4")
    report = ff.ingest(folder, collection="cctv", **POLICY)
    assert report.ingested == 1 and report.opted_out >= 2  # every kept face of the track, not just the alike ones
    with sqlite3.connect(tmp_path / "data" / "catalog.db") as db:
        spans = db.execute("SELECT start, end FROM tracks ORDER BY start").fetchall()
    assert spans and not [s for s in spans if 5.0 - INTERVAL <= s[0] <= 8.0]  # Colin Powell's appearance
    assert [s for s in spans if s[0] <= 4.0] and [s for s in spans if s[0] >= 9.0 - INTERVAL]  # the others stay


def test_rotation_metadata_turns_the_frames_upright(tmp_path):
    """A phone's portrait video: landscape pixels and a display matrix saying "turn 90 degrees clockwise"
    (written here into the MP4's track header, as phones do)."""
    import struct

    import av

    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(10):
            image = np.zeros((48, 64, 3), np.uint8)
            image[:12, :, 0] = 255  # a red band along the top of the stored pixels
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = bytearray(path.read_bytes())
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    clockwise = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)  # FFmpeg's rotate=90
    at = data.index(identity, data.index(b"tkhd"))
    data[at : at + 36] = clockwise
    path.write_bytes(bytes(data))
    for image in (next(iter(sample_frames(path))).image, frame_at(path, 0.5)):
        assert image.shape == (64, 48, 3)  # upright: portrait
        red = image[..., 0].mean(axis=0)
        assert red[-6:].mean() > 200 and red[:6].mean() < 50  # the top band, turned clockwise, is on the right


def test_video_tracks_on_postgresql(video, tmp_path, make_finder):
    """The tracks tables, the search join and erasure by whole track, on a PostgreSQL catalog."""
    from service_helpers import make_backend

    backend = make_backend("postgresql")
    try:
        ff = make_finder(tmp_path / "data", catalog_url=backend.new_url())
        folder = tmp_path / "cctv"
        folder.mkdir()
        shutil.copy(video, folder / "street.mp4")
        assert ff.ingest(folder, collection="cctv", **POLICY).ingested == 1
        [probe] = ff.search(lfw("Hugo_Chavez", 2))
        best = probe.candidates[0]
        assert 9.0 - INTERVAL <= best.video_time <= 12.0 + INTERVAL and best.track["start"] <= best.video_time
        erased = ff.privacy.erase_faces([best.face_id])
        assert len(erased.face_ids) >= 2 and best.face_id in erased.face_ids
        [probe] = ff.search(lfw("Hugo_Chavez", 2))
        assert not probe.candidates
        [probe] = ff.search(lfw("Tony_Blair", 2))
        assert probe.candidates and probe.candidates[0].video_time <= 4.0 + INTERVAL  # the other tracks stay
        ff.close()
    finally:
        backend.drop_all()


@pytest.mark.slow
def test_a_video_ingests_on_ray_as_in_a_local_ingest(video, tmp_path, pipeline):
    """A Ray actor reads the video from shared storage (or gets an archive member's bytes) and analyses it
    whole: the same tracks and faces as a local ingest, and a re-run skips it."""
    import ray
    from helpers import open_finder

    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(video, folder / "street.mp4")
    shutil.copy(lfw("George_W_Bush", 1), folder / "bush.jpg")
    short = write_video(tmp_path / "short.mp4", scenes_of([lfw("Vladimir_Putin", 1)], 2.0))
    with zipfile.ZipFile(folder / "export.zip", "w") as archive:
        archive.write(short, "cam2/lobby.mp4")  # only the driver can open it: its bytes travel to the actor
        archive.write(video, "cam2/street-copy.mp4")  # a copy of street.mp4: a duplicate either way
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        local = open_finder(tmp_path / "local", pipeline)
        expected = local.ingest(folder, "cctv", **POLICY)
        ff = open_finder(tmp_path / "data", workers=2)
        report = ff.ingest(folder, "cctv", ray="local", **POLICY)
        assert (report.ingested, report.duplicates, report.failures) == (3, 1, [])
        assert (report.ingested, report.faces) == (expected.ingested, expected.faces)
        [probe] = ff.search(lfw("Hugo_Chavez", 2))
        best = probe.candidates[0]
        assert best.source in (str(folder / "street.mp4"), f"{folder / 'export.zip'}!cam2/street-copy.mp4")
        assert 9.0 - INTERVAL <= best.video_time <= 12.0 + INTERVAL and best.track["start"] <= best.video_time
        [probe] = ff.search(lfw("Vladimir_Putin", 2))
        assert probe.candidates[0].source == f"{folder / 'export.zip'}!cam2/lobby.mp4"
        assert ff.ingest(folder, "cctv", ray="local").ingested == 0  # resumable: what is stored is skipped
        ff.close()
        local.close()
    finally:
        ray.shutdown()


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident size from /proc")
def test_sampling_holds_a_few_frames_whatever_the_length(tmp_path):
    long = write_video(tmp_path / "long.mp4", scenes_of([lfw("Tony_Blair", 1)], 120.0), size=(640, 480), fps=5)
    list(sample_frames(long, fps=0.1))  # warm up: codec and thread pools allocated once
    before, growth, count = _resident_bytes(), 0, 0
    for _ in sample_frames(long):
        count += 1
        growth = max(growth, _resident_bytes() - before)
    assert count == pytest.approx(120 * DEFAULT_SAMPLE_FPS, abs=2)
    held = count * 640 * 480 * 3  # 221 MB, had the sampled frames been kept
    assert growth < held / 10  # a few frames at a time, whatever the length


def test_a_server_job_reads_a_video_through_its_fence(video, tmp_path, make_finder):
    """A server ingest is confined to its import root: the video is opened through the fence (a file
    handle checked to lie inside), and a link to a video outside the root is refused unread."""
    root = tmp_path / "imports"
    (root / "cam").mkdir(parents=True)
    shutil.copy(video, root / "cam" / "street.mp4")
    outside = tmp_path / "elsewhere.mp4"
    shutil.copy(video, outside)
    (root / "cam" / "linked.mp4").symlink_to(outside)
    ff = make_finder(tmp_path / "data")
    report = ff.ingest(root / "cam", collection="cctv", confine_to=root, **POLICY)
    assert report.ingested == 1 and [(f.source, f.reason) for f in report.failures] == [
        (str(root / "cam" / "linked.mp4"), "symlink-escape")
    ]
    [probe] = ff.search(lfw("Tony_Blair", 2))
    assert probe.candidates[0].source == str(root / "cam" / "street.mp4") and probe.candidates[0].video_time <= 4.5


def test_a_video_uploaded_as_a_probe_gives_its_face_tracks(video, tmp_path, pipeline):
    from service_helpers import assert_error, make_served

    served = make_served(tmp_path / "data", pipeline, None)
    try:
        client = served.client("ivan")
        response = client.post("/api/probes", files={"photo": ("street.mp4", video.read_bytes(), "video/mp4")})
        assert response.status_code == 201, response.text
        probe = response.json()
        assert (probe["width"], probe["height"]) == (320, 240) and len(probe["faces"]) >= len(PEOPLE)
        times = [face["video_time"] for face in probe["faces"]]
        assert 1.0 - INTERVAL <= times[0] <= 4.0 + INTERVAL  # tracks in order of appearance: Tony Blair's first
        powell = next(f["face"] for f in probe["faces"] if 5.0 - INTERVAL <= f["video_time"] <= 8.0 + INTERVAL)
        body = {"probe_id": probe["probe_id"], "face": powell, "case_id": "K-8", "purpose": "who is on the footage",
                "category": "missing person"}  # fmt: skip
        record = client.post("/api/searches", json=body)
        assert record.status_code == 201, record.text
        assert record.json()["probe_video_time"] == probe["faces"][powell]["video_time"]  # the record says when
        first = record.json()["candidates"][0]["face_id"]
        source = served.finder.store.faces([first])[first][1].source
        assert Path(source).parent.name == PEOPLE[1]  # Colin Powell's photo in the collection
        bad = client.post("/api/probes", files={"photo": ("clip.mp4", b"PK\x03\x04" + b"x" * 500, "video/mp4")})
        assert_error(bad, 400)
    finally:
        served.close()


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_frames_analysed_in_parallel_come_back_in_order_with_few_held(video, pipeline, monkeypatch, threads):
    """However many threads analyse a video's frames, they come back in time order and at most
    FRAMES_IN_FLIGHT are being analysed while one chunk decodes: memory does not grow with the video."""
    import gc
    import weakref

    from facefinder.services import video as service

    alive: list[weakref.ref] = []
    decode = service.sample_frames

    class Pixels(np.ndarray):  # a view that can be weakly referenced: alive while a frame is held
        pass

    def counted(*args, **kwargs):
        for frame in decode(*args, **kwargs):
            frame.image = frame.image.view(Pixels)
            alive.append(weakref.ref(frame.image))
            yield frame

    monkeypatch.setattr(service, "sample_frames", counted)
    counts = {"frames": 0, "decode": 0.0}
    times, most = [], 0
    gc.freeze()  # each collection below then scans what this test made, not the whole session's heap
    try:
        for when, _ in service._analysed(video, service.frame_pipeline(pipeline), 2.0, counts, None, threads):
            gc.collect()
            times.append(when)
            most = max(most, sum(ref() is not None for ref in alive))
    finally:
        gc.unfreeze()
    assert times == sorted(times) and len(times) == counts["frames"] == len(alive) >= 26
    assert most <= service.FRAMES_IN_FLIGHT + max(1, service.FRAMES_IN_FLIGHT // threads)
