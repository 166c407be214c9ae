"""The admin pages in a real browser (issue 11, UI findings): `facefinder serve` (uvicorn) on 127.0.0.1 and
headless Chromium (Debian's `chromium`, driven by Playwright). An admin browses a collection (photos with
their faces, those without a face), erases a photo, erases a person found by a photo after reviewing the
matches, puts a person on the opt-out list and erases the reviewed matches, withdraws a consent, runs a
purge dry run, downloads a subject access report, uploads a held photo again (a duplicate, with a failed
file it can open), and erases the collection behind a typed confirmation; every step is in the audit log.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import POLICY, cli_command, lfw, open_finder
from PIL import Image
from test_web_e2e import Server, browser, password, serving, sign_in  # noqa: F401
from typer.testing import CliRunner

from facefinder.interfaces.cli import app as cli_app

pytestmark = pytest.mark.slow
PEOPLE = {"Tony_Blair": None, "Vladimir_Putin": None, "Colin_Powell": "C-7", "Hugo_Chavez": None}


def gallery(folder: Path) -> Path:
    """Two photos of each of four people (Colin Powell's under consent C-7) and one photo without a face."""
    for person, consent in PEOPLE.items():
        for number in (1, 2):
            target = folder / person / lfw(person, number).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(lfw(person, number).read_bytes())
            if consent:
                target.with_name(target.name + ".json").write_text(json.dumps({"consent_id": consent}))
    ramp = np.linspace(0, 255, 240, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([np.tile(ramp, (180, 1))] * 3, axis=-1)).save(buffer, format="JPEG")
    (folder / "blank.jpg").write_bytes(buffer.getvalue())
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    """A served data dir holding collection 'lfw' (9 photos), consent C-7 recorded, and an admin."""
    root = tmp_path_factory.mktemp("admin-ui")
    data = root / "data"
    result = CliRunner().invoke(
        cli_app,
        ["--data-dir", str(data), "users", "add", "admin", "--role", "admin", "--password-stdin"],
        input=password("admin") + "\n",
    )
    assert result.exit_code == 0, result.stderr
    with open_finder(data, pipeline) as finder:
        report = finder.ingest(gallery(root / "gallery"), "lfw", **POLICY)
        assert report.ingested == 9 and report.photos_without_faces == 1, report
        finder.privacy.consent_record("C-7", "volunteer 7", "face search in lfw", "2024-05-01")
    with serving(data) as site:
        yield site


def photo_count(page) -> int:
    return int(re.search(r"\((\d+)", page.locator("#photos h2").inner_text()).group(1))


def browse_and_erase_a_photo(admin) -> None:
    from playwright.sync_api import expect

    admin.goto("/collections")
    admin.click("#collections a:has-text('lfw')")
    admin.wait_for_url(re.compile(r".*/collections/lfw$"))
    expect(admin.locator("#photo-table tbody tr")).to_have_count(9)
    expect(admin.locator("#collection-facts")).to_contain_text("facefinder tests")
    first = admin.locator("#photo-table .face-thumb img").first
    expect(first).to_be_visible()
    admin.wait_for_function("document.querySelector('#photo-table .face-thumb img').naturalWidth > 0")
    expect(admin.locator("#photo-table")).to_contain_text("Tony_Blair_0001.jpg")
    admin.click("text=Without a face")
    expect(admin.locator("#photo-table tbody tr")).to_have_count(1)
    expect(admin.locator("#photo-table")).to_contain_text("blank.jpg")
    expect(admin.locator("#photo-table")).to_contain_text("no face found")
    admin.locator("#photo-table button:has-text('Erase photo')").click()  # the dialog is accepted
    expect(admin.locator("#photo-table")).to_contain_text("Every photo here has at least one face")
    admin.goto("/collections/lfw")
    assert photo_count(admin) == 8


def erase_a_person(admin) -> None:
    from playwright.sync_api import expect

    admin.goto("/privacy")
    admin.set_input_files("#person-form input[name=photo]", str(lfw("Tony_Blair", 1)))
    admin.click("#person-form button[type=submit]")
    matches = admin.locator("#person-matches input[type=checkbox]")
    expect(matches.first).to_be_visible()
    assert matches.count() >= 1
    expect(admin.locator("#person-matches")).to_contain_text("Tony_Blair_0001.jpg")
    admin.click("#person-erase")
    expect(admin.locator("#person-result")).to_contain_text(re.compile(r"Erased [1-9]\d* faces? and [1-9]"))
    admin.goto("/collections/lfw")
    expect(admin.locator("#photo-table")).not_to_contain_text("Tony_Blair_0001.jpg")


def opt_out_and_review(admin) -> None:
    from playwright.sync_api import expect

    admin.goto("/privacy")
    form = admin.locator("#optout-form")
    form.locator("input[name=photo]").set_input_files(str(lfw("Vladimir_Putin", 1)))
    form.locator("input[name=reference]").fill("REQ-17")
    form.locator("button[type=submit]").click()
    admin.wait_for_url(re.compile(r".*/privacy\?added=\d+#optouts$"))
    expect(admin.locator("#optout-table")).to_contain_text("REQ-17")
    admin.goto("/collections/lfw")
    expect(admin.locator("#photo-table .opted-out").first).to_be_visible()  # marked, pending review
    admin.goto("/privacy")
    admin.locator("#optout-table button:has-text('Review matches')").click()
    review = admin.locator("#optout-table .review")
    expect(review.locator("input[type=checkbox]").first).to_be_visible()
    expect(review).to_contain_text("Vladimir_Putin_0001.jpg")
    review.locator("button:has-text('Erase the chosen faces')").click()
    expect(admin.locator("#optout-table [role=status]")).to_contain_text(re.compile(r"Erased [1-9]"))


def withdraw_a_consent(admin) -> None:
    from playwright.sync_api import expect

    admin.goto("/privacy#consents")
    row = admin.locator("#consent-table tr[data-consent='C-7']")
    expect(row).to_contain_text("volunteer 7")
    row.locator("input[name=note]").fill("letter of 3 May")
    row.locator("button:has-text('Withdraw')").click()
    admin.wait_for_url(re.compile(r".*withdrawn=2#consents$"))
    expect(admin.locator("#consent-table tr[data-consent='C-7']")).to_contain_text("withdrawn")
    expect(admin.locator("#consent-table tr[data-consent='C-7']")).to_contain_text("letter of 3 May")


def purge_dry_run_and_access_report(admin) -> None:
    from playwright.sync_api import expect

    expect(admin.locator("#purge-now")).to_be_disabled()
    admin.click("#purge-dry-run")
    expect(admin.locator("#purge-report")).to_contain_text("Dry run: the purge would erase 0 photos and 0 faces")
    expect(admin.locator("#purge-report")).to_contain_text("lfw")
    expect(admin.locator("#purge-now")).to_be_disabled()  # nothing expired: nothing to purge
    admin.set_input_files("#access-form input[name=photo]", str(lfw("Hugo_Chavez", 1)))
    with admin.expect_download() as download:
        admin.click("#access-form button[type=submit]")
    report = Path(download.value.path()).read_text()
    assert "Hugo_Chavez_0001.jpg" in report and "/gallery/" in report  # an operator's folder: shown as it is


def reupload_and_open_the_job(admin, folder: Path) -> None:
    """A second upload of a held photo shows as a duplicate, and the failed file opens with its reason."""
    from playwright.sync_api import expect

    archive = folder / "again.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("people/chavez.jpg", lfw("Hugo_Chavez", 1).read_bytes())
        zf.writestr("broken.jpg", b"not a photo")
    admin.goto("/collections")
    form = admin.locator("#upload-form")
    form.locator("select[name=collection]").select_option("lfw")
    form.locator("input[name=file]").set_input_files(str(archive))
    form.locator("button[type=submit]").click()
    row = admin.locator("#jobs tbody tr").first
    expect(row.locator(".state-done")).to_be_visible(timeout=60_000)
    cells = row.locator("td")
    assert [cells.nth(i).inner_text() for i in (6, 7, 8, 9, 10)] == ["0", "0", "1", "0", "1"]
    row.locator("a:has-text('upload:again.zip')").click()
    admin.wait_for_url(re.compile(r".*/ingests/[0-9a-f]+$"))
    expect(admin.locator("#count-duplicates")).to_have_text("1")
    expect(admin.locator("#failure-table")).to_contain_text("upload:again.zip!broken.jpg")
    assert str(folder) not in admin.content() and "/uploads/" not in admin.content()


def erase_the_collection(admin) -> None:
    from playwright.sync_api import expect

    admin.goto("/collections/lfw")
    form = admin.locator("#erase-collection-form")
    button = form.locator("button[type=submit]")
    expect(button).to_be_disabled()
    form.locator("input[name=confirm]").fill("lf")
    expect(button).to_be_disabled()
    form.locator("input[name=confirm]").fill("lfw")
    expect(button).to_be_enabled()
    button.click()
    admin.wait_for_url(re.compile(r".*/collections$"))
    expect(admin.locator("#collections")).not_to_contain_text("lfw")


def test_the_admin_pages_pass_axe_and_fit_a_phone(server, browser):
    """No serious or critical axe finding on the admin pages, at desktop and phone width, and nothing
    wider than a phone (a wide table scrolls inside its own box)."""
    from axe_playwright_python.sync_playwright import Axe

    context, admin = sign_in(browser, server, "admin")
    found, wide = {}, {}
    for path in ("/collections/lfw", "/collections/lfw?without_faces=true", "/privacy"):
        admin.goto(path)
        admin.wait_for_load_state("networkidle")
        for name, size in (("desktop", {"width": 1280, "height": 860}), ("phone", {"width": 390, "height": 844})):
            admin.set_viewport_size(size)
            serious = [v for v in Axe().run(admin).response["violations"] if v["impact"] in ("serious", "critical")]
            if serious:
                found[f"{path} @ {name}"] = [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in serious]
            scroll, inner = admin.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            if scroll > inner:
                wide[f"{path} @ {name}"] = scroll
    context.close()
    assert found == {} and wide == {}, (found, wide)


def test_an_admin_curates_a_collection_and_answers_privacy_requests(server, browser, tmp_path):
    context, admin = sign_in(browser, server, "admin")
    admin.on("dialog", lambda dialog: dialog.accept())
    from playwright.sync_api import expect

    expect(admin.locator("nav a[href='/privacy']")).to_have_text("Privacy")
    browse_and_erase_a_photo(admin)
    erase_a_person(admin)
    opt_out_and_review(admin)
    withdraw_a_consent(admin)
    purge_dry_run_and_access_report(admin)
    reupload_and_open_the_job(admin, tmp_path)
    erase_the_collection(admin)
    context.close()

    exported = subprocess.run(
        [*cli_command(), "--data-dir", str(server.data), "audit", "export", "--format", "json"],
        capture_output=True,
        text=True,
    )
    assert exported.returncode == 0, exported.stderr
    actions = {entry["action"] for entry in json.loads(exported.stdout)}
    assert actions >= {
        "collection.browse",
        "collection.faces.view",
        "delete.image",
        "privacy.find",
        "delete.person",
        "optout.add",
        "optout.review",
        "optout.erase",
        "consent.withdraw",
        "purge",
        "access.export",
        "delete.collection",
    }, actions
