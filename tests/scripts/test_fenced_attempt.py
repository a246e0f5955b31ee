"""A fenced attempt stops itself (no server), writes no result or checkpoint after its
fence, and leaves an end marker; checkpoint generations are visible only when complete."""
from __future__ import annotations

import threading
import time

import pytest

from scheduler.runtime import jobfiles
from scheduler.runtime.tasks import TaskPayload, run_job
from workloads import generations


def test_a_fenced_hold_attempt_stops_itself_and_writes_nothing_after_the_fence(tmp_path):
    root = str(tmp_path)
    payload = TaskPayload(job_id=7, attempt=1, model="hold", seconds=60, results_dir=root, checkpoint_every_s=0.2,
                          fence_check_s=0.2, stop_grace_s=1.0)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("exc", _catch(run_job, payload)))
    t.start()
    time.sleep(1.0)
    assert jobfiles.attempt_alive(root, 7, 1, now=time.time())
    assert jobfiles.settle_attempt(root, 7, 1) is None  # the new leader's fence
    fenced_at = time.time()
    t.join(timeout=payload.fence_check_s + payload.stop_grace_s + 1)
    assert not t.is_alive(), "the fenced attempt kept running"
    assert isinstance(out["exc"], jobfiles.Fenced)
    assert jobfiles.fenced(root, 7, 1) and jobfiles.read_result(root, 7, 1) is None
    ended = jobfiles.read_ended(root, 7, 1)
    assert ended["how"] == "fenced" and not jobfiles.attempt_alive(root, 7, 1, now=time.time())
    newest = generations.latest(jobfiles.checkpoint_dir(root, 7))
    assert newest is None or newest.stat().st_mtime <= fenced_at + 0.05


def _catch(fn, *args):
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return exc
    return None


def test_concurrent_writers_never_show_a_half_written_generation_and_pruning_keeps_the_bound(tmp_path):
    store = tmp_path / "checkpoint"
    stop = threading.Event()
    bad = []

    def writer(attempt):
        for i in range(30):
            with generations.writing(store, attempt=attempt) as d:
                for k in range(5):
                    (d / f"part-{k}").write_bytes(bytes([i % 256]) * 65536)

    def reader():
        while not stop.is_set():
            newest = generations.latest(store)
            if newest is None:
                continue
            try:
                parts = sorted(p.name for p in newest.iterdir())
                sizes = {p.stat().st_size for p in newest.iterdir()}
            except FileNotFoundError:
                continue  # pruned meanwhile: a reader resumes from a newer one
            if parts != [f"part-{k}" for k in range(5)] or sizes != {65536}:
                bad.append((newest.name, parts, sizes))

    threads = [threading.Thread(target=writer, args=(a,)) for a in (1, 2)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert not bad
    kept = generations.generations(store)
    assert len(kept) == generations.KEEP and all(generations.parse(p.name)[0] == 2 for p in kept)
    assert [p.name for p in store.iterdir() if not generations.parse(p.name)] == []  # no staging left
    assert generations.latest(store) == kept[-1]  # the newest attempt's newest generation


def test_a_guarded_commit_that_is_refused_leaves_nothing(tmp_path):
    with pytest.raises(generations.NotCommitted):
        with generations.writing(tmp_path, attempt=3, may_commit=lambda: False) as d:
            (d / "x").write_text("x")
    assert list(tmp_path.iterdir()) == []
