"""`make install` is quiet: an editable install of the project prints no packaging warning."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_editable_install_warns_about_nothing_and_imports_the_working_tree(tmp_path: Path) -> None:
    # A copy of what the package is built from, so the install writes nothing into the repository.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    for package in ("services", "shared", "deploy"):
        shutil.copytree(ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    # As `make install` does: a current pip shows what the build backend prints, an old one hid it.
    subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        capture_output=True,
        timeout=300,
        check=True,
    )

    # --no-deps: the dependencies are not what is under test, and this keeps the run short.
    installed = subprocess.run(
        [
            venv / "bin" / "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "-e",
            project,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert installed.returncode == 0, installed.stderr
    # The pip configuration of a machine may add its own notices; the build backend adds none.
    assert "BuildBackendWarning" not in installed.stderr, installed.stderr
    assert "Please be careful with folders" not in installed.stderr, installed.stderr
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import importlib.util as u; print(u.find_spec('shared').origin)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(where.stdout.strip()).parent == project / "shared"
