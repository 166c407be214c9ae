"""Ingest from S3-compatible object storage (s3://bucket/prefix), against a real local S3 server (moto)."""

from __future__ import annotations

import json

import pytest
from helpers import POLICY, lfw

from facefinder.errors import FaceFinderError

boto3 = pytest.importorskip("boto3")
server_module = pytest.importorskip("moto.server")


@pytest.fixture
def bucket(monkeypatch):
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="photos")
    yield client
    server.stop()


def test_ingest_from_a_bucket(bucket, make_finder):
    bucket.put_object(Bucket="photos", Key="case/blair1.jpg", Body=lfw("Tony_Blair", 1).read_bytes())
    bucket.put_object(
        Bucket="photos",
        Key="case/blair1.jpg.json",
        Body=json.dumps({"case_id": "K-7", "source_url": "https://example.org/1"}).encode(),
    )
    bucket.put_object(Bucket="photos", Key="case/sub/blair2.jpg", Body=lfw("Tony_Blair", 2).read_bytes())
    bucket.put_object(Bucket="photos", Key="case/broken.jpg", Body=b"\xff\xd8\xff not a jpeg")
    bucket.put_object(Bucket="photos", Key="case/pack.zip", Body=b"PK")
    bucket.put_object(Bucket="photos", Key="other/powell.jpg", Body=lfw("Colin_Powell", 1).read_bytes())

    ff = make_finder()
    report = ff.ingest("s3://photos/case/", collection="bucket", **POLICY)
    assert (report.ingested, report.faces) == (2, 2)
    assert sorted((f.source, f.reason) for f in report.failures) == [
        ("s3://photos/case/broken.jpg", "not-an-image"),
        ("s3://photos/case/pack.zip", "not-an-image"),
    ]

    [record] = ff.search(lfw("Tony_Blair", 3), collections=["bucket"])
    by_source = {c.source: c for c in record.candidates}
    assert set(by_source) == {"s3://photos/case/blair1.jpg", "s3://photos/case/sub/blair2.jpg"}
    assert by_source["s3://photos/case/blair1.jpg"].provenance["case_id"] == "K-7"

    again = ff.ingest("s3://photos/case/", collection="bucket")
    assert (again.ingested, again.duplicates) == (0, 2)


def test_unknown_bucket_is_one_clear_error(bucket, make_finder):
    with pytest.raises(FaceFinderError, match="s3://nowhere/x: cannot list objects"):
        make_finder().ingest("s3://nowhere/x", collection="bucket", **POLICY)


def test_a_remote_worker_reads_an_object_by_its_location(bucket):
    """What a Ray actor does with an s3:// item: one S3 client per process, the size cap enforced."""
    from facefinder.errors import ImageError
    from facefinder.services.sources import object_storage
    from facefinder.services.sources.folders import iter_sources, read_location

    photo = lfw("Tony_Blair", 1).read_bytes()
    bucket.put_object(Bucket="photos", Key="worker/blair1.jpg", Body=photo)  # moto's state outlives a server
    object_storage._process_client.cache_clear()  # each test's moto server has its own address
    [item] = iter_sources("s3://photos/worker/")
    assert item.location == "s3://photos/worker/blair1.jpg"
    assert read_location(item.location, item.size) == photo
    with pytest.raises(ImageError, match="too-large"):
        object_storage.read_object(item.location, 10**12, 10**6)


def test_a_video_in_a_bucket_ingests_and_its_results_point_into_it(bucket, make_finder, tmp_path):
    """A video object is read under the byte cap, spooled to a temporary file for FFmpeg, and tracked."""
    from videos import scenes_of, write_video

    video = write_video(tmp_path / "lobby.mp4", scenes_of([lfw("Colin_Powell", 1)], 3.0, gap=2.0))
    bucket.put_object(Bucket="photos", Key="cctv/lobby.mp4", Body=video.read_bytes())
    bucket.put_object(Bucket="photos", Key="cctv/fake.mp4", Body=b"PK\x03\x04 a renamed zip")
    ff = make_finder()
    report = ff.ingest("s3://photos/cctv/", collection="cctv", **POLICY)
    assert report.ingested == 1 and [(f.source, f.reason) for f in report.failures] == [
        ("s3://photos/cctv/fake.mp4", "not-a-video")
    ]
    [record] = ff.search(lfw("Colin_Powell", 2), collections=["cctv"])
    best = record.candidates[0]
    assert best.source == "s3://photos/cctv/lobby.mp4" and 2.0 - 0.5 <= best.video_time <= 5.0 + 0.5
    assert ff.ingest("s3://photos/cctv/", collection="cctv").duplicates == 1  # resumable
