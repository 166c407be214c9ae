"""The people pages in a real browser (issue 13): `facefinder serve` and headless Chromium driven by
Playwright, as in test_web_e2e.py, on the 15 LFW test photos (5 people x 3).

An investigator groups the collection's faces from its people page, opens a person, merges another
into it, splits three faces off, confirms and labels it, adds a face by dragging a box on a photo and
rejects it from the review queue; an auditor then reads every one of those steps in the audit log, and
the person page without a face. The pages pass axe and fit a phone.
"""

from __future__ import annotations

import re

import pytest
from test_people import gallery
from test_search_ui import prepare_site, sign_in
from test_web_e2e import browser, serving  # noqa: F401

pytestmark = pytest.mark.slow

USERS = {"ivan": "investigator", "aud": "auditor"}


@pytest.fixture(scope="module")
def site(tmp_path_factory, models_dir):
    root = tmp_path_factory.mktemp("people-ui")
    data = root / "data"
    prepare_site(data, gallery(root), "lfw", USERS)
    with serving(data) as site:
        yield site


def reloaded(page, action) -> None:
    """Do something that makes the page reload itself (app.js does after each API call), and wait."""
    with page.expect_navigation():
        action()
    page.wait_for_load_state("networkidle")


def test_cluster_merge_split_confirm_label_draw_then_the_auditor_reads_it_all(site, browser):
    from playwright.sync_api import expect

    context, page = sign_in(browser, site, "ivan")
    page.goto("/collections")
    page.get_by_role("link", name="People").click()
    expect(page.locator("h1")).to_have_text("People of lfw")
    reloaded(page, lambda: page.click("#cluster-button"))
    cards = page.locator("#people-grid .person-card")
    expect(cards).to_have_count(5)
    expect(cards.first).to_contain_text("3 faces")
    assert all(page.locator("#people-grid img").evaluate_all("imgs => imgs.map(i => i.naturalWidth > 0)"))

    cards.first.locator("a").click()
    person_id = int(page.locator("#person-title").get_attribute("data-person"))
    expect(page.locator("#person-state")).to_have_text("suggestion")
    reloaded(page, lambda: page.click("#merge-form button[type=submit]"))  # the first other person
    expect(page.locator("#face-count")).to_contain_text("6 in 6 photos")

    for box in page.locator("#split-form input[name=face_ids]").all()[3:]:
        box.check()
    reloaded(page, lambda: page.click("#split-button"))
    expect(page.locator("#face-count")).to_contain_text("3 in 3 photos")
    reloaded(page, lambda: page.click("#confirm-button"))
    expect(page.locator("#person-state")).to_have_text("confirmed")
    page.fill("#label-form input[name=label]", "subject A")
    reloaded(page, lambda: page.click("#label-form button[type=submit]"))
    expect(page.locator("#person-title")).to_contain_text("subject A")

    page.locator("#split-form a[href^='/photos/']").first.click()  # the photo of one of their faces
    expect(page.locator("#draw-area .face-box[data-face]")).to_have_count(1)
    photo = page.locator("#draw-photo")
    expect(photo).to_be_visible()
    page.wait_for_function("document.getElementById('draw-photo').naturalWidth > 0")
    frame = photo.bounding_box()
    found = page.locator("#draw-area .face-box[data-face]").bounding_box()  # placed over the face, not at 0,0
    assert found["width"] > 0.2 * frame["width"] and found["x"] > frame["x"] + 0.1 * frame["width"], (found, frame)
    page.mouse.move(frame["x"] + 5, frame["y"] + 5)
    page.mouse.down()
    page.mouse.move(frame["x"] + 60, frame["y"] + 70, steps=5)
    page.mouse.up()
    expect(page.locator("#new-box")).to_be_visible()
    assert int(page.locator("#draw-form input[name=x2]").input_value()) > 20
    page.click("#draw-form button[type=submit]")
    expect(page.locator("#draw-result")).to_contain_text(re.compile(r"Added face \d+ \(no landmarks found"))
    page.wait_for_load_state("networkidle")
    expect(page.locator("#draw-area .face-box.drawn")).to_have_count(1, timeout=15_000)
    drawn = page.locator("#draw-area .face-box.drawn").get_attribute("data-face")

    page.goto("/collections/lfw/people/review")  # the drawn face waits there, unassigned: not a person
    item = page.locator(f"#review-list .review-item[data-face='{drawn}']")
    expect(item).to_contain_text("drawn by ivan")
    reloaded(page, lambda: item.get_by_role("button", name="Not a person to group").click())
    expect(page.locator("#queue-empty")).to_be_visible()
    context.close()

    context, page = sign_in(browser, site, "aud")
    page.goto("/audit?action=people&actor=ivan")
    actions = set(page.locator("#audit .action").all_inner_texts())
    steps = {"people.cluster", "people.merge", "people.split", "people.confirm", "people.label", "people.face.draw"}
    steps |= {"people.reject"}
    assert steps <= actions, actions
    expect(page.locator("#audit")).to_contain_text("subject A")  # the label, as given
    page.goto(f"/people/{person_id}")
    expect(page.locator("#person-title")).to_contain_text("subject A")
    assert page.locator("#faces img").count() == 0 and page.locator("#corrections").count() == 0
    context.close()


def test_the_people_pages_pass_axe_and_fit_a_phone(site, browser):
    """No serious or critical axe finding on the people pages, at desktop and phone width, and nothing
    wider than a phone (runs after the test above, which made the people)."""
    from axe_playwright_python.sync_playwright import Axe

    context, page = sign_in(browser, site, "ivan")
    page.goto("/collections/lfw/people")
    person = page.locator("#people-grid a").first.get_attribute("href")
    page.goto(person)
    photo = page.locator("#split-form a[href^='/photos/']").first.get_attribute("href")
    found, wide = {}, {}
    for path in ("/collections/lfw/people", person, "/collections/lfw/people/review?below=1.0", photo):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        for name, size in (("desktop", {"width": 1280, "height": 860}), ("phone", {"width": 390, "height": 844})):
            page.set_viewport_size(size)
            serious = [v for v in Axe().run(page).response["violations"] if v["impact"] in ("serious", "critical")]
            if serious:
                found[f"{path} @ {name}"] = [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in serious]
            scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            if scroll > inner:
                wide[f"{path} @ {name}"] = scroll
    context.close()
    assert found == {} and wide == {}, (found, wide)
