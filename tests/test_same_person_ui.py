"""Several photos of one person, one search, on the web UI's search page (issue 12 item 3), in a real browser:
`facefinder serve` and headless Chromium (Debian's, through Playwright, as in test_web_e2e.py).

A photo of Tony Blair is added as "another photo of the same person" before the probe photo is chosen; a
probe photo with several faces, several of them picked, is refused with a word on why; the probe is then
another photo of him. A group photo added asks which face is the person, and holds the search until it is
picked or removed. The search runs as one search for one person from 2 photos: the result page lists the
face searched together with the probe face, its thumbnail served, and shows candidates, Tony Blair's photo
first; the record has one `same_person` face. axe finds nothing serious on either page. Back on the search page the photo added comes back; once the
server has let it go (newer uploads), the search is refused and the error, naming the photo, is shown next
to the control.
"""

from __future__ import annotations

import re

import pytest
from helpers import GROUP, lfw
from test_search_ui import first_photos, prepare_site, sign_in
from test_web_e2e import browser, password, serving  # noqa: F401
from test_web_ui import assert_no_serious, check_axe

pytestmark = pytest.mark.slow

PEOPLE = ["Tony_Blair", "Colin_Powell", "Hugo_Chavez", "Vladimir_Putin"]


def choose(page, opener: str, path) -> None:
    with page.expect_file_chooser() as chooser:
        page.click(opener)
    chooser.value.set_files(str(path))


def api(page, method: str, url: str, **kwargs):
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    response = page.request.fetch(url, method=method, headers={"X-CSRF-Token": csrf}, **kwargs)
    assert response.ok, response.text()
    return response.json()


def fill_case(page) -> None:
    page.fill("#case_id", "SP-12")
    page.select_option("#category", "missing person")
    page.fill("#purpose", "Find the man seen in two photos")


def test_two_photos_of_one_person_are_searched_as_one(tmp_path, models_dir, browser):
    from playwright.sync_api import expect

    data = tmp_path / "data"
    prepare_site(data, first_photos(tmp_path / "gallery", PEOPLE), "demo", {"ivan": "investigator"})

    with serving(data) as site:
        context, page = sign_in(browser, site, "ivan")
        page.goto("/search")
        added, status = page.locator("#same-person-list > li"), page.locator("#same-person-status")
        button, hint, faces = (
            page.locator("#search-button"),
            page.locator("#search-hint"),
            page.locator("#probe-faces .face"),
        )
        expect(page.locator("#same-person-add")).to_have_text("Add another photo of the same person")
        expect(status).to_have_text("")

        # another photo of him first: taken (one face), its thumbnail shown, with a remove button
        choose(page, "#same-person-add", lfw("Tony_Blair", 3))
        expect(added).to_have_count(1)
        expect(added.first).to_contain_text("Tony_Blair_0003.jpg")
        thumb = added.first.locator("img")
        expect(thumb).to_have_attribute("src", re.compile(r"/api/probes/[^/]+/faces/0/thumbnail$"))
        expect(thumb).to_have_attribute("alt", "the face of the person in Tony_Blair_0003.jpg")
        assert thumb.evaluate("(img) => img.complete && img.naturalWidth > 0")
        expect(added.first.get_by_role("button", name="Remove photo 2, Tony_Blair_0003.jpg")).to_be_visible()
        expect(status).to_contain_text("One search for one person, from 2 photos: choose the probe photo above too")

        # a probe photo with several faces, two picked: one search for one person takes one face of the probe
        choose(page, "#drop", GROUP / "sample1.jpg")
        expect(faces).to_have_count(3)
        faces.nth(0).click()
        faces.nth(1).click()
        expect(button).to_be_disabled()
        expect(hint).to_contain_text("You picked 2 faces in the probe photo")
        expect(status).to_contain_text("pick only the face of this person there")

        # the probe: another photo of him (one face, picked)
        choose(page, "#drop", lfw("Tony_Blair", 2))
        expect(faces).to_have_count(1)
        expect(faces.first).to_have_attribute("aria-pressed", "true")
        expect(status).to_have_text("One search for one person, from 2 photos.")
        expect(button).to_be_enabled()
        expect(button).to_have_text("Search as one person")

        # a group photo added: which face is the person? The search waits until one is picked, or it is removed
        choose(page, "#same-person-add", GROUP / "sample2.jpg")
        expect(added).to_have_count(2)
        group = added.nth(1)
        expect(group).to_contain_text("3 faces: pick the one of the person you search")
        expect(group.locator("button.face")).to_have_count(3)
        expect(button).to_be_disabled()
        expect(hint).to_have_text("Pick the face of the person in each photo added, or remove the photo.")
        group.locator("button.face").nth(2).click()
        expect(added.nth(1).locator("button.face").nth(2)).to_have_attribute("aria-pressed", "true")
        expect(status).to_have_text("One search for one person, from 3 photos.")
        found: dict = {}
        check_axe(page, "/search with 2 photos added", found)
        expect(button).to_be_enabled()
        added.nth(1).get_by_role("button", name="Remove photo 3, sample2.jpg").click()
        expect(added).to_have_count(1)
        expect(status).to_have_text("One search for one person, from 2 photos.")

        fill_case(page)
        button.click()
        page.wait_for_url(re.compile(r".*/searches/\d+$"))
        search_id = int(page.url.rsplit("/", 1)[1])
        together = page.locator("#same-person li")
        expect(page.locator("dt:text-is('Searched together with')")).to_be_visible()
        expect(page.locator("#same-person")).to_contain_text("one search for one person, from 2 faces (2 photos)")
        expect(together).to_have_count(1)
        extra = together.first.locator("img")
        expect(extra).to_have_attribute("src", f"/api/searches/{search_id}/same-person/1/thumbnail")
        assert extra.evaluate("(img) => img.complete && img.naturalWidth > 0")
        expect(together.first).to_contain_text("face 1 of photo")
        results = page.locator("#results .result")
        expect(results.first).to_be_visible()
        record = api(page, "GET", f"/api/searches/{search_id}")
        assert len(record["same_person"]) == 1, record["same_person"]
        assert record["same_person"][0]["number"] == 1 and record["same_person"][0]["face"] == 0
        assert record["candidates"], record
        check_axe(page, "/searches/{id} searched together", found)
        assert_no_serious(found)
        results.first.click()
        page.wait_for_url(re.compile(r".*/candidates/1$"))
        expect(page.locator("dt:text-is('Source') + dd")).to_contain_text("Tony_Blair.jpg")

        # Back on the search page, the photo added is back; then newer uploads push it out of the server
        page.goto("/search")
        expect(faces).to_have_count(1)
        expect(added).to_have_count(1)
        expect(page.locator("#same-person-restored")).to_contain_text("remove them if you now search for someone else")
        expect(status).to_have_text("One search for one person, from 2 photos.")
        photo = lfw("Colin_Powell", 2).read_bytes()
        for n in range(5):  # the server holds a user's newest 8 probes: the photo added is the oldest
            upload = {"photo": {"name": f"other{n}.jpg", "mimeType": "image/jpeg", "buffer": photo}}
            api(page, "POST", "/api/probes", multipart=upload)
        fill_case(page)
        button.click()
        error = page.locator("#same-person-error")
        expect(error).to_contain_text(
            re.compile(r"^Probe expired or replaced by newer uploads: upload the photo again")
        )
        expect(error).to_contain_text("'Tony_Blair_0003.jpg'")
        expect(page.locator("#search-error")).to_have_text("")
        assert page.url.endswith("/search")
        context.close()
