"""The layering rules of docs/ARCHITECTURE.md, checked on the source."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What each layer may import, as docs/ARCHITECTURE.md's table says: an allow-list, so a new
# import across layers fails here until the table (and this) say it may. The standard
# library is allowed everywhere but in quota/, which never reads a clock.
FIRST_PARTY = ("scheduler", "quota", "workloads")
ALLOWED = {
    "quota": {"quota"},
    "workloads": {"workloads", "numpy", "PIL", "torch", "tensorflow", "keras", "pynvml", "rich", "matplotlib"},
    "scheduler/store": {"scheduler.store", "scheduler.vocab", "scheduler.text", "sqlmodel", "sqlalchemy", "alembic",
                        "platformdirs"},
    "scheduler/services": {"scheduler.services", "scheduler.store", "scheduler.runtime.jobfiles", "scheduler.runtime.archive",
                           "scheduler.vocab", "scheduler.text", "quota", "workloads.registry", "workloads.measure",
                           "sqlmodel", "sqlalchemy"},
    "scheduler/api": {"scheduler.api", "scheduler.services", "scheduler.store", "scheduler.metrics.exporter",
                      "scheduler.runtime.archive", "scheduler.vocab", "scheduler.text", "quota.limits", "fastapi", "starlette",
                      "pydantic", "sqlmodel", "sqlalchemy"},
    "scheduler/sim": {"scheduler.sim", "quota", "workloads.measure", "numpy", "matplotlib", "scheduler.store",
                      "scheduler.services", "sqlmodel"},
}
QUOTA_FORBIDDEN_STDLIB = {"time", "datetime"}


def _allowed(layer: str, name: str) -> bool:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names and top not in FIRST_PARTY:
        return not (layer == "quota" and top in QUOTA_FORBIDDEN_STDLIB)
    return any(name == a or name.startswith(a + ".") for a in ALLOWED[layer])


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.update(f"{node.module}.{a.name}" for a in node.names)  # `from scheduler import jobfiles`
    return out


def test_packages_import_only_what_their_layer_allows():
    bad = []
    for folder in ALLOWED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in imports(path):
                if not _allowed(folder, name):
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_allow_list_refuses_what_the_table_forbids():
    assert not _allowed("quota", "time") and not _allowed("quota", "sqlalchemy") and _allowed("quota", "math")
    assert not _allowed("scheduler/api", "ray") and not _allowed("scheduler/api", "scheduler.loop")
    assert not _allowed("scheduler/services", "fastapi") and not _allowed("workloads", "scheduler.runtime.tasks")


def test_the_cli_imports_nothing_heavy():
    code = ("import sys, scheduler.cli; heavy = [m for m in ('torch', 'tensorflow', 'ray', 'sqlalchemy', "
            "'sqlmodel', 'fastapi', 'numpy', 'psycopg') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the CLI loads {out.stdout.strip()}"
