"""The investigator's and the auditor's flow in a real browser (issue 11's UI findings): `facefinder serve`
and headless Chromium driven by Playwright, as in test_web_e2e.py (Debian's chromium, no download).

A search made with the keyboard alone (Tab, Enter, Space, and typing in the text fields): the photo
picker is reached and opened from the keyboard, two faces of a group photo are picked from the
numbered list (the boxes on the photo carry the same numbers), the search makes one record per face,
linked to each other; a result is opened and proposed. Back brings the probe back, with the faces
picked; unticking every collection is refused by name. The auditor filters by the start of an action,
is told when a date is wrong, reads details in words, and goes from an entry to its search and back.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import GALLERY, GROUP, POLICY_ARGS, cli_command, lfw
from test_web_e2e import Server, browser, password, serving  # noqa: F401

pytestmark = pytest.mark.slow

USERS = {"ivan": "investigator", "inga": "investigator", "aud": "auditor"}
DESKTOP = {"width": 1280, "height": 860}


def cli(data: Path, *args: str, stdin: str | None = None) -> None:
    done = subprocess.run(
        [*cli_command(), "--data-dir", str(data), *args], input=stdin, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]


def prepare_site(data: Path, gallery: Path, collection: str, users: dict[str, str], granted=("ivan",)) -> None:
    """A server's data directory: the accounts (name -> role, each with its test password), ``gallery``
    ingested into ``collection``, and that collection granted to the ``granted`` investigators."""
    for user, role in users.items():
        cli(data, "users", "add", user, "--role", role, "--password-stdin", stdin=password(user) + "\n")
    cli(data, "ingest", str(gallery), "--collection", collection, *POLICY_ARGS)
    for user in granted:
        cli(data, "users", "grant", user, collection)


def first_photos(folder: Path, people: list[str]) -> Path:
    """``folder`` holding the first LFW test photo of each of ``people``, as <person>.jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    for person in people:
        shutil.copy(lfw(person, 1), folder / f"{person}.jpg")
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory, models_dir):
    """A server with the sample gallery in collection 'demo', granted to both investigators."""
    data = tmp_path_factory.mktemp("search-ui") / "data"
    prepare_site(data, GALLERY, "demo", USERS, granted=("ivan", "inga"))
    with serving(data) as site:
        yield site


