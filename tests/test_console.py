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


def sign_in(page, live, subject="ivan", org="acme", token=None):
    page.goto(live.url + "/console")
    page.locator("#token").fill(token or live.token(subject, org))
    page.keyboard.press("Tab")  # to the Sign in button, then activate it with the keyboard
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#pick-org")).to_be_visible()


def open_org(page, live, view="members", subject="alice"):
    sign_in(page, live, subject=subject)
    page.goto(f"{live.url}/console/orgs/acme#{view}")
    sync_api.expect(page.locator(f"#view-{view}")).to_be_visible()


def org_rules(live, org="acme"):
    return set(live.core.engine.snapshot.rules(org))


def press(page, selector, key="Enter"):
    """Focus a control and use it with the keyboard only."""
    page.locator(selector).focus()
    page.keyboard.press(key)


def type_into(page, selector, text):
    page.locator(selector).focus()
    page.keyboard.press("Control+A")
    page.keyboard.type(text)


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
    expect(members.locator("tr", has_text="bob")).to_contain_text("member, viewer")
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
    sync_api.expect(status).to_contain_text("carol may not read /members in org 'acme'")
    page.evaluate("sessionStorage.setItem('rolegate.console.token', 'not-a-token')")
    page.reload()
    sync_api.expect(page.locator("#sign-in")).to_be_visible()
    sync_api.expect(status).to_contain_text("Sign in again")


# --------------------------------------------------------------------------- signing in


