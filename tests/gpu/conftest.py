"""tests/gpu: the GPU check's own tests. check.py runs as a script (`import e2e` beside it),
so this folder goes on sys.path for the tests that import its parts."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
