"""The committed Pydantic models are what `make generate` makes of the specs in openapi/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DATAMODEL_CODEGEN = str(Path(sys.executable).with_name("datamodel-codegen"))


@pytest.mark.parametrize("profile", ["agents"])
def test_generated_models_match_the_spec(project_root: Path, profile: str) -> None:
    result = subprocess.run(
        [DATAMODEL_CODEGEN, "--profile", profile, "--check"],
        cwd=project_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"run `make generate`:\n{result.stdout}{result.stderr}"
