"""The period report (``fairgpu report``): who used what over a period, and was it fair.

Computed from the database alone (job events and usage records, never Prometheus), over
the period ``[since, until)``; a period reaching past ``now`` ends at ``now``. Without a
``since``, the period starts at the later of 30 days before its end and the first record
(``default_since``), so a young server's figures cover its own life.

Per account (inner accounts: their whole subtree), keys exactly REPORT_KEYS:
- ``slice_hours``: the usage records stamped in the period (what chargeback bills: a
  job is charged from its task's own start, every 15 s, and imported history counts);
- ``held_slice_hours`` and ``owed_slice_hours``: the slices its jobs held (their
  attempts, admission to end, as ``services.history`` reads them from the job events),
  and its entitlement, integrated over the period by
  ``quota.period.integrate``; ``got_share`` and ``owed_share`` are both over the
  capacity's slice-hours; ``waiting_hours`` and ``starved_hours`` (waiting while
  holding under half its entitlement) come from there too;
- ``jobs_<state>``: jobs that ended in the period, by end state (``jobs_timeout``
  counts the timeouts); ``preemptions``: "preempted" events in the period;
- ``wait_p50_s``, ``wait_p95_s``: submission to first admission, for the jobs first
  admitted in the period (linear interpolation; None without such jobs).
The cluster figures are the whole pool's, whoever asks: Jain's index over the
institutions (held over owed), and utilisation (all slice_hours over capacity
slice-hours).

Approximations, stated: the nodes' and the account tree's history is not stored, so
the capacity and the tree (weights, guarantees, caps) are today's for the whole period.

A report only reads. Bad dates (not ``validate.parse_when``'s forms, or an end not
after the start) are ``Invalid`` (HTTP 422, exit 1). ``visible`` (a token's accounts; None: the admin) makes
an account outside it ``NotFound``, as for every other service.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from quota import AccountSpec, AccountTree
from quota.period import HELD, WAITING, Span, integrate
from scheduler.services import history, validate
from scheduler.services.accounts import load_tree
from scheduler.services.capacity import load_capacity
from scheduler.services.errors import Invalid, NotFound
from scheduler.store import Account, Job, JobState, UsageRecord
from scheduler.vocab import FINAL_STATES
from workloads.measure import percentile

DEFAULT_DAYS = 30
EPOCH = validate.EPOCH
MAX_BUCKETS = 500
END_STATES = FINAL_STATES
REPORT_KEYS = ("account", "parent", "slice_hours", "held_slice_hours", "owed_slice_hours", "got_share",
               "owed_share", "waiting_hours", "starved_hours", *(f"jobs_{s.value.lower()}" for s in END_STATES),
               "preemptions", "wait_p50_s", "wait_p95_s")


def period(since: str | None, until: str | None, now: datetime) -> tuple[datetime | None, datetime]:
    """[since, until) from the user's text: until defaults to now (and is at most now);
    since, when not given, is None: ``load`` takes ``default_since`` (it needs the records)."""
    end = min(validate.parse_when(until, "until"), now) if until else now
    if not since:
        return None, end
    start = validate.parse_when(since, "since")
    if not end > start:
        raise Invalid(f"the period must end after it starts (since {start.isoformat()}, until {end.isoformat()}"
                      + (", which is now)" if end == now else ")"))
    return start, end


def default_since(session: Session, until: datetime) -> datetime:
    """The later of DEFAULT_DAYS before ``until`` and the first record (the first usage
    charged or job submitted): a young server's report covers its own life, not 30 days
    of which most came before it (utilisation 0.0%). With no record before ``until``,
    DEFAULT_DAYS."""
    days = max(EPOCH, until - timedelta(days=DEFAULT_DAYS))
    conn = session.connection()
    firsts = [conn.execute(sa.select(sa.func.min(UsageRecord.at))).scalar(),
              conn.execute(sa.select(sa.func.min(Job.submitted_at))).scalar()]
    firsts = [_aware(t) for t in firsts if t is not None]
    first = min(firsts, default=None)
    return max(days, first) if first is not None and first < until else days


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def report(session: Session, *, since: datetime | None, until: datetime, under: str | None = None,
           visible: frozenset[str] | None = None, buckets: int = 0) -> dict:
    """The whole report: the period, the cluster figures, ``accounts`` (rows of
    REPORT_KEYS in tree order, ``under``'s subtree or all) and, with ``buckets``, the
    ``timeline`` of mean owed and held slices for those accounts."""
    return compute(load(session, since=since, until=until, under=under, visible=visible, buckets=buckets))


@dataclass(frozen=True)
class Loaded:
    """What ``compute`` needs, read in one transaction: plain data, no session."""

    since: datetime
    until: datetime
    under: str | None
    buckets: int
    tree: AccountTree
    capacity: int
    history: _Tally
    usage: dict[str, float]


def load(session: Session, *, since: datetime | None, until: datetime, under: str | None = None,
         visible: frozenset[str] | None = None, buckets: int = 0) -> Loaded:
    """The reads (checked first: bad input raises before anything is read); ``since``
    None: ``default_since``. The API runs ``compute`` off its event loop, since a busy
    month takes seconds."""
    if since is None:
        since = default_since(session, until)
    if not until > since:
        raise Invalid(f"the period must end after it starts (since {since.isoformat()}, until {until.isoformat()})")
    if not 0 <= buckets <= MAX_BUCKETS:
        raise Invalid(f"buckets must be 0 to {MAX_BUCKETS} (got {buckets})")
    if under is not None and visible is not None and under not in visible:
        raise NotFound(f"unknown account {under}")
    tree = load_tree(session)
    if under is not None and under not in tree:
        raise NotFound(f"unknown account {under}")
    names = dict(session.connection().execute(sa.select(Account.id, Account.name)).all())
    # the period ends at until (at most now): what still runs then is cut there
    records = history.read(session, now=until, since=since, until=until)
    return Loaded(since, until, under, buckets, tree, load_capacity(session).total_slices,
                  _Tally.of(records, since, until), _usage(session, names, since, until))


def compute(loaded: Loaded) -> dict:
    """The report from what ``load`` read (pure CPU work: quota.period.integrate)."""
    since, until, under, tree, tally, usage = (loaded.since, loaded.until, loaded.under, loaded.tree,
                                                 loaded.history, loaded.usage)
    leafy, spans = _own_leaves(tree, tally.spans)
    result = integrate(leafy, loaded.capacity, spans, since.timestamp(), until.timestamp(), buckets=loaded.buckets)
    keep = tree.subtree(under) if under is not None else list(tree.order)
    keep_set = set(keep)
    cap_sh = result.capacity_slice_s / 3600
    rows = []
    for n in tree.order:
        if n not in keep_set:
            continue
        sub = tree.subtree(n)
        f = result.accounts[n]
        waits = [w for a in sub for w in tally.waits.get(a, ())]
        row = {"account": n, "parent": tree.accounts[n].parent,
               "slice_hours": sum(usage.get(a, 0.0) for a in sub) / 3600,
               "held_slice_hours": f.held_slice_s / 3600, "owed_slice_hours": f.owed_slice_s / 3600,
               "got_share": f.held_slice_s / 3600 / cap_sh if cap_sh else None,
               "owed_share": f.owed_slice_s / 3600 / cap_sh if cap_sh else None,
               "waiting_hours": f.waiting_s / 3600, "starved_hours": f.starved_s / 3600}
        for state in END_STATES:
            row[f"jobs_{state.value.lower()}"] = sum(tally.ended.get((a, state), 0) for a in sub)
        row["preemptions"] = sum(tally.preemptions.get(a, 0) for a in sub)
        row["wait_p50_s"], row["wait_p95_s"] = percentile(waits, 50), percentile(waits, 95)
        rows.append(row)
    used = sum(usage.values()) / 3600
    iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat()
    return {
        "since": since.isoformat(), "until": until.isoformat(), "capacity_slices": loaded.capacity,
        "capacity_slice_hours": cap_sh, "slice_hours": used, "utilisation": used / cap_sh if cap_sh else None,
        "jain_index": result.jain_index, "accounts": rows,
        "timeline": [{"start": iso(b.start), "end": iso(b.end),
                      "owed": {a: v for a, v in b.owed.items() if a in keep_set},
                      "held": {a: v for a, v in b.held.items() if a in keep_set}} for b in result.timeline],
    }


OWN = "(own jobs)"


def _own_leaves(tree: AccountTree, spans: list[Span]) -> tuple[AccountTree, list[Span]]:
    """quota.period integrates leaves' spans. An account that ran jobs and gained
    sub-accounts later (services.accounts) keeps them: its spans go to a leaf of its own
    under it, `<name>/(own jobs)`, so its subtree's figures include them (the row of that
    leaf is not shown)."""
    inner = {s.account for s in spans if s.account in tree.accounts and not tree.is_leaf(s.account)}
    if not inner:
        return tree, spans
    extra = [AccountSpec(f"{a}/{OWN}", 1.0, a) for a in sorted(inner)]
    moved = [replace(s, account=f"{s.account}/{OWN}") if s.account in inner else s for s in spans]
    return AccountTree.build([*tree.accounts.values(), *extra]), moved


@dataclass
class _Tally:
    """The window's job records (services.history) as quota spans, waits, end states and
    preemptions (per leaf account name)."""

    spans: list[Span] = field(default_factory=list)
    waits: dict[str, list[float]] = field(default_factory=dict)
    ended: dict[tuple[str, JobState], int] = field(default_factory=dict)
    preemptions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, records, since: datetime, until: datetime) -> _Tally:
        out = cls()
        for r in records:
            name = r.account
            for start, end in r.waiting(until):
                out.spans.append(Span(name, start.timestamp(), end.timestamp(), r.slices, WAITING))
            for a in r.attempts:
                if a.end > a.start:
                    out.spans.append(Span(name, a.start.timestamp(), a.end.timestamp(), r.slices, HELD))
                if a.how == "preempted" and since <= a.end < until:
                    out.preemptions[name] = out.preemptions.get(name, 0) + 1
            if r.attempts and since <= r.attempts[0].start < until:
                out.waits.setdefault(name, []).append(r.attempts[0].start.timestamp() - r.submitted_at.timestamp())
            if r.finished_at is not None and since <= r.finished_at < until and r.state in END_STATES:
                out.ended[(name, r.state)] = out.ended.get((name, r.state), 0) + 1
        return out


def _usage(session: Session, names: dict[int, str], since: datetime, until: datetime) -> dict[str, float]:
    """Own slice-seconds per account name, from the usage records stamped in [since, until)."""
    rows = session.connection().execute(
        sa.select(UsageRecord.account_id, sa.func.sum(UsageRecord.slice_seconds))
        .where(UsageRecord.at >= since, UsageRecord.at < until).group_by(UsageRecord.account_id)
    ).all()
    return {names[a]: float(s) for a, s in rows if a in names}
