"""The moment a video result points at, played in a real browser (issue 14): `facefinder serve` and
headless Chromium (Debian's, through Playwright, as in test_web_e2e.py). A video ingested from a
folder, a search by a photo through the API, then the candidate's page in the browser: the frame is
shown and the clip from a few seconds before the face was seen loads and plays."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from helpers import POLICY_ARGS, cli_command, lfw
from test_search_ui import cli, sign_in
from test_web_e2e import browser, password, serving  # noqa: F401
from videos import scenes_of, write_video

pytestmark = pytest.mark.slow


def api(url: str, token: str, path: str, body: dict | None = None, photo: bytes | None = None) -> dict:
    """One call to the API with a bearer token (a photo goes up as a multipart form)."""
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if photo is not None:
        boundary = "ffboundary"
        data = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="p.jpg"\r\n'
                f"Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + photo
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    elif body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url + path, data=data, headers=headers, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_the_clip_of_a_video_result_plays(tmp_path, models_dir, browser):
    data = tmp_path / "data"
    footage = tmp_path / "footage"
    footage.mkdir()
    people = ["Tony_Blair", "Colin_Powell", "Hugo_Chavez"]
    write_video(footage / "street.mp4", scenes_of([lfw(p, 1) for p in people], 3.0, gap=1.0), tail=1.0)
    cli(data, "users", "add", "ivan", "--role", "investigator", "--password-stdin", stdin=password("ivan") + "\n")
    cli(data, "ingest", str(footage), "--collection", "cctv", *POLICY_ARGS)
    cli(data, "users", "grant", "ivan", "cctv")
    made = subprocess.run([*cli_command(), "--data-dir", str(data), "users", "token", "ivan"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    token = next(word for word in made.stdout.split() if word.startswith("ff_"))
    with serving(data) as site:
        probe = api(site.url, token, "/api/probes", photo=Path(lfw("Colin_Powell", 2)).read_bytes())
        terms = {"case_id": "K-7", "purpose": "find the subject on the footage", "category": "missing person"}
        record = api(site.url, token, "/api/searches", {"probe_id": probe["probe_id"], "face": 0, **terms})
        [first] = [c for c in record["candidates"] if c["video_time"] is not None][:1]
        assert 4.0 - 0.5 <= first["video_time"] <= 8.0 + 0.5  # Colin Powell is on screen from 00:05 to 00:08

        context, page = sign_in(browser, site, "ivan")
        page.goto(f"/searches/{record['id']}/candidates/{first['rank']}")
        assert page.locator("#video-moment").inner_text().startswith("Seen at 00:0")
        assert page.evaluate("() => document.getElementById('source-photo').complete")
        played = page.evaluate(
            """async () => {
                const clip = document.getElementById('video-clip');
                clip.muted = true;
                clip.preload = 'auto';
                await clip.play();
                await new Promise((done) => setTimeout(done, 1500));
                return {time: clip.currentTime, duration: clip.duration, error: clip.error && clip.error.code,
                        width: clip.videoWidth};
            }"""
        )
        assert played["error"] is None and played["width"] == 320, played
        assert 5.0 <= played["duration"] <= 8.5 and played["time"] > 0.5, played  # from 3 s before, playing
        context.close()
    shutil.rmtree(footage)