def sign_in(browser, site: Server, user: str):
    context = browser.new_context(viewport=DESKTOP, base_url=site.url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto("/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password(user))
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "/login" not in page.url, page.content()[:2000]
    return context, page


def choose_by_keyboard(page, selector: str, photo: Path) -> None:
    """Open the focused file picker with Space, as a keyboard user would, and choose ``photo``. Under a
    loaded CI machine Chromium now and then lets a key press on a file input go by without a dialog
    (once in many runs): then the focus is checked again and Enter, the other key that opens it, is
    tried; a picker that opens with neither fails the test."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for key in ("Space", "Enter"):
        assert focused(page, selector), page.evaluate("document.activeElement.outerHTML")
        try:
            with page.expect_file_chooser(timeout=10_000) as chooser:
                page.keyboard.press(key)
        except PlaywrightTimeout:
            continue
        chooser.value.set_files(str(photo))
        return
    raise AssertionError(f"neither Space nor Enter opened the file picker {selector}")


def focused(page, selector: str) -> bool:
    return page.evaluate("(s) => !!document.activeElement && document.activeElement.matches(s)", selector)


def tab_to(page, selector: str, limit: int = 60) -> None:
    """Press Tab until the element matching ``selector`` has the focus (as a keyboard user would)."""
    for _ in range(limit):
        if focused(page, selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(
        f"Tab never reached {selector}; focus is on {page.evaluate('document.activeElement.outerHTML')}"
    )


def test_a_keyboard_only_search_of_two_faces_then_back_to_the_probe(site, browser):
    from playwright.sync_api import expect

    context, page = sign_in(browser, site, "ivan")
    page.goto("/search")
    page.wait_for_load_state("networkidle")
    tab_to(page, "#probe-file")  # the picker is in the tab order, and shows that it has the focus
    outline = page.evaluate("getComputedStyle(document.getElementById('drop')).outlineStyle")
    assert outline not in ("none", ""), outline
    choose_by_keyboard(page, "#probe-file", GROUP / "sample1.jpg")
    faces = page.locator("#probe-faces .face")
    expect(faces).to_have_count(3)
    expect(faces.nth(0)).to_contain_text("Face 1")
    numbers = page.locator("#probe-boxes .box-number")
    expect(numbers).to_have_count(3)
    assert numbers.all_inner_texts() == ["1", "2", "3"]
    tab_to(page, '#probe-faces .face[data-face="0"]')
    page.keyboard.press("Enter")
    tab_to(page, '#probe-faces .face[data-face="2"]')
    page.keyboard.press("Space")
    expect(faces.nth(0)).to_have_attribute("aria-pressed", "true")
    expect(faces.nth(1)).to_have_attribute("aria-pressed", "false")
    expect(faces.nth(2)).to_have_attribute("aria-pressed", "true")
    expect(page.locator('#probe-boxes .box[data-face="2"]')).to_have_class(re.compile("chosen"))
    tab_to(page, "#case_id")
    page.keyboard.type("KEY-1")
    tab_to(page, "#category")
    page.keyboard.type("missing person")
    expect(page.locator("#category")).to_have_value("missing person")
    tab_to(page, "#purpose")
    page.keyboard.type("Find the people in the group photo")
    tab_to(page, "#search-button")
    expect(page.locator("#search-button")).to_have_text("Search 2 faces")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/searches/\d+$"))
    first = int(page.url.rsplit("/", 1)[1])
    tabs = page.locator("#probe-searches .face-tabs li")
    expect(tabs).to_have_count(2)
    expect(tabs.nth(0)).to_contain_text("Face 1")
    expect(tabs.nth(1)).to_contain_text("Face 3")
    expect(page.locator("#probe-face")).to_contain_text("face 1 of the photo")
    page.wait_for_load_state("networkidle")

    # open a result and propose it, still from the keyboard
    if page.locator("#results .result").count():
        tab_to(page, "#results .result")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r".*/candidates/\d+$"))
        tab_to(page, "#propose-form textarea")
        page.keyboard.type("Same face shape as face 1 of the group photo")
        tab_to(page, "#propose-form button[type=submit]")
        page.keyboard.press("Enter")
        expect(page.locator("#lead-status")).to_have_text("proposed")
        page.go_back()
    else:  # nobody in the gallery matched: the page says so without claiming absence
        expect(page.locator("#no-match")).to_contain_text("not evidence that the person is absent")

    # Back: the probe comes back, with both faces picked (kept by the page, or brought back from the tab)
    page.go_back()
    page.wait_for_url("**/search")
    expect(faces).to_have_count(3)
    expect(faces.nth(0)).to_have_class(re.compile("chosen"))
    expect(faces.nth(2)).to_have_class(re.compile("chosen"))
    page.goto("/search")  # a fresh load of the page: from the tab's copy and the server's probe
    expect(page.locator("#probe-restored")).to_be_visible()
    expect(faces).to_have_count(3)
    expect(faces.nth(0)).to_have_attribute("aria-pressed", "true")
    expect(faces.nth(2)).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#probe-boxes .box-number")).to_have_count(3)
    for face in ("0", "1", "2"):  # unpick face 1, pick face 2, unpick face 3: another face of the same probe
        tab_to(page, f'#probe-faces .face[data-face="{face}"]')
        page.keyboard.press("Enter")
    expect(page.locator("#search-button")).to_have_text("Search")
    expect(faces.nth(1)).to_have_attribute("aria-pressed", "true")

    # no collection ticked: an error naming the field, no search
    tab_to(page, 'input[name="collections"]')
    page.keyboard.press("Space")
    expect(page.locator('input[name="collections"]')).not_to_be_checked()
    tab_to(page, "#case_id")
    page.keyboard.type("KEY-1")
    tab_to(page, "#category")
    page.keyboard.type("missing person")
    tab_to(page, "#purpose")
    page.keyboard.type("Find the people in the group photo")
    tab_to(page, "#search-button")
    page.keyboard.press("Enter")
    expect(page.locator("#search-error")).to_contain_text("at least one collection")
    expect(page.locator("#search-error")).to_contain_text("Collections")
    assert page.url.endswith("/search")
    assert focused(page, 'input[name="collections"]')
    page.keyboard.press("Space")  # tick it again: the search runs, and joins the other two
    tab_to(page, "#search-button")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/searches/\d+$"))
    expect(page.locator("#probe-searches .face-tabs li")).to_have_count(3)
    expect(page.locator(f'#probe-searches a[href="/searches/{first}"]')).to_be_visible()
    context.close()


def test_the_auditor_filters_reads_and_follows_links(site, browser):
    from playwright.sync_api import expect

    context, ivan = sign_in(browser, site, "ivan")
    csrf = ivan.locator('meta[name="csrf-token"]').get_attribute("content")
    photo = (GALLERY / "penny" / "penny1.png").read_bytes()
    upload = ivan.request.post(
        "/api/probes",
        headers={"X-CSRF-Token": csrf},
        multipart={"photo": {"name": "p.png", "mimeType": "image/png", "buffer": photo}},
    )
    body = {
        "probe_id": upload.json()["probe_id"],
        "case_id": "AUD-UI",
        "purpose": "audit UI",
        "category": "fraud investigation",
    }
    search = ivan.request.post("/api/searches", headers={"X-CSRF-Token": csrf}, data=body).json()
    sid = search["id"]
    for step, note in (("propose", "similar hairline"), ("not-a-match", "the birth mark differs")):
        response = ivan.request.post(
            f"/api/searches/{sid}/candidates/1/{step}", headers={"X-CSRF-Token": csrf}, data={"note": note}
        )
        assert response.ok, response.text()
    context.close()

    context, page = sign_in(browser, site, "aud")
    page.fill("#audit-filters input[name=action]", "lead")
    page.fill("#audit-filters input[name=case_id]", "AUD-UI")
    page.press("#audit-filters input[name=case_id]", "Enter")
    page.wait_for_load_state("networkidle")
    actions = page.locator("#audit .action").all_inner_texts()
    assert sorted(actions) == ["lead.not_a_match", "lead.propose"], actions
    expect(page.locator("#audit")).to_contain_text("the birth mark differs")  # the note, in words
    expect(page.locator("#audit dl.details").first).to_contain_text("was")
    page.fill("#audit-filters input[name=since]", "last week")
    page.press("#audit-filters input[name=since]", "Enter")
    expect(page.locator("#filter-error")).to_contain_text("Since")
    expect(page.locator("#filter-error")).to_contain_text("not a date or time")
    expect(page.locator("#audit-filters input[name=since]")).to_have_attribute("aria-invalid", "true")
    page.goto("/audit?case_id=AUD-UI&action=search")
    page.locator(f'#audit a[href="/searches/{sid}"]').click()
    page.wait_for_url(f"**/searches/{sid}")
    trail = page.locator("#audit-trail")
    expect(trail).to_contain_text("lead.not_a_match")
    expect(trail).to_contain_text("the birth mark differs")
    expect(page.locator("#results")).to_contain_text("similar hairline")  # lead notes, without faces
    assert page.locator("img[src*='/thumbnail']").count() == 0
    trail.get_by_role("link", name="Open in the audit log").click()
    page.wait_for_url(f"**/audit?search_id={sid}")
    expect(page.locator("#search-filter")).to_contain_text(f"search {sid}")
    assert set(page.locator("#audit .action").all_inner_texts()) >= {"search", "lead.propose", "lead.not_a_match"}
    context.close()
