import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def paused():
    """A live process stopped with SIGSTOP: a server paused past its lease."""
    proc = subprocess.Popen(["sleep", "600"])
    os.kill(proc.pid, signal.SIGSTOP)
    yield proc.pid
    proc.kill()
    proc.wait()
