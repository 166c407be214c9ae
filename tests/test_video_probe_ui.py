"""A video as the probe on the web UI's search page, in a real browser (issue 14): `facefinder serve` and
headless Chromium (Debian's, through Playwright, as in test_web_e2e.py). A video made from two people's
photos is uploaded on the search page: each face track is listed by its face with when it was seen (no
picture with boxes), one is picked and searched for a case, and its person's photo is the first result.
The page then brings the video probe's faces back without a picture; a video over the size cap and a
video without a face are each told so."""

from __future__ import annotations

import re

import pytest
from helpers import lfw
from PIL import Image
from test_search_ui import first_photos, prepare_site, sign_in
from test_web_e2e import browser, password, serving  # noqa: F401
from videos import scenes_of, write_video

pytestmark = pytest.mark.slow

PEOPLE = ["Tony_Blair", "Colin_Powell", "Hugo_Chavez"]


def seconds(label: str) -> int:
    """The time in a face's label, "Face 2 · at 01:05", in seconds."""
    minutes, secs = re.search(r"· at (\d\d):(\d\d)$", label).groups()
    return int(minutes) * 60 + int(secs)


def upload(page, path) -> None:
    with page.expect_file_chooser() as chooser:
        page.click("#drop")
    chooser.value.set_files(str(path))


def test_a_video_probe_lists_its_face_tracks_and_one_is_searched(tmp_path, models_dir, browser):
    from playwright.sync_api import expect

    data = tmp_path / "data"
    prepare_site(data, first_photos(tmp_path / "gallery", PEOPLE), "demo", {"ivan": "investigator"})
    # Tony Blair on screen from 00:01 to 00:03, Colin Powell from 00:04 to 00:06 (other photos than the gallery's)
    clip = write_video(tmp_path / "clip.mp4", scenes_of([lfw("Tony_Blair", 2), lfw("Colin_Powell", 2)], 2.0, gap=1.0))
    Image.new("RGB", (320, 240), (90, 140, 60)).save(tmp_path / "grass.png")
    empty = write_video(tmp_path / "empty.webm", scenes_of([tmp_path / "grass.png"], 2.0), codec="libvpx")

    with serving(data) as site:
        context, page = sign_in(browser, site, "ivan")
        page.goto("/search")
        accept = page.get_attribute("#probe-file", "accept")
        assert "video/*" in accept and ".mkv" in accept and "image/*" in accept
        expect(page.locator("#drop-help")).to_contain_text("video")
        faces, error = page.locator("#probe-faces .face"), page.locator("#probe-error")

        # over the size cap (lowered on this page only): refused before anything is sent
        page.evaluate("() => { document.getElementById('search-app').dataset.maxProbe = '2000'; }")
        upload(page, clip)
        expect(error).to_contain_text("This video is over the size cap")
        page.reload()

        # a video without a face: said so
        upload(page, empty)
        expect(error).to_contain_text("No face was found in this video")
        expect(page.locator("#face-count")).to_have_text("(0 face tracks)")
        expect(faces).to_have_count(0)
        expect(page.locator("#search-button")).to_be_disabled()

        upload(page, clip)
        expect(faces).to_have_count(2)
        expect(error).to_have_text("")
        expect(page.locator("#face-help")).to_contain_text("2 face tracks found in the video")
        expect(page.locator(".probe-stage")).to_be_hidden()  # no picture, no boxes
        expect(page.locator("#probe-boxes .box")).to_have_count(0)
        labels = faces.all_inner_texts()
        assert [label.split(" · ")[0] for label in labels] == ["Face 1", "Face 2"], labels
        times = [seconds(label) for label in labels]
        assert 1 <= times[0] <= 3 and 4 <= times[1] <= 6, labels
        for n in range(2):
            expect(faces.nth(n).locator("img")).to_have_attribute("src", re.compile(rf"/faces/{n}/thumbnail$"))
            assert faces.nth(n).evaluate("(b) => b.querySelector('img').naturalWidth > 0")
        faces.nth(1).click()  # Colin Powell
        expect(faces.nth(1)).to_have_attribute("aria-pressed", "true")
        page.fill("#case_id", "V-14")
        page.select_option("#category", "missing person")
        page.fill("#purpose", "Find the second person seen in the clip")
        page.click("#search-button")
        page.wait_for_url(re.compile(r".*/searches/\d+$"))
        results = page.locator("#results .result")
        expect(results.first).to_be_visible()
        expect(page.locator("#probe-face")).to_contain_text(re.compile(r"face 2 of the video, seen at 00:0[4-6]"))
        results.first.click()
        page.wait_for_url(re.compile(r".*/candidates/1$"))
        expect(page.locator("dt:text-is('Source') + dd")).to_contain_text("Colin_Powell.jpg")

        # the search page again: the video probe's faces come back, without a picture, the face picked kept
        page.goto("/search")
        expect(page.locator("#probe-restored")).to_contain_text("your last probe video")
        expect(faces).to_have_count(2)
        expect(faces.nth(1)).to_have_attribute("aria-pressed", "true")
        expect(faces.nth(0)).to_contain_text(" · at 00:0")
        expect(page.locator(".probe-stage")).to_be_hidden()
        expect(page.locator("#search-button")).to_be_enabled()
        context.close()
