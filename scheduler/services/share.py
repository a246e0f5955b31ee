"""The share report (like Slurm's sshare): shares, usage, fair-share factor, entitlement.

Rows come in tree order (depth first). Keys are exactly SHARE_KEYS. Every figure is
`quota.report`'s, the same the /metrics gauges publish (so `fairgpu share` and
`fairgpu_account_entitled_slices` agree, a node gone or not): allocated slices and pending
jobs are rolled up the tree; raw_usage is decayed slice-seconds, rolled up; entitlement
is water-filled from the capacity now, over running and feasible pending slices.
`under` limits the report to one account's subtree (an institution's own view).

`explain` (``fairgpu share --explain``) says the same figures in words: owed (entitled),
got (allocated), the factor, usage over shares and the cause, each account against its
siblings in the report. It computes no share of its own: every figure is share_rows'.
"""
from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

import quota
from scheduler.services.errors import NotFound
from scheduler.services.snapshot import load_snapshot

SHARE_KEYS = ("account", "parent", "weight", "norm_shares", "raw_usage", "norm_usage", "effective_usage",
              "fairshare_factor", "guaranteed_slices", "max_slices", "entitled_slices", "allocated_slices",
              "pending_jobs")


def share_rows(session: Session, now: datetime, under: str | None = None) -> list[dict]:
    """`quota.report`'s figures of the database's snapshot as SHARE_KEYS rows (allocated:
    the slices running jobs hold now)."""
    snap = load_snapshot(session, now).snapshot
    if under is not None and under not in snap.tree:
        raise NotFound(f"unknown account {under}")
    keep = set(snap.tree.subtree(under)) if under else None
    return [row(f) for f in quota.report(snap) if keep is None or f.name in keep]


def row(f: quota.AccountFigures) -> dict:
    """One account's figures as a share row (SHARE_KEYS)."""
    return {"account": f.name, "parent": f.parent, "weight": f.weight, "norm_shares": f.norm_shares,
            "raw_usage": f.raw_usage, "norm_usage": f.norm_usage, "effective_usage": f.effective_usage,
            "fairshare_factor": f.fairshare_factor, "guaranteed_slices": f.guaranteed_slices,
            "max_slices": f.max_slices, "entitled_slices": f.entitled_slices,
            "allocated_slices": f.allocated_slices, "pending_jobs": f.pending_jobs}


# -- share --explain ------------------------------------------------------------------------
EXPLAIN_KEYS = ("account", "parent", "owed_slices", "got_slices", "guaranteed_slices", "pending_jobs",
                "fairshare_factor", "usage_to_share", "cause")
EPS = 1e-9
SAME = 0.05  # a usage within 5 % of the share "matches" it


def explain_rows(session: Session, now: datetime, under: str | None = None) -> list[dict]:
    """``share_rows``' figures, each account's standing in words (``explain``)."""
    from scheduler.services.settings import policy_settings

    config = policy_settings(session).config
    return explain(share_rows(session, now, under=under), algorithm=config.algorithm,
                   reclaim=config.reclaim if config.preemption else None)


def explain(rows: list[dict], *, algorithm: str = "classic", reclaim: str | None = "guarantee") -> list[dict]:
    """Each row (of ``share_rows``) as EXPLAIN_KEYS: owed (entitled), got (allocated), the
    factor, usage over shares, and the cause in words, against the siblings in ``rows``
    (an institution's report holds its own subtree: its sub-accounts are compared with
    each other, the institution itself with no one it cannot see). ``reclaim``: the
    reclaim mode (guarantee or entitlement), None with preemption off."""
    siblings: dict[str | None, list[dict]] = {}
    for r in rows:
        siblings.setdefault(r["parent"], []).append(r)
    out = []
    for r in rows:
        ratio = _usage_to_share(r, algorithm)
        parts = [_usage_words(r, ratio), _standing_words(r, reclaim)]
        kin = siblings.get(r["parent"], []) if r["parent"] is not None else []
        if len(kin) > 1:
            parts.append(_rank_words(r, kin))
        out.append({"account": r["account"], "parent": r["parent"], "owed_slices": r["entitled_slices"],
                    "got_slices": r["allocated_slices"], "guaranteed_slices": r["guaranteed_slices"],
                    "pending_jobs": r["pending_jobs"], "fairshare_factor": r["fairshare_factor"],
                    "usage_to_share": ratio, "cause": "; ".join(parts)})
    return out


def _usage_to_share(r: dict, algorithm: str) -> float | None:
    """Usage over shares: the effective usage (classic: F = 2^-ratio), or the plain
    normalised usage under Fair Tree (whose factor is a rank)."""
    usage = r["effective_usage"] if algorithm == "classic" else r["norm_usage"]
    return usage / r["norm_shares"] if r["norm_shares"] > 0 else None


def _times(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.2f}x"


def _usage_words(r: dict, ratio: float | None) -> str:
    if r["raw_usage"] <= 0 and (ratio is None or ratio <= 0):
        return "no recorded usage: your factor is 1, the highest"
    if ratio is None:
        return "your share is too small to compare your usage with"
    if abs(ratio - 1) <= SAME:
        return "your usage over the last half-life matches your share"
    return f"your usage over the last half-life is {_times(ratio)} your share"


def _slices(x: float) -> str:
    """``1 slice``, ``3 slices``, ``1.67 slices``."""
    n = f"{x:.3g}" if abs(x - round(x)) > EPS else str(round(x))
    return f"{n} slice" if n == "1" else f"{n} slices"


def _standing_words(r: dict, reclaim: str | None) -> str:
    got, owed, guaranteed, pending = r["allocated_slices"], r["entitled_slices"], r["guaranteed_slices"], \
        r["pending_jobs"]
    if pending == 0 and got == 0:
        return "you have no running or waiting jobs, so you are owed nothing now (your share goes to the others)"
    if pending and got < guaranteed:
        return f"you are below your guarantee ({got} of {_slices(guaranteed)}): you go first"
    if got > owed + EPS:
        words = f"you hold {_slices(got - owed)} more than you are owed: you are borrowing idle slices"
        if reclaim is not None:
            words += f", which an account below its {reclaim} may take back"
        return words
    if pending and got + EPS < owed:
        return (f"you are owed {_slices(owed - got)} more: you go before accounts at or over their "
                "entitlement, the highest factor first")
    if pending:
        return "you hold what you are owed: your waiting jobs take slices that others leave idle, by factor"
    return "you hold what you are owed"


def _rank_words(r: dict, kin: list[dict]) -> str:
    """Its place by factor among its siblings (ties share a place and are named)."""
    mine = r["fairshare_factor"]
    others = [k for k in kin if k["account"] != r["account"]]
    above = sum(1 for k in others if k["fairshare_factor"] > mine + EPS)
    tied = [k["account"] for k in others if abs(k["fairshare_factor"] - mine) <= EPS]
    words = f"by factor {_ordinal(above + 1)} of {len(kin)} under {r['parent']}"
    return words + (f", level with {', '.join(tied)}" if tied else "")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
