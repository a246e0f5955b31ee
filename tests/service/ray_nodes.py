"""Ray nodes started the way an admin starts a plain Ray cluster: `ray start --head` and
`ray start --address` as separate processes, and `fairgpu up --ray-address` against them.

Invariants:
- Every node has its own short temporary directory (Ray's unix sockets live under it and
  their paths must stay under about 100 characters) and runs in its own process group,
  so `stop()` ends exactly this node's processes: never `ray stop`, which ends every
  Ray process of the user on the machine, other tests' included.
- Nothing binds Ray's default ports, and no port is picked here to be bound later (another
  process could take it in between): the head's GCS gets `--port 0` (the address it got is
  read from its `ray_current_cluster` file), the dashboard and agents port 0. The Ray
  Client server, which refuses port 0 and defaults to 10001, is not started at all: `ray
  start` runs as it does where Ray is installed without `ray[client]`, and fairgpu joins
  by the GCS address, never `ray://` (the test checks that the head ran no client server).
- Every process sees `home` as its HOME, so nothing reads or writes the real
  `~/.ray/auth_token`; the token reaches a node only through the env it is given.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from service_helpers import FAIRGPU, Up

AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def ray_env(home: Path, token: str | None, **extra: str) -> dict[str, str]:
    """This process's env without any Ray auth setting, HOME=`home`; with `token`, token
    mode and that token (what the head, the workers and the server are all given)."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    if token is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return env


# `ray start` as the `ray` script runs it, except that Ray Client reads as not installed:
# with it installed, Ray 2.60 has no flag to leave the client server out. Setting the
# attribute fails loudly (AttributeError) should a Ray upgrade rename what it replaces.
_RAY_START_WITHOUT_CLIENT = """
import sys
from ray.scripts import scripts
getattr(scripts, "get_ray_client_dependency_error")
scripts.get_ray_client_dependency_error = lambda: ImportError("the tests' nodes run no Ray Client server")
sys.argv[0] = "ray"
sys.exit(scripts.main())
"""


class RayNode:
    """One `ray start` (a head when `address` is None) with one CPU, `gpus` logical GPUs,
    `resources` as given (the node type) and a small object store. It starts at once;
    `wait()` returns `ray start`'s exit status once the node runs (0) or failed, and
    `output` is what it said."""

    def __init__(self, env: dict[str, str], *, gpus: int, resources: str | None = None,
                 address: str | None = None) -> None:
        self.temp_dir = Path(tempfile.mkdtemp(prefix="fg-ray-", dir="/tmp"))
        args = ["--num-cpus", "1", "--num-gpus", str(gpus), "--object-store-memory", str(100 * 2**20),
                "--temp-dir", str(self.temp_dir), "--dashboard-agent-listen-port", "0", "--disable-usage-stats"]
        if resources:
            args += ["--resources", resources]
        if address is None:
            args = ["--head", "--port", "0", "--include-dashboard", "false", "--dashboard-port", "0", *args]
        else:
            args = ["--address", address, *args]
        self.cmd = [sys.executable, "-c", _RAY_START_WITHOUT_CLIENT, "start", *args]
        self._out = self.temp_dir / "ray-start.out"
        with open(self._out, "w") as f:  # a file, not a pipe: Ray's daemons must not hold our pipe open
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def wait(self, timeout: float = 120.0) -> int:
        return self.proc.wait(timeout)

    @property
    def output(self) -> str:
        return self._out.read_text()

    @property
    def address(self) -> str:
        """The GCS address a head got (`ray start --address` and `fairgpu up --ray-address`)."""
        return (self.temp_dir / "ray_current_cluster").read_text().strip()

    def stop(self) -> None:
        """SIGKILL this node's process group (its GCS, raylet, agents; the raylet's
        workers end with it), then remove its temporary directory."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class UpOnCluster(Up):
    """`fairgpu up --ray-address ADDR --port 0` with its own env (the Ray token), in its own
    process group; everything else as `service_helpers.Up`."""

    def __init__(self, db_url: str, state_dir: Path, ray_address: str, env: dict[str, str]) -> None:
        self.cmd = [*FAIRGPU, "up", "--db", db_url, "--state-dir", str(state_dir), "--port", "0",
                    "--ray-address", ray_address]
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self.url: str | None = None
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env=env)
        self._reader = threading.Thread(target=self._read, name=f"up-{self.proc.pid}", daemon=True)
        self._reader.start()
