"""The embedded server: everything one machine needs, in one process.

`Embedded` wires the pieces and owns their lifecycle: the API socket, the database
(SQLite file by default, or PostgreSQL), the leader lease, Ray (a local instance with
logical GPUs, or an existing cluster), the scheduling loop in a thread, the HTTP API
with /metrics, and the NVML samplers. `fairgpu up` runs it in the foreground;
`fairgpu demo` and the tests run it in the background.

Start, in this order, each step only once the one before succeeded:
 1. bind and listen on the API socket (port 0 allowed; `port` is then the real one),
    so a busy port fails before anything else starts and nothing can take the port
    between its choice and its use;
 2. the state directory (0700) and the database (a SQLite file 0600), migrated; what
    a dead server's local Ray left on this host is ended, and a live server on another
    database that recorded its Ray in this state directory is a refusal (SessionInUse,
    scheduler.runtime.ray_session);
 3. the leader lease (scheduler.store.lease): refused if another server holds it; with
    `standby`, a hot standby: it goes on to 4 and serves the API read-only
    (scheduler.api.standby: writes are 503 naming the leader) while it waits for the lease to
    lapse, keeping the loop's loader warm; the heartbeat starts once the lease is ours;
 4. Ray (a local one listens on loopback only), the executor, metrics and the loop
    (`start_ray`, no database write); once the lease is ours, recovery and capacity
    (`become_leader`), then the loop runs and the API serves read-write on the socket
    bound in 1. What holds script jobs is said here, at every start: this host's
    sandbox with a local Ray, each node's as it is first probed on a cluster, and
    loudly, the choice of --unsandboxed-scripts.

Invariants: one scheduling loop per database (the lease); a standby writes nothing to
the database before it holds the lease. On start, jobs a previous server left RUNNING are
settled (finished if their result file is there, else queued again once their fenced
attempt stopped: scheduler.loop.recovery); on stop (SIGTERM, Ctrl-C), running jobs are requeued, never lost, and the
lease is released for a standby. A server that loses the lease stops scheduling at
once, cancels its Ray tasks and writes nothing more (no drain). A local Ray is recorded
in the state directory once started (its session directory as `ray.init` answered, and
the processes that name it), and shut down with the server; if the server dies
without stopping it (kill -9), the next server on this host ends it
(scheduler.runtime.ray_session). The admin token is written once, at first start, to a file only
its owner can read.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from scheduler.services.capacity import slices_per_gpu_for
from scheduler.store import utcnow

log = logging.getLogger("fairgpu.server")

DEFAULT_LEASE_TTL_S = 15.0


def default_state_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("FAIRGPU_STATE_DIR") or platformdirs.user_data_dir("fairgpu"))


class PortInUse(RuntimeError):
    """The API's address cannot be bound (in use, or not ours to bind)."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one, read it back with
    getsockname). Raises PortInUse with one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait for TIME_WAIT
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(False)
    return sock


def make_private(state_dir: Path, db_url: str) -> None:
    """The state directory 0700 and a SQLite database file 0600, created so if missing.
    SQLite gives its -wal and -shm files the database file's mode."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _chmod_own(state_dir, 0o700)
    (state_dir / "results").mkdir(exist_ok=True, mode=0o700)
    _chmod_own(state_dir / "results", 0o700)
    path = sqlite_path(db_url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists():
            _chmod_own(p, 0o600)


def sqlite_path(db_url: str) -> Path | None:
    """The file of a SQLite URL, or None (PostgreSQL, in-memory SQLite)."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _chmod_own(path: Path, mode: int) -> None:
    """chmod what this user owns; leave alone what another user owns (a shared volume)."""
    st = path.stat()
    if st.st_uid == os.getuid() and (st.st_mode & 0o777) != mode:
        os.chmod(path, mode)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recovered_line(rec: dict[str, int]) -> str | None:
    """What recovery did, in one line for the operator (None: nothing to say)."""
    if not (rec.get("finished") or rec.get("requeued") or rec.get("failed") or rec.get("held")):
        return None
    from scheduler.loop.recovery import UNCLEAN_STOP_LIMIT

    failed = (f", {rec['failed']} failed (running at {UNCLEAN_STOP_LIMIT} unclean scheduler stops in a row: "
              "not started again)" if rec.get("failed") else "")
    held = (f"; {rec['held']} fenced attempt(s) still hold their slices until they stop"
            if rec.get("held") else "")
    return f"recovered: {rec.get('finished', 0)} job(s) had finished, {rec.get('requeued', 0)} queued again{failed}{held}"


