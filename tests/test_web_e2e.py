"""End to end in a real browser: `facefinder serve` (uvicorn) on 127.0.0.1 and headless Chromium (Debian's
`chromium`, driven by Playwright with its executable path; no browser download).

An admin creates a collection and ingests the sample gallery from the server with live progress and
grants it; an investigator uploads a probe, picks a face, fills in case and purpose, sees the results
grid, opens a result and proposes it as a lead; a second investigator confirms it; the auditor sees all
of it in the audit log. Screenshots of the main pages go to $FACEFINDER_SCREENSHOTS_DIR when set (the
README's docs/screenshots/ were made so), else to a temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import GALLERY, GROUP, PROBES, cli_command
from typer.testing import CliRunner

from facefinder.interfaces.cli import app as cli_app

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
USERS = {"admin": "admin", "ivan": "investigator", "inga": "investigator", "aud": "auditor"}


def password(user: str) -> str:
    return f"{user}-password-1"


@dataclass
class Server:
    url: str
    data: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(data: Path, *options: str) -> Iterator[Server]:
    """`facefinder serve` on ``data`` in its own process (log: ``server.log`` beside ``data``), until the
    block ends; the test fails with the log's tail if it does not answer /api/health within 90 s."""
    port = free_port()
    log_path = data.parent / "server.log"
    command = [*cli_command(), "--data-dir", str(data), "serve", "--host", "127.0.0.1", "--port", str(port), *options]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_for_health(url, process, log_path)
            yield Server(url, data)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_for_health(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the server did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def server(tmp_path_factory, models_dir):
    """`facefinder serve` in its own process, on a fresh data dir with four users made by `users add`."""
    data = tmp_path_factory.mktemp("e2e") / "data"
    runner = CliRunner()
    for user, role in USERS.items():
        result = runner.invoke(
            cli_app,
            ["--data-dir", str(data), "users", "add", user, "--role", role, "--password-stdin"],
            input=password(user) + "\n",
        )
        assert result.exit_code == 0, result.stderr
    with serving(data, "--import-root", str(GALLERY)) as site:
        yield site


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (CI does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("FACEFINDER_SCREENSHOTS_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in(browser, server: Server, user: str):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=server.url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto("/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password(user))
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "/login" not in page.url, page.content()[:2000]
    return context, page


def test_case_bound_search_in_the_browser(server, browser, shots):
    from playwright.sync_api import expect

    # a wrong password is refused, on the page
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=server.url)
    page = context.new_page()
    page.goto("/search")
    assert "/login" in page.url
    page.fill("input[name=username]", "ivan")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    expect(page.locator(".alert.error")).to_contain_text("Wrong username or password")
    page.screenshot(path=str(shots / "login.png"))
    context.close()

    # ----- admin: a collection, an ingest from the server with live progress, grants
    admin_context, admin = sign_in(browser, server, "admin")
    assert admin.url.endswith("/collections")
    form = admin.locator("#collection-form")
    form.locator("input[name=name]").fill("demo")
    form.locator("input[name=description]").fill("The bundled sample gallery")
    form.locator("input[name=purpose]").fill("Demonstration of facefinder")
    form.locator("input[name=legal_basis]").fill("Sample photos published under the MIT licence")
    form.locator("input[name=retention_days]").fill("30")
    form.locator("button[type=submit]").click()
    admin.wait_for_load_state("networkidle")
    expect(admin.locator("#collections")).to_contain_text("demo")
    path_form = admin.locator("#path-form")
    path_form.locator("select[name=collection]").select_option("demo")
    path_form.locator("input[name=path]").fill(str(GALLERY))
    path_form.locator("button[type=submit]").click()
    expect(admin.locator("#jobs .state-done")).to_be_visible(timeout=120_000)
    expect(admin.locator("#jobs")).to_contain_text("38 / 38")
    expect(admin.locator("#collections tbody tr").first).to_contain_text("38")
    admin.screenshot(path=str(shots / "collections.png"), full_page=True)
    admin.goto("/accounts")
    grant = admin.locator("#grant-form")
    for user in ("ivan", "inga"):
        grant.locator("select[name=username]").select_option(user)
        grant.locator("select[name=collection]").select_option("demo")
        grant.locator("button[type=submit]").click()
        admin.wait_for_load_state("networkidle")
        expect(admin.locator(f"tr[data-user={user}]")).to_contain_text("demo")
    admin.screenshot(path=str(shots / "accounts.png"), full_page=True)
    admin_context.close()

    # ----- ivan: probe photo, pick a face, case and purpose, results, open one, propose it
    ivan_context, ivan = sign_in(browser, server, "ivan")
    assert ivan.url.endswith("/search")
    ivan.set_input_files("#probe-file", str(GROUP / "sample1.jpg"))
    expect(ivan.locator("#probe-faces .face")).to_have_count(3)
    expect(ivan.locator("#search-button")).to_be_disabled()
    ivan.locator("#probe-faces .face").nth(1).click()
    expect(ivan.locator("#search-button")).to_be_enabled()
    ivan.fill("#case_id", "2024-0172")
    ivan.select_option("#category", "missing person")
    ivan.fill("#purpose", "Locate the missing person in the reported photo")
    ivan.screenshot(path=str(shots / "search.png"), full_page=True)
    ivan.set_input_files("#probe-file", str(PROBES / "penny_penny5.png"))
    expect(ivan.locator("#probe-faces .face")).to_have_count(1)
    expect(ivan.locator("#search-button")).to_be_enabled()  # one face: picked for you
    ivan.click("#search-button")
    ivan.wait_for_url(re.compile(r".*/searches/\d+$"))
    search_url = ivan.url
    results = ivan.locator("#results .result")
    expect(results.first).to_be_visible()
    assert results.count() >= 3
    expect(results.first).to_contain_text("strong")
    ivan.wait_for_load_state("networkidle")
    ivan.screenshot(path=str(shots / "results.png"), full_page=True)
    results.first.click()
    ivan.wait_for_url(re.compile(r".*/candidates/1$"))
    photo = ivan.locator("#source-photo")
    expect(photo).to_be_visible()
    assert ivan.evaluate("document.getElementById('source-photo').naturalWidth") > 0
    expect(ivan.locator("dl.facts")).to_contain_text("penny")
    ivan.fill("#propose-form textarea[name=note]", "Same face shape and hairline as the probe")
    ivan.click("#propose-form button[type=submit]")
    ivan.wait_for_load_state("networkidle")
    expect(ivan.locator("#lead-status")).to_have_text("proposed")
    expect(ivan.locator("#waiting")).to_be_visible()  # the proposer cannot confirm
    assert ivan.locator("#confirm-form").count() == 0
    ivan_context.close()

    # ----- inga: the second person confirms
    inga_context, inga = sign_in(browser, server, "inga")
    inga.goto("/searches")
    expect(inga.locator("#searches")).to_contain_text("2024-0172")
    inga.goto(search_url + "/candidates/1")
    inga.fill("#confirm-form textarea[name=note]", "Checked against the case file photos: consistent")
    inga.click("#confirm-form button[type=submit]")
    inga.wait_for_load_state("networkidle")
    expect(inga.locator("#lead-status")).to_have_text("confirmed")
    expect(inga.locator("#lead")).to_contain_text("Confirmed by inga")
    inga.wait_for_load_state("networkidle")
    inga.screenshot(path=str(shots / "result.png"), full_page=True)
    inga_context.close()

    # ----- the auditor sees every step
    aud_context, aud = sign_in(browser, server, "aud")
    assert aud.url.endswith("/audit")
    expect(aud.locator("#verify-status")).to_contain_text("Hash chain intact")
    table = aud.locator("#audit")
    for action in (
        "login",
        "collection.create",
        "ingest",
        "grant.add",
        "search",
        "result.view",
        "lead.propose",
        "lead.confirm",
    ):
        expect(table).to_contain_text(action)
    aud.screenshot(path=str(shots / "audit.png"), full_page=False)
    aud.fill("input[name=case_id]", "2024-0172")
    aud.click("form.filters button[type=submit]")
    aud.wait_for_load_state("networkidle")
    rows = aud.locator("#audit tbody tr")
    actions = [rows.nth(i).locator(".action").inner_text() for i in range(rows.count())]
    assert set(actions) >= {"search", "result.view", "lead.propose", "lead.confirm"}, actions
    assert all(rows.nth(i).inner_text().count("2024-0172") for i in range(rows.count()))
    with aud.expect_download() as download:
        aud.click("text=Export CSV")
    exported = Path(download.value.path()).read_text()
    assert exported.startswith("id,at,actor,action,case_id") and "lead.confirm" in exported
    # auditors cannot search
    aud.goto("/search")
    expect(aud.locator("h1")).to_have_text("Not allowed")
    aud_context.close()

    # and the log verifies from the command line
    done = subprocess.run(
        [*cli_command(), "--data-dir", str(server.data), "audit", "verify"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "audit log intact" in done.stderr, done.stderr
