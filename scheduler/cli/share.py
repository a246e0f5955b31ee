"""`fairgpu share`: every account's shares, usage, fair-share factor and entitlement (like sshare)."""
from __future__ import annotations

from datetime import datetime, timezone

import click

from scheduler.cli.common import db_option, domain_errors, emit, json_option, open_engine

COLUMNS = ["account", "weight", "norm_shares", "raw_usage", "effective_usage", "fairshare_factor",
           "guaranteed_slices", "max_slices", "entitled_slices", "allocated_slices", "pending_jobs"]


@click.command()
@click.option("--account", "under", default=None, metavar="NAME", help="Only this account and its sub-accounts.")
@json_option
@db_option
@domain_errors
def share(under, as_json, db_url):
    """Show fair shares: what each account is owed and what it holds."""
    from scheduler.services.share import share_rows
    from scheduler.store import session_scope

    with session_scope(open_engine(db_url)) as session:
        rows = share_rows(session, datetime.now(timezone.utc), under=under)
    emit(rows, as_json, COLUMNS)