@dataclass
class Embedded:
    db_url: str | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    ray_address: str | None = None
    gpus: int | None = None  # logical GPUs for a local Ray (CPU-only machines)
    gpu_type: str = "T4"
    slices_per_gpu: int | None = None
    host: str = "127.0.0.1"
    port: int = 8470  # 0: any free port; after start, the port it serves on
    clock: Callable[[], datetime] = utcnow
    period_s: float = 1.0
    usage_period_s: float = 15.0
    retry_limit: int = 3
    nvml_module: str | None = None
    warm_up: bool = True
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S
    standby: bool = False  # wait for the lease instead of refusing to start
    checkpoint_grace_s: float = 10.0  # how long a preempted or drained job may take to checkpoint
    unsandboxed_scripts: bool = False  # `--unsandboxed-scripts`: run scripts unconfined where no sandbox starts
    say: Callable[[str], None] = log.warning  # one-line notices (`fairgpu up` prints them)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self._threads: list[threading.Thread] = []
        self.uvicorn = None
        self.ray = None
        self.sock: socket.socket | None = None
        self.lease = None
        self.loop = None
        self.executor = None
        self.lost = None  # the LeaseLost that ended this server's leadership, if any
        self.recovered: dict[str, int] = {}
        self.admin_token: str | None = None
        self._done = threading.Event()  # set by stop(), a signal, a lost lease or the HTTP thread ending
        self._lost_lock = threading.Lock()
        self._stopped = False
        self.requeued = 0
        self.ray_record: Path | None = None  # this server's local Ray session, as recorded (scheduler.runtime.ray_session)
        self.standing_by = False  # a standby waiting for the lease: its API is read-only (scheduler.api.standby)
        self.leading = False  # holds the lease and recovered: its loop may run, its stop drains

    # -- start ----------------------------------------------------------------------
    def start(self, announce: Callable[[Embedded], None] | None = None, timeout: float = 60.0) -> bool:
        """Everything, the API in a thread; `announce` once it serves. A standby whose lease
        is held starts Ray, the executor, metrics and the API (read-only: scheduler.api.standby)
        first, keeps the loader warm while it waits, and then only takes over: recovery,
        capacity, the loop. False if stopped while standing by."""
        self.bind()
        self.open_store()
        self.settle_ray_sessions()
        leader = self.claim_lease()
        if leader is None:
            return False
        self.start_ray()
        if not leader:
            self.start_http(timeout)
            if announce is not None and not self._done.is_set():
                announce(self)
            if not self.stand_by():
                return False
        self.become_leader()
        self.start_loop()
        if self.uvicorn is None:
            self.start_http(timeout)
            if announce is not None and not self._done.is_set():
                announce(self)
        return True

    def bind(self) -> None:
        """Step 1: listen on the API's address; `port` becomes the real one (PortInUse)."""
        self.sock = bind_socket(self.host, self.port)
        self.port = self.sock.getsockname()[1]

    def open_store(self) -> None:
        """Step 2: the state directory and the database, private and migrated."""
        from scheduler.store import default_db_url, init_db, make_engine

        self.db_url = self.db_url or default_db_url()
        make_private(self.state_dir, self.db_url)
        self.engine = make_engine(self.db_url)
        init_db(self.engine)

    def settle_ray_sessions(self) -> None:
        """Step 2, and again just before a local Ray starts: end what dead servers' local Ray
        sessions left on this host; SessionInUse if a live server on another database
        recorded one in this state directory (scheduler.runtime.ray_session)."""
        from scheduler.runtime import ray_session

        for rec in ray_session.settle(self.state_dir, self._database()):
            self.say(f"ended what was left of a dead server's Ray on this host (pid {rec.pid}, "
                     f"session {rec.session_dir})")

    def _database(self) -> str:
        """The database as a record names it: a SQLite file's absolute path, else the URL
        without its password."""
        from scheduler.store import redact_url

        path = sqlite_path(self.db_url)
        return f"sqlite:///{path.resolve()}" if path is not None else redact_url(self.db_url)

    def take_lease(self) -> bool:
        """Step 3: the leader lease, or LeaseHeld. With `standby`, wait for it (False if
        stopped meanwhile). A holder that is a dead process on this host (a crashed
        server) is waited for until its lease lapses. Starts the heartbeat."""
        got = self.claim_lease()
        return self.stand_by() if got is False else bool(got)

    def claim_lease(self) -> bool | None:
        """Try the lease once: True if it is ours (the heartbeat starts); False if held and
        this server is a standby (`stand_by` waits for it); else LeaseHeld. A dead holder
        on this host is waited for until its lease lapses (True; None if stopped meanwhile)."""
        from scheduler.store.lease import Lease, LeaseHeld

        self.lease = Lease(self.engine, ttl_s=self.lease_ttl_s)
        try:
            self.lease.try_acquire()
        except LeaseHeld as exc:
            holder = exc.holder
            if self.standby:
                who = holder.describe() if holder else "another server"
                self.say(f"standing by: the scheduler for this database runs at {who}; "
                         f"taking over when its lease lapses")
                self.standing_by = True
                return False
            if holder is not None and holder.host == self.lease.host and not _pid_alive(holder.pid):
                if not self._wait_for_dead_holder(holder):
                    return None
            else:
                raise
        self.lease.start_heartbeat(self._lease_lost)
        return True

    def stand_by(self) -> bool:
        """Wait until the lease lapses and take it (True), keeping the loop's loader warm
        meanwhile if the loop exists; False if stopped first."""
        if not self.lease.wait_acquire(self._done, while_waiting=self._warm):
            return False
        self.say(f"took over the scheduler lease (epoch {self.lease.epoch})")
        self.lease.start_heartbeat(self._lease_lost)
        return True

    def _warm(self) -> None:
        """While standing by: bring the loop's loader up to the database (reads only), so
        the first cycle after a takeover reads only what changed since."""
        if self.loop is None:
            return
        from scheduler.services.snapshot import event_horizon
        from scheduler.store import session_scope

        try:
            horizon = event_horizon(self.engine)
            with session_scope(self.engine, readonly=True) as s:  # SQLite: no write lock
                self.loop.loader.sync(s, horizon=horizon)
        except Exception as exc:  # the leader's schema or rows moved under it: read again later
            from scheduler.services.snapshot import SnapshotLoader

            log.debug("standby: warming the loader failed: %s", exc)
            self.loop.loader = SnapshotLoader()

    def _wait_for_dead_holder(self, holder) -> bool:
        """The previous server on this host is gone without releasing (kill -9, a crash):
        wait until its lease lapses, then take it (True; False if stopped meanwhile).
        Raises LeaseHeld if the lease is renewed meanwhile (then its holder lives after
        all, e.g. in another PID namespace)."""
        from scheduler.store.lease import LeaseHeld

        left = max(0.0, (holder.expires_at - self.lease.now()).total_seconds())  # the lease's own clock
        self.say(f"the last server on this database (pid {holder.pid} on this host) is gone; "
                 f"taking over when its lease lapses (in {left:.0f} s)")
        deadline = time.monotonic() + left + 2 * max(0.2, self.lease_ttl_s / 5) + 1.0
        while True:
            try:
                self.lease.try_acquire()
                return True
            except LeaseHeld as exc:
                renewed = exc.holder is not None and (exc.holder.epoch != holder.epoch
                                                      or exc.holder.expires_at > holder.expires_at)
                if renewed or time.monotonic() > deadline:
                    raise
            if self._done.wait(max(0.2, self.lease_ttl_s / 5)):
                return False

    def _fenced(self):
        """A write transaction fenced by this server's lease."""
        from contextlib import contextmanager

        from scheduler.store import session_scope

        @contextmanager
        def scope():
            with session_scope(self.engine) as s:
                self.lease.fence(s)
                yield s

        return scope()

    def start_ray(self) -> None:
        """Step 4's half that needs no lease (a hot standby runs it before it leads): Ray,
        the executor, metrics, the loop (not yet running). Writes nothing to the database."""
        import ray

        from scheduler.loop.coordinator import SchedulingLoop
        from scheduler.loop.publish import Publisher
        from scheduler.metrics.exporter import build_registry
        from scheduler.runtime.executor import RayExecutor, init_ray

        self.ray = ray
        local_cpus = None
        if not self.ray_address:
            spg = self.slices_per_gpu or slices_per_gpu_for(self.gpu_type)
            local_cpus = max(os.cpu_count() or 1, (self.gpus or 0) * spg)
        self.say_sandbox()
        ours = not self.ray_address and not ray.is_initialized()
        if ours:
            self.settle_ray_sessions()  # a leader may have died since step 2
        context = init_ray(ray, address=self.ray_address, gpus=self.gpus, gpu_type=self.gpu_type,
                           num_cpus=local_cpus)
        if ours:
            self._record_ray(context)
        self.executor = RayExecutor(ray, str(self.state_dir / "results"), allow_unsandboxed=self.unsandboxed_scripts,
                                    on_new_node=self._node_seen)
        self.registry, self.metrics = build_registry(lambda: self.publisher.view(), health=lambda: self.loop.health())
        self.samplers = self._start_samplers()
        self.publisher = Publisher(self.engine, self.metrics, gpu_source=self._gpu_source,
                                   pending_source=self.executor.pending_in_ray).start()
        self.loop = SchedulingLoop(self.engine, self.executor, self.clock, slices_per_gpu=self.slices_per_gpu,
                                   retry_limit=self.retry_limit, usage_period_s=self.usage_period_s,
                                   on_cycle=self.publisher.publish, lease=self.lease,
                                   on_lease_lost=self._lease_lost, checkpoint_grace_s=self.checkpoint_grace_s)
        if self.warm_up and not self.ray_address and self.gpus:
            spg = self.slices_per_gpu or slices_per_gpu_for(self.gpu_type)
            self.executor.warm_up(min(64, self.gpus * spg), 1.0 / spg)

    def become_leader(self) -> None:
        """Step 4's other half, once the lease is ours: the admin token at first start, then
        recovery of what a previous server left, and capacity. A standby that waited first
        ends what a leader that died meanwhile left of its local Ray on this host."""
        from scheduler.services.auth import ensure_admin_token

        if self.standing_by and not self.ray_address:
            self.settle_ray_sessions()
        with self._fenced() as s:
            self.admin_token = ensure_admin_token(s, self.admin_token_path, self.clock())
        self.recovered = self.loop.recover()
        self.loop.nodes.refresh_capacity(self.clock())
        if self.standing_by:
            line = recovered_line(self.recovered)
            if line:
                self.say(line)
        self.standing_by = False
        self.leading = True

    def _record_ray(self, context) -> None:
        """Record the local Ray just started (its session directory, from `ray.init`'s
        answer, and the processes that name it), so the next server on this host can end
        it if this one dies without stopping it."""
        from scheduler.runtime import ray_session

        info = getattr(context, "address_info", None) or {}
        session_dir = info.get("session_dir") if isinstance(info, dict) else None
        if not session_dir:
            log.warning("cannot record the local Ray's session: a kill -9 of this server may leave it behind")
            return
        pids = sorted(ray_session.session_processes(session_dir))
        self.ray_record = ray_session.record(self.state_dir, self._database(), session_dir, pids)

    # -- the script sandbox -----------------------------------------------------------
    def say_sandbox(self) -> None:
        """At every start: the choice of --unsandboxed-scripts, loudly, and (with a local
        Ray, whose one node is this host) what holds scripts here. A cluster's nodes are
        said as they are first probed (`_node_seen`)."""
        if self.unsandboxed_scripts:
            self.say("WARNING: --unsandboxed-scripts: script jobs on nodes without a sandbox run unconfined, "
                     "with the server's user's rights")
        if not self.ray_address:
            from scheduler.runtime import sandbox

            self.say(f"scripts on node {socket.gethostname()}: {sandbox.mechanism()}")

    def _node_seen(self, node) -> None:
        """A Ray node probed for the first time (a cluster's: a local Ray's is this host)."""
        if not self.ray_address:
            return
        what = node.sandbox.describe if node.sandbox is not None else "unknown (its probe failed)"
        self.say(f"scripts on node {node.name}: {what}")

    def sandbox_status(self):
        """Whether script jobs are taken (`services.script_gate`): with a local Ray, from
        the sandbox probe of this host; on a cluster, refused only once every node probed
        so far says no sandbox starts there (until a node has answered, the tasks decide)."""
        from scheduler.services.script_gate import SandboxStatus

        if not self.ray_address:
            from scheduler.runtime import sandbox

            found = sandbox.probe()
            return SandboxStatus(found.ok, found.why, self.unsandboxed_scripts)
        known = {name: box for name, box in self.executor.node_sandboxes().items() if box is not None}
        if not known or any(box.ok for box in known.values()):
            return SandboxStatus(True, unsandboxed_allowed=self.unsandboxed_scripts)
        name, box = sorted(known.items())[0]
        more = f", and {len(known) - 1} more node(s) alike" if len(known) > 1 else ""
        why = box.describe.removeprefix("no sandbox: ")
        return SandboxStatus(False, f"node {name}: {why}{more}", self.unsandboxed_scripts)

    def standby_message(self) -> str:
        """Why a standby refuses a write, naming the leader as the lease row has it."""
        from scheduler.store.lease import current_holder

        try:
            holder = current_holder(self.engine)
        except Exception:  # the database is away: say so without a name
            holder = None
        who = f" at {holder.describe()}" if holder is not None else ""
        return (f"this server is a standby: the scheduler for this database runs{who}; send changes there "
                "(this one takes over, read-write, once that server's lease lapses)")

    @property
    def admin_token_path(self) -> Path:
        return self.state_dir / "admin.token"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _start_samplers(self):
        try:
            from scheduler.metrics.sampler import start_samplers

            return start_samplers(self.ray, self.nvml_module)
        except Exception:
            log.exception("could not start NVML samplers")
            return {}

    def _gpu_source(self):
        from scheduler.metrics.sampler import collect, gpu_views, nvml_nodes

        reports = collect(self.ray, self.samplers)
        return gpu_views(reports), nvml_nodes(reports)

    def make_app(self):
        from scheduler.api import create_app, metrics_route

        app = create_app(self.engine, clock=self.clock, on_change=self.loop.wake, health=self.loop.health,
                         extra_routes=[metrics_route(self.registry)], results_dir=str(self.state_dir / "results"),
                         sandbox_status=self.sandbox_status)
        from scheduler.api.standby import StandbyGuard

        app.add_middleware(StandbyGuard, server=self)
        return app

    def start_loop(self) -> None:
        from scheduler.loop import collector
        from scheduler.store.checkpoint import WalCheckpointer

        collector.tune()  # this process holds a row per waiting job (scheduler.loop.collector)
        self.checkpointer = WalCheckpointer.for_engine(self.engine)
        if self.checkpointer is not None:
            self.checkpointer.start()
        t = threading.Thread(target=self.loop.run, kwargs={"period_s": self.period_s}, name="fairgpu-loop",
                             daemon=True)
        t.start()
        self._threads.append(t)

    def start_http(self, timeout: float = 60.0) -> None:
        """Serve the API on the socket bound at start, in a thread; returns once it serves."""
        import uvicorn

        config = uvicorn.Config(self.make_app(), log_level="warning", access_log=False)
        server = self.uvicorn = uvicorn.Server(config)  # in a thread, uvicorn leaves signals alone

        def serve() -> None:
            try:
                server.run(sockets=[self.sock])
            finally:
                self._done.set()

        t = threading.Thread(target=serve, name="fairgpu-http", daemon=True)
        t.start()
        self._threads.append(t)
        deadline = time.monotonic() + timeout
        while not server.started:  # uvicorn has no event for it
            if time.monotonic() > deadline or not t.is_alive():
                raise RuntimeError(f"the API did not start on {self.url}")
            time.sleep(0.02)

    def start_background(self, timeout: float = 60.0) -> Embedded:
        """Start everything, the HTTP server in a thread; returns once it answers and
        leads (a standby: once it took over)."""
        if not self.start(timeout=timeout):
            raise RuntimeError("stopped while standing by")
        return self

    def serve_foreground(self, announce: Callable[[Embedded], None] | None = None) -> int | None:
        """`fairgpu up`: serve until SIGTERM or Ctrl-C (or a lost lease), then stop.
        `announce` is called once the API serves. Returns how many running jobs were
        queued again on the way out; None if stopped while standing by."""
        restore = self._handle_signals()
        started = False
        try:
            def said(server: Embedded) -> None:
                self._handle_signals()  # again: starting Ray installed its own SIGTERM handler
                if announce is not None:
                    announce(server)

            started = self.start(said) and not self._done.is_set()
            if started:
                while not self._done.wait(1.0):
                    pass
        finally:
            requeued = self.stop()
            restore()
        return requeued if started else None

    def _handle_signals(self) -> Callable[[], None]:
        """SIGINT and SIGTERM end serve_foreground (a second one ends the process at
        once). Returns what puts the handlers found back."""
        import signal

        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, _frame) -> None:
            self._done.set()
            signal.signal(signum, signal.SIG_DFL)

        saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, previous in saved.items():
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)

        return restore

    # -- losing the lease -----------------------------------------------------------
    def _lease_lost(self, exc) -> None:
        """Another server took the lease over (from the heartbeat or the loop's fence):
        stop scheduling at once, cancel this server's Ray tasks, write nothing more."""
        with self._lost_lock:
            if self.lost is not None:
                return
            self.lost = exc
        self.lease.stop_heartbeat()
        if self.loop is not None:
            self.loop.stop()
        if self.executor is not None:
            self.executor.shutdown()
        self.say(f"{exc}; this server stopped scheduling and cancelled its Ray tasks")
        self._done.set()
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True

    # -- stop -----------------------------------------------------------------------
    def stop(self) -> int:
        """Stop serving and scheduling; requeue running jobs (not after a lost lease: then
        nothing is written); release the lease. Returns how many jobs were requeued."""
        from scheduler.store.lease import LeaseLapsed, LeaseLost

        if self._stopped:
            return self.requeued
        self._stopped = True
        self._done.set()
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True
        if getattr(self, "publisher", None) is not None:
            self.publisher.stop()
        if getattr(self, "checkpointer", None) is not None:
            self.checkpointer.stop()
        requeued = 0
        if self.loop is not None:
            self.loop.stop()
            for t in self._threads:
                if t.name == "fairgpu-loop":
                    t.join(timeout=30)
            if self.lost is None and self.leading:
                try:
                    requeued = self.loop.drain()
                except LeaseLapsed as exc:  # the database was away: the next leader recovers them
                    self.say(f"could not queue the running jobs again ({exc}); the next server will")
                except LeaseLost as exc:
                    self._lease_lost(exc)
        if self.lost is not None and self.executor is not None:
            self.executor.shutdown()  # what the loop started after the loss was noticed
        for t in self._threads:
            if t.name == "fairgpu-http":
                t.join(timeout=10)
        if self.lease is not None and self.lease.epoch is not None and self.lost is None:
            self.lease.release()
        if self.ray is not None and self.ray.is_initialized():
            self.ray.shutdown()
        if self.ray_record is not None:
            from scheduler.runtime import ray_session

            ray_session.forget(self.ray_record)
        if getattr(self, "engine", None) is not None:
            self.engine.dispose()
        if self.sock is not None:
            self.sock.close()
        self.requeued = requeued
        return requeued
