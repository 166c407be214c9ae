"""``kill -9`` at random moments of writing, checkpointing and erasing, twenty times over.

After every kill a fresh process must find the store sound: every stored face found by searching
itself, index == catalog, no erased face back (tests/test_crash.py does the same to a real CLI ingest).
"""

from __future__ import annotations

import random
import signal
import time

import pytest
from integrity import assert_sound, worker
from test_store_concurrency import create_collection


@pytest.mark.slow
@pytest.mark.parametrize("tier", ["flat", "hnsw"])
def test_kill_9_at_twenty_random_moments(tmp_path, monkeypatch, tier):
    monkeypatch.setenv("FACEFINDER_INDEX_TIER", tier)
    data = tmp_path / "data"
    create_collection(data, None, None)
    rng = random.Random(tier)
    stored = 0
    for kill in range(20):
        process = worker("churn", data, f"k{kill}")
        time.sleep(rng.uniform(1.0, 3.0))  # ~1 s to start (imports), then writes, checkpoints and erasures
        assert process.poll() is None, process.communicate()[0]
        process.send_signal(signal.SIGKILL)
        process.wait()
        stored = assert_sound(data)
    assert stored > 0
