"""Why jobs wait: the reasons the admit phase stores each cycle, only where they changed.

The policy explains per (account, size) group (`quota.policy.Explained`); a group's reason
lives in the wait_reason table, and a pending job's own `reason` column holds only a
reason of its own (held back by the loop, Infeasible). The API shows a waiting job its
group's reason unless it has its own.

Invariants:
- Only what differs from what is stored is written: the groups against the reasons last
  written (`written`, the loader's, updated here in place as the write is made), the jobs
  against their rows as loaded. After a rebuild (`loaded.rebuilt`) every group is
  written afresh and every pending job's own reason is looked at.
- Writes go through apply (`set_group_reasons`, `set_reasons`), in the caller's
  transaction; the per-job reasons written are returned for the loader to remember once
  that transaction committed.
"""
from __future__ import annotations

from datetime import datetime

import quota
from scheduler.loop import apply
from scheduler.services.snapshot import Synced
from scheduler.store import JobState


def write_reasons(s, decision: quota.Decision, loaded: Synced, held: dict[int, tuple[str, str]],
                  written: dict, now: datetime) -> dict:
    """Store why jobs wait (see the module): a group whose reason changed since it was last
    written is stored once, and a group with no job waiting is dropped (one whose last
    jobs started this cycle, in the next). A job re-read this cycle that is explained by its
    group has its own reason cleared; `held` (the loop's own reasons) wins. Returns the
    per-job reasons written."""
    jobs, pending = loaded.jobs, JobState.PENDING
    waiting: quota.policy.Explained = decision.waiting  # PolicyState.cycle's: per group
    per_job = {jid: (w.reason, w.message) for jid, w in waiting.explicit.items()}
    ids = loaded.account_ids
    live = {(ids[account], k): why for (account, k), why in waiting.reasons.items()}
    fresh = loaded.rebuilt  # a new state: replace what is stored (written is empty)
    changed = [(key, why) for key, why in live.items() if written.get(key) != why]
    gone = [key for key in written if key not in live]
    if changed or gone or fresh:
        apply.set_group_reasons(s, changed, gone, at=now, replace_all=fresh)
    written.update(changed)
    for key in gone:
        del written[key]
    admitted = {a.request_id for a in decision.admissions}
    for jid in (jobs if fresh else loaded.changed):
        row = jobs.get(jid)
        if (row is not None and row.state == pending and row.reason is not None and jid not in admitted
                and jid not in held and jid not in per_job):
            per_job[jid] = (None, None)  # its group's reason is the one shown
    per_job.update(held)
    changed_rows = {}  # only reasons that differ from the rows as loaded are written
    for jid, why in per_job.items():
        row = jobs.get(jid)
        if row is None or row.state != pending or (row.reason, row.reason_message) != why:
            changed_rows[jid] = why
    return apply.set_reasons(s, changed_rows)
