"""`rolegate serve --watch-policies` under the real server: file edits reach every worker."""

from __future__ import annotations

import shutil

from conftest import SECRET
from scaleout import ServeProcess, wait_for

from rolegate.config import REPO_ROOT, Settings
from rolegate.identity import mint_token


def test_file_edits_reach_every_worker_and_bad_files_keep_the_last_revision(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies, ignore=shutil.ignore_patterns("tests"))
    instance = ServeProcess(
        tmp_path,
        f"sqlite:///{tmp_path / 'watch.db'}",
        workers=2,
        ROLEGATE_POLICY_DIR=str(policies),
        ROLEGATE_POLL_INTERVAL="0.3",
    ).start("--sync-policies", "--watch-policies")
    token = mint_token(Settings(jwt_secret=SECRET), subject="carol", org="acme")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"resource": "/projects", "action": "create"}

    def answers() -> dict[str, bool]:
        """{worker pid: allowed} from enough requests to hear from both workers."""
        seen: dict[str, bool] = {}
        for _ in range(40):
            response = instance.client.post("/v1/check", body, headers=headers)
            seen[response.headers["x-rolegate-worker"]] = response.body["allowed"]
        return seen

    try:
        assert set(answers().values()) == {False}  # carol is a viewer
        start_revision = instance.readyz()["revision"]
        acme = policies / "acme.csv"
        # Members are API-managed seeds in the sample: the files add a file-managed role.
        promoted = acme.read_text() + "# rolegate: managed-by files\ng, carol, editor, acme\n"
        acme.write_text(promoted)
        wait_for(lambda: set(answers().values()) == {True}, timeout=20, interval=0.2)
        assert len(answers()) == 2, "both workers answered"
        good_revision = instance.readyz()["revision"]
        assert good_revision > start_revision

        acme.write_text(acme.read_text() + "g, mallory, admin\n")  # a line with a field missing
        wait_for(lambda: instance.readyz().get("last_reload_error"), timeout=20, interval=0.2)
        error = instance.readyz()["last_reload_error"]
        assert "acme.csv" in error
        assert instance.readyz()["revision"] == good_revision
        assert set(answers().values()) == {True}  # the previous revision keeps serving
    finally:
        assert instance.terminate() == 0
