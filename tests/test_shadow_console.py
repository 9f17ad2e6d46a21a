"""The console's shadow view in real Chromium: recent disagreements, as text (issue 17)."""

from __future__ import annotations

from test_console import browser, page, sign_in, sync_api  # noqa: F401 - fixtures
from test_shadow import candidate  # noqa: F401 - fixture


def test_the_shadow_view_lists_recent_disagreements(page, make_live_server, settings, candidate):  # noqa: F811
    live = make_live_server(settings.replace(shadow_policy_dir=str(candidate)))
    live.check("alice", "acme", "/projects/1", "read")
    assert live.core.shadow.flush(10)

    sign_in(page, live, subject="ivan", org="acme")
    page.goto(live.url + "/console/orgs/acme#shadow")
    rows = page.locator("#shadow-table tbody")
    sync_api.expect(rows.locator("tr").first).to_contain_text("/projects/1")
    sync_api.expect(rows.locator("tr").first).to_contain_text("would deny")
    sync_api.expect(rows.locator("tr").first).to_contain_text("p, viewer, *, /projects/*, read")
    sync_api.expect(page.locator("#shadow-revision")).to_contain_text("sha256:")

    live.check("carol", "acme", "/projects/2", "read")
    assert live.core.shadow.flush(10)
    page.get_by_role("button", name="Refresh disagreements").click()
    sync_api.expect(rows.locator("tr").first).to_contain_text("/projects/2")
    assert page.script_errors == []
