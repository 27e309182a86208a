"""Import boundaries: the import-linter contracts pass, and no service imports another."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# service package -> its source folder
SERVICES = {
    "qregistry": ROOT / "services/registry/src/qregistry",
    "qscheduler": ROOT / "services/scheduler/src/qscheduler",
    "qworker": ROOT / "services/worker/src/qworker",
    "qfailover": ROOT / "services/failover/src/qfailover",
    "qctl": ROOT / "cli/src/qctl",
    "qtui": ROOT / "tui/src/qtui",
}
SHARED = ROOT / "shared/src/qshared"


def imported_top_levels(folder: Path) -> dict[str, set[str]]:
    """{top-level package imported: the files importing it} for every .py file under folder."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_import_linter_contracts_pass() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), f"{lint_imports} is missing; run `uv sync`"
    done = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("service", sorted(s for s, folder in SERVICES.items() if folder.exists()))
def test_a_service_imports_no_other_service(service: str) -> None:
    folder = SERVICES[service]
    imports = imported_top_levels(folder)
    others = {name: files for name, files in imports.items() if name in SERVICES and name != service}
    assert others == {}


def test_qshared_imports_no_service() -> None:
    imports = imported_top_levels(SHARED)
    assert {name: files for name, files in imports.items() if name in SERVICES} == {}


def test_qshared_storage_imports_no_web_or_ui_framework() -> None:
    imports = imported_top_levels(SHARED / "storage")
    assert {n: f for n, f in imports.items() if n in {"aiohttp", "textual"}} == {}
