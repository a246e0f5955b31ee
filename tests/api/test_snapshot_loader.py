"""The loop's SnapshotLoader keeps rows, requests and the policy inputs (tree, capacity,
settings) between loads; after every kind of change it must still equal a fresh load."""
from __future__ import annotations

from datetime import timedelta

from scheduler.loop import apply
from scheduler.services import accounts, capacity, jobs, settings
from scheduler.services.snapshot import SnapshotLoader, active_jobs, load_snapshot
from scheduler.store import session_scope

from api_helpers import T0

HOLD = dict(model="hold", framework=None, mode="train", spec={"seconds": 0})


def _both(engine, loader, at):
    with session_scope(engine, readonly=True) as s:
        kept = loader.load(s, at, usage={})
    with session_scope(engine, readonly=True) as s:
        fresh = load_snapshot(s, at, usage={})
    return kept, fresh


def _same(engine, loader, at) -> None:
    kept, fresh = _both(engine, loader, at)
    assert kept.snapshot == fresh.snapshot
    assert kept.jobs == fresh.jobs
    assert kept.account_ids == fresh.account_ids


def test_kept_loader_equals_a_fresh_load_after_every_change(seeded):
    engine, loader = seeded.engine, SnapshotLoader()
    at = T0
    _same(engine, loader, at)
    with session_scope(engine) as s:
        ids = jobs.submit_array(s, count=4, account="uni-a/nlp", slices=1, at=at, **HOLD)
        jobs.submit_array(s, count=1, account="uni-b", slices=2, at=at, **HOLD)
    _same(engine, loader, at)
    with session_scope(engine) as s:  # the loop admits two
        rows = {r.id: r for r in active_jobs(s, ids)}
        apply.admit_many(s, [(rows[ids[0]], "n1", [(0, 1)]), (rows[ids[1]], "n1", [(0, 1)])], at=at)
    _same(engine, loader, at)
    with session_scope(engine) as s:  # the API cancels one pending and one running
        jobs.cancel(s, ids[2], None, at)
        jobs.cancel(s, ids[0], None, at)
    _same(engine, loader, at)
    with session_scope(engine) as s:  # one running job finishes
        row = active_jobs(s, [ids[1]])[0]
        apply.finish_ok_many(s, [(row, at + timedelta(seconds=1), {"task_started_at": at.timestamp()})])
    _same(engine, loader, at)
    with session_scope(engine) as s:  # an admin changes the tree
        accounts.set_account(s, "uni-b", weight=5)
        accounts.add_account(s, "uni-c", weight=1)
    kept, _ = _both(engine, loader, at)
    assert kept.snapshot.tree.accounts["uni-b"].weight == 5 and "uni-c" in kept.snapshot.tree.accounts
    _same(engine, loader, at)
    with session_scope(engine) as s:  # capacity changes
        capacity.set_node(s, node="n2", gpus=1, slices_per_gpu=4, gpu_type="T4", at=at)
    kept, _ = _both(engine, loader, at)
    assert kept.snapshot.capacity.total_slices == 12
    _same(engine, loader, at)
    with session_scope(engine) as s:  # a policy setting changes
        settings.set_setting(s, "algorithm", "fair-tree")
        settings.set_setting(s, "preemption", "off")
    kept, _ = _both(engine, loader, at)
    assert kept.snapshot.config.algorithm == "fair-tree" and not kept.snapshot.config.preemption
    _same(engine, loader, at)


def test_a_changed_cycle_reads_each_policy_input_once(seeded):
    """Accounts, nodes and settings are read once a cycle, and built from those rows
    when they changed (not read a second time to build)."""
    import re

    import sqlalchemy as sa

    engine, loader = seeded.engine, SnapshotLoader()
    tables = ("account", "node", "setting")
    reads: list[str] = []

    def count(conn, cursor, statement, params, context, executemany):
        read = re.match(r"\s*SELECT\b.*?\bFROM\s+(\w+)", statement, re.S | re.I)
        if read and read[1] in tables:
            reads.append(read[1])

    with session_scope(engine) as s:  # all three change
        accounts.add_account(s, "uni-c", weight=1)
        capacity.set_node(s, node="n2", gpus=1, slices_per_gpu=4, gpu_type="T4", at=T0)
        settings.set_setting(s, "algorithm", "fair-tree")
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(2):  # a changed cycle (all built), then an unchanged one
            with session_scope(engine, readonly=True) as s:
                loader.sync(s)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert sorted(reads) == sorted(tables * 2), reads
    assert "uni-c" in loader.state.tree.accounts and loader.state.capacity.total_slices == 12


def test_gated_jobs_stay_out_of_the_policy_until_their_gate_opens(seeded):
    """A held job and one waiting on another's success are in no Snapshot; release and
    success let them in, on the kept loader as on a fresh load."""
    from scheduler.services import control

    engine, loader, at = seeded.engine, SnapshotLoader(), T0
    with session_scope(engine) as s:
        first, held = jobs.submit_array(s, count=2, account="uni-a/nlp", slices=1, at=at, **HOLD)
        (after,) = jobs.submit_array(s, count=1, account="uni-b", slices=1, at=at, after=[first], **HOLD)
        control.hold(s, [held], None, at)
    _same(engine, loader, at)
    pending = lambda: {r.id for r in _both(engine, loader, at)[0].snapshot.pending}
    assert pending() == {first}
    with session_scope(engine) as s:
        control.release(s, [held], None, at)
        rows = {r.id: r for r in active_jobs(s, [first])}
        apply.admit_many(s, [(rows[first], "n1", [(0, 1)])], at=at)
    assert pending() == {held}
    _same(engine, loader, at)
    with session_scope(engine) as s:
        row = active_jobs(s, [first])[0]
        apply.finish_ok_many(s, [(row, at + timedelta(seconds=1), {"task_started_at": at.timestamp()})])
    assert pending() == {held, after}
    _same(engine, loader, at)
