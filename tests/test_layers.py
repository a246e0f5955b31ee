"""The layering rules of docs/ARCHITECTURE.md, checked on the source."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RULES = {
    "quota": {"ray", "sqlmodel", "sqlalchemy", "prometheus_client", "torch", "tensorflow", "fastapi",
              "scheduler", "workloads", "time", "datetime"},
    "workloads": {"scheduler", "quota", "ray"},
    "scheduler/store": {"quota", "ray", "fastapi"},
    "scheduler/services": {"ray", "fastapi", "torch", "tensorflow"},
    "scheduler/api": {"ray", "scheduler.loop"},
}


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_packages_import_only_what_their_layer_allows():
    bad = []
    for folder, banned in RULES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in imports(path):
                if any(name == b or name.startswith(b + ".") for b in banned):
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_cli_imports_nothing_heavy():
    code = ("import sys, scheduler.cli; heavy = [m for m in ('torch', 'tensorflow', 'ray', 'sqlalchemy', "
            "'sqlmodel', 'fastapi', 'numpy', 'psycopg') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the CLI loads {out.stdout.strip()}"
