"""A hostile script job: every attack of issue 21 and a few more, tried from inside its
own job. It prints one line per attempt, `ATTACK <name> <OK|FAILED> <detail>`: OK means
the attack did what it wanted (a breach), FAILED that the system stopped it. The test
judges by effects on the host as well, never by this script's word alone.

Usage (its argv[1] is a JSON object): state_dir, db, token, server_pid, victim_dir,
victim_result, victim_secret_file, api_port, pg_port, site_dir, tag, threads.
"""
import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time

ARGS = json.loads(sys.argv[1])


def report(name, ok, detail=""):
    print(f"ATTACK {name} {'OK' if ok else 'FAILED'} {str(detail)[:300]}", flush=True)


def attempt(name, fn):
    try:
        detail = fn()
        report(name, True, detail)
    except BaseException as exc:  # noqa: BLE001 - every failure is the point
        report(name, False, f"{type(exc).__name__}: {exc}")


def read(path):
    with open(path, "rb") as f:
        return f.read(4096).decode(errors="replace")


# -- secrets -------------------------------------------------------------------------------
attempt("read-admin-token", lambda: read(ARGS["token"]))
attempt("list-state-dir", lambda: os.listdir(ARGS["state_dir"]))


def db_weight():
    if not os.path.exists(ARGS["db"]):
        raise FileNotFoundError(ARGS["db"])  # sqlite3 would create an empty file
    con = sqlite3.connect(ARGS["db"], timeout=2)
    n = con.execute("UPDATE account SET weight = 99").rowcount
    con.commit()
    return f"{n} rows"


attempt("write-database", db_weight)
attempt("read-server-fds", lambda: [os.readlink(f"/proc/{ARGS['server_pid']}/fd/{fd}")
                                    for fd in os.listdir(f"/proc/{ARGS['server_pid']}/fd")])
attempt("read-server-environ", lambda: read(f"/proc/{ARGS['server_pid']}/environ"))
attempt("read-server-root", lambda: os.listdir(f"/proc/{ARGS['server_pid']}/root/"))
attempt("read-victim-secret", lambda: read(ARGS["victim_secret_file"]))
attempt("list-victim-dir", lambda: os.listdir(ARGS["victim_dir"]))
attempt("read-victim-checkpoint", lambda: read(os.path.join(ARGS["victim_dir"], "checkpoint", "state.txt")))
attempt("read-victim-log", lambda: read(os.path.join(ARGS["victim_dir"], "attempt-1.log")))


def processes():
    seen = []
    for p in os.listdir("/proc"):
        if p.isdigit() and p != "1":  # PID 1: its own sandbox's init
            try:
                seen.append(read(f"/proc/{p}/cmdline").replace("\0", " ")[:80])
            except OSError:
                pass
    others = [c for c in seen if "evil.py" not in c and "fairgpu" not in c and c]
    if others:
        return others
    raise PermissionError(f"sees only its own {len(seen)} processes")


attempt("see-other-processes", processes)


# -- forgery ------------------------------------------------------------------------------
def forge(path, body):
    def go():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # as publish_result does
        os.write(fd, json.dumps(body).encode())
        os.close(fd)
        return path
    return go


attempt("forge-victim-fence", forge(ARGS["victim_result"], {"fenced": True, "at": time.time()}))
attempt("forge-victim-result", forge(ARGS["victim_result"] + ".tmp", {"exit_code": 0, "forged": True}))
attempt("poison-python-env", lambda: open(os.path.join(os.path.dirname(os.__file__), "evil_poison.py"), "w"))
attempt("poison-script-site", lambda: open(os.path.join(ARGS["site_dir"], "sitecustomize.py"), "a"))


# -- the network ----------------------------------------------------------------------------
def connect(port):
    def go():
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return f"connected to {port}"
    return go


attempt("reach-api", connect(ARGS["api_port"]))
attempt("reach-postgres", connect(ARGS["pg_port"]))


# -- limits -------------------------------------------------------------------------------
def raise_limit():
    import resource

    raised = []
    for name in ("RLIMIT_NPROC", "RLIMIT_AS", "RLIMIT_DATA"):
        lim = getattr(resource, name)
        soft, hard = resource.getrlimit(lim)
        if hard != resource.RLIM_INFINITY:
            resource.setrlimit(lim, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            raised.append(name)
    if not raised:
        raise PermissionError("no finite limit to raise here (a cgroup holds it)")
    return raised


attempt("raise-rlimit", raise_limit)


def raise_cgroup():
    found = []
    for root, _dirs, files in os.walk("/sys/fs/cgroup"):
        for f in files:
            if f in ("memory.limit_in_bytes", "memory.max", "pids.max"):
                with open(os.path.join(root, f), "w") as out:
                    out.write("max" if f.endswith(".max") else "-1")
                found.append(os.path.join(root, f))
        if len(found) > 3:
            break
    if not found:
        raise FileNotFoundError("no cgroup limit file to write")
    return found


attempt("raise-cgroup-limit", raise_cgroup)


def threads():
    started, stop = [], threading.Event()
    try:
        for _ in range(ARGS["threads"]):
            t = threading.Thread(target=stop.wait)
            t.start()
            started.append(t)
    except RuntimeError as exc:
        stop.set()
        raise RuntimeError(f"stopped after {len(started)} threads: {exc}") from None
    stop.set()
    return f"{len(started)} threads"


attempt("process-limit", threads)


# -- signals, and something left behind ------------------------------------------------------
attempt("kill-server", lambda: os.kill(ARGS["server_pid"], signal.SIGKILL))


def kill_everyone():
    os.kill(-1, signal.SIGKILL)  # every process this one may signal, but itself
    raise PermissionError("survived kill(-1): nothing outside its namespace was signalled")  # judged on the host


attempt("kill-all", kill_everyone)


def orphan():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", ARGS["tag"]])
        os._exit(0)
    os.wait()
    return "double-forked a setsid sleeper"


attempt("leave-orphan", orphan)  # judged on the host: nothing with the tag may survive the job
print("EVIL DONE", flush=True)
