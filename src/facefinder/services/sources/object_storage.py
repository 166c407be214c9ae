"""Photos in S3-compatible object storage the operator holds: ``s3://bucket/prefix``.

Listed with boto3 (install ``facefinder[s3]``); credentials and endpoint come from the usual AWS
settings (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` for MinIO, Ceph and the
like). Provenance works as in folders: a sidecar ``key.json`` (or ``key`` with its suffix replaced
by ``.json``) next to a photo, or a ``manifest.csv`` under the prefix with keys relative to it.
Archives are not unpacked from object storage: download them and ingest the file.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from urllib.parse import urlparse

from facefinder.errors import FaceFinderError, ImageError
from facefinder.services.sources.provenance import failing_read, parse_manifest, parse_sidecar


def is_object_uri(path: object) -> bool:
    return isinstance(path, str) and path.startswith("s3://")


def iter_objects(
    uri: str, source_item, skipped_suffixes: tuple[str, ...], archive_suffixes: tuple[str, ...], max_bytes: int
) -> Iterator:
    """SourceItems for every object under ``uri``, sorted by key (``source_item`` builds them)."""
    client, bucket, prefix = _client(uri)
    try:
        keys = {
            obj["Key"]: obj["Size"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        }
    except Exception as exc:  # botocore raises many types: name the URI and what the service said
        raise FaceFinderError(f"{uri}: cannot list objects ({exc})") from None
    manifest = _manifest(client, bucket, prefix, keys)
    for key in sorted(keys):
        name = key.rsplit("/", 1)[-1]
        if not name or name.startswith(".") or name.lower().endswith(skipped_suffixes):
            continue
        source = f"s3://{bucket}/{key}"
        if name.lower().endswith(archive_suffixes):
            yield source_item(
                source,
                0,
                failing_read(
                    source,
                    "not-an-image",
                    "archives are not unpacked from object storage: download the archive and ingest the file",
                ),
                {},
            )
            continue
        try:
            provenance = {**manifest.get(key[len(prefix) :].lstrip("/"), {}), **_sidecar(client, bucket, key, keys)}
        except FaceFinderError as exc:
            yield source_item(source, 0, failing_read(source, "bad-sidecar", str(exc)), {})
            continue
        yield source_item(
            source, keys[key], _reader(client, bucket, key, keys[key], max_bytes), provenance, location=source
        )


def read_object(uri: str, size: int, max_bytes: int) -> bytes:
    """One object's bytes, from any process (a distributed ingest's workers read this way)."""
    bucket, key = _locate(uri)
    return _reader(_process_client(), bucket, key, size, max_bytes)()


@functools.lru_cache(maxsize=1)
def _process_client():
    """One S3 client per process (making one costs tens of milliseconds; they are thread-safe)."""
    import boto3

    return boto3.client("s3")


def _client(uri: str):
    try:
        import boto3
    except ImportError:
        raise FaceFinderError(f"{uri}: object storage needs boto3: pip install 'facefinder[s3]'") from None
    return (boto3.client("s3"), *_locate(uri))


def _locate(uri: str) -> tuple[str, str]:
    """(bucket, key or prefix) of an s3:// URI."""
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise FaceFinderError(f"{uri}: expected s3://bucket/prefix")
    return parsed.netloc, parsed.path.lstrip("/")


def _get(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def _reader(client, bucket: str, key: str, size: int, max_bytes: int):
    def read() -> bytes:
        if size > max_bytes:
            raise ImageError(f"s3://{bucket}/{key}", "too-large", f"{size:,} bytes exceeds the {max_bytes:,}-byte cap")
        try:
            return _get(client, bucket, key)
        except Exception as exc:
            raise ImageError(f"s3://{bucket}/{key}", "unreadable", str(exc)) from None

    return read


def _sidecar(client, bucket: str, key: str, keys: dict[str, int]) -> dict[str, str]:
    stem = key.rsplit(".", 1)[0] if "." in key.rsplit("/", 1)[-1] else key
    for candidate in (key + ".json", stem + ".json"):
        if candidate in keys:
            return parse_sidecar(_get(client, bucket, candidate), f"s3://{bucket}/{candidate}")
    return {}


def _manifest(client, bucket: str, prefix: str, keys: dict[str, int]) -> dict[str, dict[str, str]]:
    key = (prefix.rstrip("/") + "/manifest.csv").lstrip("/") if prefix else "manifest.csv"
    if key not in keys:
        return {}
    return parse_manifest(_get(client, bucket, key), f"s3://{bucket}/{key}")
