"""The web console end to end, in real headless Chromium (Debian's `chromium` + Playwright).

Install: `apt-get install -y chromium` and `pip install playwright` (never `playwright install`:
the system browser is driven through `executable_path`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rolegate.store import ChangeSet

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = ("<script>", "<img src=x onerror=window.pwned=1>")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    page.script_errors = errors
    yield page
    context.close()


def apply(live, added=(), removed=()):
    live.core.store.apply(ChangeSet(added=tuple(added), removed=tuple(removed)), actor="import")
    live.core.refresh()


def sign_in(page, live, subject="ivan", org="acme"):
    page.goto(live.url + "/console")
    page.locator("#token").fill(live.token(subject, org))
    page.keyboard.press("Tab")  # to the Sign in button, then activate it with the keyboard
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#pick-org")).to_be_visible()


def test_audit_journey(page, make_live_server, settings, tmp_path):
    live = make_live_server(settings.replace(decision_log_db=True))
    apply(live, [("g", name, "viewer", "acme") for name in HOSTILE])
    expect = sync_api.expect

    sign_in(page, live)
    org_input = page.locator("#org-input")
    expect(org_input).to_have_value("acme")  # suggested from the token
    org_input.press("Enter")
    expect(page).to_have_url(live.url + "/console/orgs/acme")

    # members and roles, with names that are HTML rendered as text
    members = page.locator("#members-table tbody")
    expect(members).to_contain_text("bob -> editor -> member -> viewer")
    for name in HOSTILE:
        expect(members.get_by_text(name, exact=True)).to_be_visible()
    assert page.locator("#members-table script, #members-table img").count() == 0
    assert page.evaluate("window.pwned") is None

    # who can update a document
    page.get_by_role("link", name="Who can").click()
    page.locator("#who-can-resource").fill("/documents/7")
    page.locator("#who-can-action").fill("update")
    page.locator("#who-can-action").press("Enter")
    results = page.locator("#who-can-table tbody")
    expect(results).to_contain_text("alice -> admin")
    expect(results).to_contain_text("the owner")
    expect(results).not_to_contain_text("bob")
    page.screenshot(path=str(tmp_path / "who-can.png"), full_page=True)

    # open a subject
    results.get_by_role("link", name="alice").click()
    expect(page).to_have_url(live.url + "/console/orgs/acme/subjects/alice")
    permissions = page.locator("#permissions-table tbody")
    expect(permissions).to_contain_text("p, admin, *, /projects/*, delete, allow")
    expect(page.locator("#subject-roles")).to_contain_text("alice -> admin -> editor")

    # a change appears in the history after an import
    page.goto(live.url + "/console/orgs/acme#changes")
    changes = page.locator("#changes-table tbody")
    expect(changes).to_contain_text("g, alice, admin, acme")
    expect(changes).not_to_contain_text("zoe")
    apply(live, [("g", "zoe", "editor", "acme")])
    page.get_by_role("button", name="Refresh").click()
    expect(changes.locator("tr").first).to_contain_text("g, zoe, editor, acme")
    expect(changes.locator("tr").first).to_contain_text("import")

    # the latest decisions
    live.check("bob", "acme", "/projects/9", "delete")
    page.get_by_role("link", name="Latest decisions").click()
    decisions = page.locator("#decisions-table tbody")
    expect(decisions.locator("tr").first).to_contain_text("/projects/9")
    expect(decisions.locator("tr").first).to_contain_text("denied")

    # the matrix filter keeps matching columns
    page.get_by_role("link", name="Access matrix").click()
    page.locator("#matrix-filter").fill("delete")
    header = page.locator("#matrix-table thead th:visible")
    expect(header).to_have_count(1 + 2)  # subject + delete /documents/* + delete /projects/*

    assert page.script_errors == []
    assert page.evaluate("window.pwned") is None


def test_hostile_subject_page_is_text(page, live):
    apply(live, [("g", HOSTILE[1], "viewer", "acme")])
    sign_in(page, live)
    page.goto(
        live.url
        + "/console/orgs/acme/subjects/"
        + "%3Cimg%20src%3Dx%20onerror%3Dwindow.pwned%3D1%3E"
    )
    sync_api.expect(page.locator("h1")).to_contain_text(HOSTILE[1])
    sync_api.expect(page.locator("#permissions-table tbody")).to_contain_text("/projects/*")
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.pwned") is None
    assert page.script_errors == []


def test_refused_token_asks_to_sign_in_again(page, live):
    sign_in(page, live, subject="carol")  # a viewer: may not audit
    page.locator("#org-input").press("Enter")
    status = page.locator("#status")
    sync_api.expect(status).to_contain_text("may not audit")
    page.evaluate("sessionStorage.setItem('rolegate.console.token', 'not-a-token')")
    page.reload()
    sync_api.expect(page.locator("#sign-in")).to_be_visible()
    sync_api.expect(status).to_contain_text("Sign in again")
