"""The built wheel: installed into an empty virtualenv and run in an empty directory, it serves
`rolegate serve --demo` with the model and sample policies it ships; its runtime dependencies are
exactly what the package imports."""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata as metadata
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rolegate.config import REPO_ROOT

PACKAGE_DIR = REPO_ROOT / "service"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("rolegate-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A new virtualenv holding only the wheel; the dependencies come from this test's
    environment through a path file (its own path files, with the editable install, are not
    processed), so no network is needed."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "zz_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def test_the_wheel_ships_the_model_and_sample_policies_and_no_service_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "rolegate/shipped/model.conf" in names
    assert {"acme.csv", "globex.csv", "roles.csv"} <= {
        Path(name).name for name in names if name.startswith("rolegate/shipped/policies/")
    }
    dist_info = wheel.name.split("-py3")[0] + ".dist-info"
    assert {name.split("/")[0] for name in names} == {"rolegate", dist_info}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(venv: Path, home: Path) -> dict[str, str]:
    """No ROLEGATE_* settings, and a home of its own (the default data home lives there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLEGATE_", "PYTHON", "XDG_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(home)
    return env


def _get(url: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (local)
        return response.status, json.loads(response.read() or b"{}")


def test_the_installed_wheel_serves_the_demo_from_an_empty_directory(installed, tmp_path):
    workdir = tmp_path / "empty"
    workdir.mkdir()
    env = _clean_env(installed, tmp_path / "home")
    port = _free_port()
    rolegate = str(installed / "bin" / "rolegate")
    server = subprocess.Popen(
        [rolegate, "serve", "--demo", "--port", str(port), "--workers", "1"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None:
                raise AssertionError(f"rolegate serve --demo exited: {server.communicate()[0]}")
            assert time.monotonic() < deadline, "not ready within 60 s"
            time.sleep(0.2)
        token = subprocess.run(
            [rolegate, "token", "--demo", "--sub", "alice", "--org", "acme"],
            cwd=workdir,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        body = {"resource": "/projects/42", "action": "delete"}
        status, decision = _get(f"{base}/v1/check", token, body)
        assert status == 200 and decision["allowed"] is True
        _, refused = _get(f"{base}/v1/check", token, {**body, "action": "launch-rockets"})
        assert refused["allowed"] is False
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert "sample policies from " + str(installed) in output  # the shipped copy, not the repo
    assert not (workdir / "policies").exists() and not (workdir / "model.conf").exists()


# --------------------------------------------------------------------------- dependencies


def _third_party_imports() -> set[str]:
    found = set()
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.partition(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names} - {"rolegate"}


def _name(requirement: str) -> str:
    return canonicalize_name(Requirement(requirement).name)


def _provided_by(distribution: str, extras: set[str], seen: set[str]) -> set[str]:
    """A distribution and everything it requires (with `extras`), by normalised name."""
    if distribution in seen:
        return set()
    seen.add(distribution)
    provided = {distribution}
    for line in metadata.requires(distribution) or ():
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras | {""}):
            provided |= _provided_by(_name(line), set(requirement.extras), seen)
    return provided


def test_runtime_dependencies_are_what_the_runtime_imports():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(requirement) for requirement in project["dependencies"]}
    importers = metadata.packages_distributions()
    imported = {
        module: {_name(dist) for dist in importers.get(module, [module])}
        for module in _third_party_imports()
    }
    directly_used = {dist for dists in imported.values() for dist in dists}
    assert declared - directly_used == set(), "declared but never imported"
    provided = set().union(
        *(
            _provided_by(_name(line), set(Requirement(line).extras), set())
            for line in project["dependencies"]
        )
    )
    missing = {module for module, dists in imported.items() if not dists & provided}
    assert missing == set(), "imported but not a dependency"
