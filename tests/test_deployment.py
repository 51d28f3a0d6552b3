"""The shipped deployment: the Dockerfile's recipe, run for real, and the Kubernetes manifests,
checked against the app's real settings and routes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.servers import free_port
from transcripts.app import create_app
from transcripts.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
UV = ROOT / ".uv" / "bin" / "uv"


def dockerfile_instructions(keyword: str) -> list[str]:
    """Instructions of one kind, with continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [
        line[len(keyword) + 1 :].strip()
        for line in joined.splitlines()
        if line.startswith(f"{keyword} ")
    ]


def exec_form(instruction: str) -> list[str]:
    command: list[str] = json.loads(instruction[instruction.index("[") :])
    return command


def test_image_is_multi_stage_non_root_and_exec_form() -> None:
    assert len(dockerfile_instructions("FROM")) == 2
    assert dockerfile_instructions("USER") == ["10001:10001"]
    assert exec_form(dockerfile_instructions("CMD")[0])[:2] == ["transcripts", "serve"]
    assert "curl" not in DOCKERFILE.split("HEALTHCHECK", 1)[1]
    assert (ROOT / ".dockerignore").exists()


def test_dockerfile_recipe_installs_and_serves_outside_the_checkout(tmp_path: Path) -> None:
    """The Dockerfile's own install commands into a fresh environment, then its CMD and
    HEALTHCHECK, with nothing of the checkout's virtualenv."""
    assert UV.exists(), "make test bootstraps uv into .uv/"
    source = tmp_path / "src-tree"
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "migrations", source / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = tmp_path / "app-venv"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TRANSCRIPTS_", "VIRTUAL_ENV", "UV_"))
    }
    env.update(
        {
            "UV_PROJECT_ENVIRONMENT": str(venv),
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_PYTHON": sys.executable,
        }
    )
    installs = [run for run in dockerfile_instructions("RUN") if " uv sync " in f" {run} "]
    assert len(installs) == 2
    for install in installs:
        command = shlex.split(install[install.index("uv sync") :])
        subprocess.run(
            [str(UV), *command[1:]],
            cwd=source,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
    assert not (venv / "bin" / "pytest").exists(), "the image must not carry the dev tools"

    port = free_port()
    env.update(
        {
            "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
            "TRANSCRIPTS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.db",
        }
    )
    subprocess.run(
        ["transcripts", "migrate"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    cmd = [part.replace("8000", str(port)) for part in exec_form(dockerfile_instructions("CMD")[0])]
    with subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as server:
        try:
            healthcheck = exec_form(dockerfile_instructions("HEALTHCHECK")[0])
            healthcheck = [part.replace("8000", str(port)) for part in healthcheck]
            for _ in range(100):
                probe = subprocess.run(
                    healthcheck, cwd=tmp_path, env=env, capture_output=True, timeout=10
                )
                if probe.returncode == 0:
                    break
                assert server.poll() is None, "the server exited"
                subprocess.run(["sleep", "0.2"], check=True)
            assert probe.returncode == 0, probe.stderr
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
            assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        finally:
            server.terminate()
            server.wait(timeout=30)


def manifests() -> list[dict[str, object]]:
    documents = []
    for path in sorted((ROOT / "deploy").glob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def by_kind(kind: str) -> dict[str, object]:
    return next(doc for doc in manifests() if doc["kind"] == kind)


SETTING_NAMES = {f"TRANSCRIPTS_{name.upper()}" for name in Settings.model_fields}


def test_manifests_use_only_real_settings() -> None:
    for kind in ("ConfigMap", "Secret"):
        document = by_kind(kind)
        data = document.get("data") or document.get("stringData")
        unknown = set(data) - SETTING_NAMES  # type: ignore[arg-type]
        assert not unknown, f"{kind} names settings the app does not have: {unknown}"
    # Every value in the ConfigMap is accepted by the app's own validation.
    configmap: dict[str, str] = by_kind("ConfigMap")["data"]  # type: ignore[assignment]
    values = {name.removeprefix("TRANSCRIPTS_").lower(): value for name, value in configmap.items()}
    Settings(_env_file=None, **values)


def test_probes_and_commands_match_the_app() -> None:
    app = create_app(Settings(_env_file=None))
    paths = {app.url_path_for(name) for name in ("healthz", "readyz", "metrics")}
    deployment = by_kind("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/healthz", "/readyz", "/metrics"} <= paths
    assert container["command"][:2] == ["transcripts", "serve"]
    assert container["command"] == exec_form(dockerfile_instructions("CMD")[0])
    port = int(container["command"][container["command"].index("--port") + 1])
    assert container["ports"][0]["containerPort"] == port
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True  # type: ignore[index]

    job = by_kind("Job")
    migrate = job["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert migrate["command"] == ["transcripts", "migrate"]
    assert migrate["image"] == container["image"]
    assert migrate["envFrom"] == container["envFrom"]
    service = by_kind("Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]  # type: ignore[index]


def test_the_example_secret_would_be_refused() -> None:
    secret: dict[str, str] = by_kind("Secret")["stringData"]  # type: ignore[assignment]
    with pytest.raises(ValueError, match="placeholder"):
        Settings(_env_file=None, jwt_secret=secret["TRANSCRIPTS_JWT_SECRET"])
