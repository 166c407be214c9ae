"""Search like this person, in a real browser: `facefinder serve` and headless Chromium driven by
Playwright, as in test_people_ui.py, on the 15 LFW test photos (5 people x 3).

An investigator groups the faces, splits one face of a person off into a person of its own (as
clustering sometimes does), then searches like the first person from their page: a missing purpose is
refused by the browser, a blank one by the server next to the field; with case, category and purpose
the page lists the split-off person and the single face, with scores, bands and thumbnails, and the
threshold used. The auditor finds the search (`people.search`, with its case) in the audit log and a
person page without the search form. The page with its results passes axe and fits a phone.
"""

from __future__ import annotations

import re

import pytest
from test_people import gallery
from test_people_ui import reloaded
from test_search_ui import prepare_site, sign_in
from test_web_e2e import browser, password, serving  # noqa: F401

pytestmark = pytest.mark.slow

USERS = {"ivan": "investigator", "aud": "auditor"}
CASE = "LIKE-2026-7"


@pytest.fixture(scope="module")
def site(tmp_path_factory, models_dir):
    root = tmp_path_factory.mktemp("people-search-ui")
    data = root / "data"
    prepare_site(data, gallery(root), "lfw", USERS)
    with serving(data) as site:
        yield site


def no_serious_axe_finding_and_fits(page) -> dict:
    from axe_playwright_python.sync_playwright import Axe

    found = {}
    for name, size in (("desktop", {"width": 1280, "height": 860}), ("phone", {"width": 390, "height": 844})):
        page.set_viewport_size(size)
        serious = [v for v in Axe().run(page).response["violations"] if v["impact"] in ("serious", "critical")]
        if serious:
            found[name] = [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in serious]
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        if scroll > inner:
            found[f"{name} width"] = scroll
    page.set_viewport_size({"width": 1280, "height": 860})
    return found


def test_search_like_a_person_from_their_page_then_the_auditor_finds_it(site, browser):
    from playwright.sync_api import expect

    context, page = sign_in(browser, site, "ivan")
    page.goto("/collections/lfw/people")
    reloaded(page, lambda: page.click("#cluster-button"))
    expect(page.locator("#people-grid .person-card")).to_have_count(5)
    page.locator("#people-grid .person-card a").first.click()
    person_id = int(page.locator("#person-title").get_attribute("data-person"))
    expect(page.locator("#face-count")).to_contain_text("3 in 3 photos")
    page.locator("#split-form input[name=face_ids]").last.check()  # clustering's mistake: one face apart
    reloaded(page, lambda: page.click("#split-button"))
    expect(page.locator("#face-count")).to_contain_text("2 in 2 photos")

    form = page.locator("#like-form")
    expect(form).to_be_visible()
    page.fill("#like-case_id", CASE)
    page.select_option("#like-category", "missing person")
    page.click("#like-button")  # no purpose: the browser refuses it, as on the search page; nothing is sent
    assert page.eval_on_selector("#like-purpose", "e => e.validity.valueMissing")
    expect(page.locator("#like-results")).to_be_hidden()
    page.fill("#like-purpose", "   ")  # blank: the server refuses it, named next to the field
    page.click("#like-button")
    error = page.locator("#like-purpose-error")
    expect(error).to_contain_text("Purpose: say why this search is run")
    expect(page.locator("#like-purpose")).to_have_attribute("aria-invalid", "true")
    assert page.evaluate("document.activeElement.id") == "like-purpose"
    expect(page.locator("#like-results")).to_be_hidden()

    page.fill("#like-purpose", "Find the rest of this person's photos")
    page.click("#like-button")
    expect(page.locator("#like-results")).to_be_visible()
    expect(error).to_be_empty()
    expect(page.locator("#like-purpose")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#like-status")).to_contain_text("Found 1 person")
    expect(page.locator("#like-threshold")).to_contain_text(re.compile(r"threshold 0\.\d{3}"))
    expect(page.locator("#like-empty")).to_be_hidden()

    people = page.locator("#like-people .result")
    expect(people).to_have_count(1)  # the face split off: the same identity, scored as a person
    expect(people.first).to_contain_text(re.compile(r"Person #\d+"))
    expect(people.first).to_contain_text("1 face")
    expect(people.first.locator(".score")).to_have_text(re.compile(r"^0\.\d{3}$"))
    expect(people.first.locator(".band")).to_have_text(re.compile(r"^(strong|possible|weak)$"))
    other = people.first.get_attribute("href")
    assert re.fullmatch(r"/people/\d+", other) and other != f"/people/{person_id}", other

    faces = page.locator("#like-faces .result")
    expect(faces.first).to_be_visible()
    assert faces.count() >= 1
    expect(faces.first).to_contain_text(re.compile(r"face \d+, photo #\d+"))
    expect(faces.first.locator(".score")).to_have_text(re.compile(r"^0\.\d{3}$"))
    expect(faces.first.locator(".band")).to_have_text(re.compile(r"^(strong|possible|weak)$"))
    assert re.fullmatch(r"/photos/\d+", faces.first.get_attribute("href"))
    page.wait_for_load_state("networkidle")
    assert all(page.locator("#like-results img").evaluate_all("imgs => imgs.map(i => i.naturalWidth > 0)"))
    assert no_serious_axe_finding_and_fits(page) == {}

    people.first.click()  # to that person's page
    page.wait_for_url(f"**{other}")
    expect(page.locator("#face-count")).to_contain_text("1 in 1 photo")
    context.close()

    context, page = sign_in(browser, site, "aud")
    page.goto(f"/audit?action=people.search&case_id={CASE}")
    expect(page.locator("#audit .action")).to_have_count(1)  # the blank purpose was refused before any search
    row = page.locator("#audit tbody tr").first
    expect(row).to_contain_text("ivan")
    expect(row).to_contain_text(CASE)
    expect(row).to_contain_text("Find the rest of this person's photos")
    page.goto(f"/people/{person_id}")
    expect(page.locator("#person-title")).to_be_visible()
    assert page.locator("#search-like").count() == 0 and page.locator("#like-form").count() == 0
    context.close()