def test_garbage_token_is_refused_when_pasted(page, live):
    page.goto(live.url + "/console")
    page.locator("#token").fill("garbage-token")
    page.locator("#token").press("Tab")
    page.keyboard.press("Enter")
    message = page.locator("#sign-in-message")
    sync_api.expect(message).to_contain_text("Not signed in")
    sync_api.expect(page.locator("#status")).not_to_contain_text("Signed in.")
    sync_api.expect(page.locator("#sign-in")).to_be_visible()
    sync_api.expect(page.locator("#pick-org")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('rolegate.console.token')") is None
    # an expired token is refused the same way, with the server's reason
    page.locator("#token").fill(live.token("alice", "acme", ttl=-60))
    page.locator("#token").press("Tab")
    page.keyboard.press("Enter")
    sync_api.expect(message).to_contain_text("expired")
    assert page.script_errors == []


def test_valid_token_says_who_signed_in(page, live):
    sign_in(page, live, subject="alice")
    sync_api.expect(page.locator("#status")).to_have_text("Signed in as alice in acme.")
    sync_api.expect(page.locator("#whoami")).to_have_text("signed in as alice in acme")


def test_whoami_is_the_authenticated_caller(live):
    response = live.client.get("/v1/whoami", headers=live.auth("bob", "acme"))
    assert response.status == 200
    assert response.body == {
        "subject": "bob",
        "org": "acme",
        "kind": "user",
        "roles": [],
        "issuer": None,
    }
    refused = live.client.get("/v1/whoami", headers={"Authorization": "Bearer garbage"})
    assert refused.status == 401 and refused.body["error"]["code"]


# --------------------------------------------------------------------------- members


def test_admin_manages_members_with_the_keyboard(page, live):
    open_org(page, live)
    expect = sync_api.expect
    table = page.locator("#members-table tbody")
    expect(table).to_contain_text("carol")

    # add a member: type, Tab, type, Enter
    page.locator("#member-subject").focus()
    page.keyboard.type("zoe")
    page.keyboard.press("Tab")
    page.keyboard.type("viewer")
    page.keyboard.press("Enter")
    expect(page.locator("#members-message")).to_contain_text("zoe now has the roles viewer")
    expect(table.locator("tr[data-subject='zoe']")).to_contain_text("viewer")
    assert ("g", "zoe", "viewer", "acme") in org_rules(live)
    assert page.evaluate("document.activeElement.id") == "member-subject"

    # change roles in place
    press(page, "button[aria-label='Change roles of zoe']")
    page.keyboard.press("Control+A")
    page.keyboard.type("editor")
    page.keyboard.press("Enter")
    expect(page.locator("#members-message")).to_contain_text("zoe now has the roles editor")
    rules = org_rules(live)
    assert ("g", "zoe", "editor", "acme") in rules and ("g", "zoe", "viewer", "acme") not in rules

    # the API's guards and messages: unknown role, last admin
    type_into(page, "#member-subject", "yuri")
    type_into(page, "#member-roles", "no-such-role")
    page.keyboard.press("Enter")
    expect(page.locator("#members-message")).to_contain_text("Refused:")
    expect(page.locator("#members-message")).to_contain_text("no-such-role")
    assert not any(rule[1] == "yuri" for rule in org_rules(live))

    press(page, "button[aria-label='Remove alice']")
    page.keyboard.press("Enter")  # the confirm button has the focus
    expect(page.locator("#members-message")).to_contain_text("without an admin")
    assert ("g", "alice", "admin", "acme") in org_rules(live)

    # remove, confirmed with the keyboard; Cancel leaves everything as it was
    press(page, "button[aria-label='Remove zoe']")
    expect(page.locator("button", has_text="Yes, remove zoe")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # Cancel
    expect(page.locator("button[aria-label='Remove zoe']")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    expect(page.locator("#members-message")).to_contain_text("zoe was removed")
    expect(table.locator("tr[data-subject='zoe']")).to_have_count(0)
    assert not any(rule[1] == "zoe" for rule in org_rules(live))
    assert page.script_errors == []


def test_non_admin_sees_the_api_refusal(page, live):
    open_org(page, live, subject="ivan")  # an auditor: reads members, manages nothing
    type_into(page, "#member-subject", "mallory")
    type_into(page, "#member-roles", "admin")
    page.keyboard.press("Enter")
    message = page.locator("#members-message")
    sync_api.expect(message).to_contain_text("ivan may not manage /members in org 'acme'")
    assert not any(rule[1] == "mallory" for rule in org_rules(live))


def test_editor_cannot_escalate_through_the_console(page, live):
    apply(live, [("p", "editor", "acme", "/members", "manage", "allow")])
    open_org(page, live, subject="bob")  # may manage members, but is no admin
    type_into(page, "#member-subject", "mallory")
    type_into(page, "#member-roles", "admin")
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#members-message")).to_contain_text("Refused:")
    assert not any(rule[1] == "mallory" for rule in org_rules(live))


def test_hostile_member_names_stay_text(page, live):
    open_org(page, live)
    for name in HOSTILE:
        type_into(page, "#member-subject", name)
        type_into(page, "#member-roles", "viewer")
        page.keyboard.press("Enter")
        sync_api.expect(page.locator("#members-message")).to_contain_text(name + " now has")
    table = page.locator("#members-table")
    for name in HOSTILE:
        sync_api.expect(table.get_by_role("link", name=name, exact=True)).to_be_visible()
        press(page, f"button[aria-label='Change roles of {name}']", "Escape")
    assert page.locator("#members-table script, #members-table img").count() == 0
    assert page.evaluate("window.pwned") is None
    assert page.script_errors == []


# --------------------------------------------------------------------------- API keys


def test_api_key_is_shown_once_listed_and_revoked(page, live, browser):
    open_org(page, live, view="api-keys")
    expect = sync_api.expect
    type_into(page, "#key-name", "ci <b>deploy</b>")
    page.keyboard.press("Tab")
    page.keyboard.type("admin")
    page.keyboard.press("Enter")
    secret = page.locator("#new-key-value")
    expect(page.locator("#new-key")).to_be_visible()
    expect(page.locator("#new-key")).to_be_focused()
    key = secret.inner_text()
    assert key.startswith("rgk_")
    row = page.locator("#api-keys-table tbody tr", has_text="ci <b>deploy</b>")
    expect(row).to_contain_text("active")
    assert page.locator("#api-keys-table b").count() == 0

    # the key works, and signs in to the console with its own scheme
    assert live.client.get("/v1/whoami", headers={"X-API-Key": key}).status == 200
    other = browser.new_context(viewport={"width": 1024, "height": 768}).new_page()
    sign_in(other, live, token=key)
    expect(other.locator("#status")).to_contain_text("(API key)")
    other.context.close()

    # shown once: dismissed, it is gone from the page and never comes back
    press(page, "#new-key-done")
    expect(page.locator("#new-key")).to_be_hidden()
    assert key not in page.content()
    page.reload()
    expect(row).to_contain_text("active")
    assert key not in page.content()

    key_id = key.split("_")[1]
    press(page, "button[aria-label='Revoke key ci <b>deploy</b>']")
    page.keyboard.press("Enter")
    expect(page.locator("#api-keys-message")).to_contain_text(
        f"Revoked key ci <b>deploy</b> ({key_id})"
    )
    expect(row).to_contain_text("revoked")
    assert live.client.get("/v1/whoami", headers={"X-API-Key": key}).status == 401
    assert not any(rule[1] == f"apikey:{key_id}" for rule in org_rules(live))
    assert page.script_errors == []


def test_api_key_with_more_than_the_caller_holds_is_refused(page, live):
    apply(live, [("p", "editor", "acme", "/api-keys", "manage", "allow")])
    open_org(page, live, view="api-keys", subject="bob")
    type_into(page, "#key-name", "escalate")
    type_into(page, "#key-roles", "admin")
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#api-keys-message")).to_contain_text("Refused:")
    sync_api.expect(page.locator("#new-key")).to_be_hidden()
    assert live.core.api_keys.list("acme") == []


# --------------------------------------------------------------------------- org rules


def test_org_rules_added_and_removed_where_the_policy_allows(page, live):
    open_org(page, live, view="rules")
    expect = sync_api.expect
    table = page.locator("#rules-table tbody")
    expect(table).to_contain_text("No org rules.")
    type_into(page, "#rule-subject", "auditor")
    type_into(page, "#rule-resource", "/projects/*")
    type_into(page, "#rule-action", "read")
    page.keyboard.press("Enter")
    added = "p, auditor, acme, /projects/*, read, allow"
    expect(page.locator("#rules-message")).to_contain_text("Added " + added)
    expect(table).to_contain_text(added)
    assert ("p", "auditor", "acme", "/projects/*", "read", "allow") in org_rules(live)

    # what the caller does not hold, and unsafe patterns, are refused with the API's message
    type_into(page, "#rule-subject", "auditor")
    type_into(page, "#rule-resource", "/payroll/*")
    type_into(page, "#rule-action", "read")
    page.keyboard.press("Enter")
    expect(page.locator("#rules-message")).to_contain_text("Refused:")
    type_into(page, "#rule-resource", "/projects/x|/payroll")
    page.keyboard.press("Enter")
    expect(page.locator("#rules-message")).to_contain_text("regular-expression")
    assert not any("/payroll" in rule[3] for rule in org_rules(live) if rule[0] == "p")

    # a role link
    page.locator("#rule-type").focus()
    page.keyboard.press("ArrowDown")
    expect(page.locator("#rule-member")).to_be_visible()
    type_into(page, "#rule-member", "auditor")
    type_into(page, "#rule-role", "viewer")
    page.keyboard.press("Enter")
    expect(table).to_contain_text("g, auditor, viewer, acme")

    press(page, f"button[aria-label='Remove rule {added}']")
    page.keyboard.press("Enter")
    expect(page.locator("#rules-message")).to_contain_text("Removed " + added)
    expect(table).not_to_contain_text(added)
    assert ("p", "auditor", "acme", "/projects/*", "read", "allow") not in org_rules(live)
    assert page.script_errors == []


# --------------------------------------------------------------------------- hints


def test_who_can_hints_at_a_typo(page, live):
    open_org(page, live, view="who-can", subject="ivan")
    page.locator("#who-can-resource").fill("/documents/7")
    page.locator("#who-can-action").fill("delet")
    page.locator("#who-can-action").press("Enter")
    results = page.locator("#who-can-table tbody")
    sync_api.expect(results).to_contain_text("Nobody may do this.")
    sync_api.expect(results).to_contain_text(
        "no rule mentions action 'delet'; known actions: audit, create, delete"
    )
    page.locator("#who-can-resource").fill("/documnts/7")
    page.locator("#who-can-action").fill("update")
    page.locator("#who-can-action").press("Enter")
    sync_api.expect(results).to_contain_text(
        "no rule for action 'update' matches resource '/documnts/7'"
    )
    page.locator("#who-can-resource").fill("/documents/7")
    page.locator("#who-can-action").press("Enter")
    sync_api.expect(results).to_contain_text("alice")
    sync_api.expect(results).not_to_contain_text("Hint")


def test_permissions_query_with_hint(page, live):
    sign_in(page, live)
    page.goto(live.url + "/console/orgs/acme/subjects/bob")
    table = page.locator("#permissions-table tbody")
    sync_api.expect(table).to_contain_text("/projects/*")
    type_into(page, "#permissions-resource", "/projects/7")
    type_into(page, "#permissions-action", "update")
    page.keyboard.press("Enter")
    sync_api.expect(table.locator("tr")).to_have_count(1)
    sync_api.expect(table).to_contain_text("p, editor, *, /projects/*, update, allow")
    type_into(page, "#permissions-action", "delet")
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#permissions-message")).to_contain_text(
        "no rule mentions action 'delet'"
    )
    sync_api.expect(table).to_contain_text("No rule held by this subject matches.")


def test_hint_fields_in_the_audit_api(live):
    headers = live.auth("ivan", "acme")
    found = live.client.get(
        "/v1/orgs/acme/who-can?resource=/documents/7&action=update", headers=headers
    )
    assert found.status == 200 and found.body["hint"] is None
    typo = live.client.get(
        "/v1/orgs/acme/who-can?resource=/documents/7&action=delet", headers=headers
    )
    assert typo.body["subjects"] == []
    assert typo.body["hint"].startswith("no rule mentions action 'delet'; known actions: ")
    held = live.client.get(
        "/v1/orgs/acme/subjects/bob/permissions?action=update&resource=/documents/3",
        headers=headers,
    )
    assert [p["rule"] for p in held.body["permissions"]] == [
        "p, owner, *, /documents/:id, update, allow"
    ]
    assert held.body["hint"] is None


# --------------------------------------------------------------------------- small screens


def test_console_fits_a_390_pixel_screen(browser, live):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    sign_in(page, live, subject="alice")
    for view in ("members", "api-keys", "rules", "matrix", "who-can", "changes"):
        page.goto(f"{live.url}/console/orgs/acme#{view}")
        section = page.locator(f"#view-{view}")
        sync_api.expect(section).to_be_visible()
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{view}: the page is {width} px wide"
        controls = "button:visible, input:visible, select:visible"
        for control in section.locator(f"form {controls}, .row {controls}").all():
            box = control.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, view
    context.close()
