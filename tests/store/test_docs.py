"""The code snippet in docs/state.md runs as written."""
from __future__ import annotations

import re
from pathlib import Path

from scheduler.store import Job, JobState, session_scope

DOC = Path(__file__).resolve().parents[2] / "docs" / "state.md"


def test_state_md_snippet_runs(db_url):
    snippet = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    namespace = {"url": db_url}
    exec(compile(snippet, str(DOC), "exec"), namespace)
    engine = namespace["engine"]
    with session_scope(engine) as s:
        job = s.get(Job, namespace["job"].id)
    assert job.state is JobState.RUNNING and job.gpu_slices == [[0, 2]]
    engine.dispose()
