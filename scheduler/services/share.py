"""The share report (like Slurm's sshare): shares, usage, fair-share factor, entitlement.

Rows come in tree order (depth first). Keys are exactly SHARE_KEYS. Allocated slices and
pending jobs are rolled up the tree; raw_usage is decayed slice-seconds, rolled up.
`under` limits the report to one account's subtree (an institution's own view).
"""
from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from quota import entitlements, fair_share
from scheduler.services.errors import NotFound
from scheduler.services.snapshot import load_snapshot

SHARE_KEYS = ("account", "parent", "weight", "norm_shares", "raw_usage", "norm_usage", "effective_usage",
              "fairshare_factor", "guaranteed_slices", "max_slices", "entitled_slices", "allocated_slices",
              "pending_jobs")


def share_rows(session: Session, now: datetime, under: str | None = None) -> list[dict]:
    loaded = load_snapshot(session, now)
    snap = loaded.snapshot
    tree = snap.tree
    if under is not None and under not in tree:
        raise NotFound(f"unknown account {under}")
    factors = fair_share(tree, snap.usage, snap.config.algorithm)
    demand: dict[str, float] = {}
    alloc = {n: 0 for n in tree.order}
    pending = {n: 0 for n in tree.order}
    for job in snap.running:
        demand[job.account] = demand.get(job.account, 0.0) + job.slices
        for a in tree.ancestors(job.account):
            alloc[a] += job.slices
    for req in snap.pending:
        if req.account in tree:
            demand[req.account] = demand.get(req.account, 0.0) + req.slices
            for a in tree.ancestors(req.account):
                pending[a] += 1
    entitled = entitlements(tree, snap.capacity.total_slices, demand)
    names = tree.subtree(under) if under else list(tree.order)
    keep = set(names)
    rows = []
    for n in tree.order:
        if n not in keep:
            continue
        spec = tree.accounts[n]
        rows.append({
            "account": n,
            "parent": spec.parent,
            "weight": spec.weight,
            "norm_shares": factors.norm_shares[n],
            "raw_usage": factors.raw_usage[n],
            "norm_usage": factors.norm_usage[n],
            "effective_usage": factors.effective_usage[n],
            "fairshare_factor": factors.factor[n],
            "guaranteed_slices": spec.guaranteed,
            "max_slices": spec.cap,
            "entitled_slices": entitled.get(n, 0.0),
            "allocated_slices": alloc[n],
            "pending_jobs": pending[n],
        })
    return rows
