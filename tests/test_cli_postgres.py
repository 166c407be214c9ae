"""The local CLI on a PostgreSQL catalog (`--database-url`): ingest, search and delete as on SQLite."""

import json

from helpers import POLICY_ARGS, lfw
from service_helpers import backend  # noqa: F401
from typer.testing import CliRunner

from facefinder.interfaces.cli import app


def test_cli_on_each_catalog(tmp_path, backend):
    url = backend.new_url()
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data")] + (["--database-url", url] if url else [])

    def run(*args):
        result = runner.invoke(app, base + [str(a) for a in args])
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result.stdout

    photos = tmp_path / "photos"
    photos.mkdir()
    for n in (1, 2):
        (photos / f"blair{n}.jpg").write_bytes(lfw("Tony_Blair", n).read_bytes())
    report = json.loads(run("ingest", photos, "-c", "pg", "--workers", "0", "--json", *POLICY_ARGS))
    assert (report["ingested"], report["faces"]) == (2, 2)
    [record] = [json.loads(line) for line in run("search", lfw("Tony_Blair", 3), "--json").splitlines()]
    assert {c["source"] for c in record["candidates"]} == {str(photos / "blair1.jpg"), str(photos / "blair2.jpg")}
    run("delete", "collection", "pg", "--yes")
    assert json.loads(run("collections", "--json")) == []
    assert not (tmp_path / "data" / "catalog.db").exists() or not url  # PostgreSQL held the catalog
