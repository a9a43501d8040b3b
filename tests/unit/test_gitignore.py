"""What the tools write into the checkout stays out of git: the schemathesis fuzz runs
(tests/http) leave reports in .schemathesis/, `make constraints` builds .venv-constraints/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = [".schemathesis/report.json", ".venv-constraints/bin/python"]


@pytest.mark.parametrize("path", GENERATED)
def test_generated_files_are_ignored(path: str) -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        [git, "check-ignore", "--no-index", "-q", path], cwd=ROOT, timeout=30, check=False
    )
    assert result.returncode == 0, f"{path} is not ignored by .gitignore"
