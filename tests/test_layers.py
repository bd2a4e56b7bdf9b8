"""The layering contracts of pyproject.toml ([tool.importlinter]): the core <- timescale <- the
services, which never import each other; the exporter reads tables only."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"


def test_import_contracts_are_kept():
    result = subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_a_service_importing_another_breaks_a_contract(tmp_path):
    for name in ("wattwatch", "timescale", "ingest", "detector", "drift", "exporters"):
        shutil.copytree(PROJECT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / "pyproject.toml", tmp_path)
    kpi = tmp_path / "exporters" / "kpi.py"
    kpi.write_text(kpi.read_text() + "\nimport detector.models  # noqa: E402\n")
    result = subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert "the services never import each other BROKEN" in result.stdout
    assert "exporters -> detector" in result.stdout or "exporters.kpi -> detector.models" in result.stdout
