"""The store suite (test_store.py) again with the HNSW and the IVF-PQ index tiers forced."""

import pytest
from test_store import *  # noqa: F401,F403  (the tests, collected again here under each tier)


@pytest.fixture(autouse=True, params=["hnsw", "ivfpq"])
def _index_tier(request, monkeypatch):
    monkeypatch.setenv("FACEFINDER_INDEX_TIER", request.param)
    return request.param
