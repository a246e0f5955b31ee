"""`fairgpu share`: every account's shares, usage, fair-share factor and entitlement (like sshare).

Two sources, one report: with a server named (``--url``, ``FAIRGPU_URL`` or
``fairgpu login``) it asks the API, which limits an institution to its own
subtree. ``--url`` always means the API; otherwise ``--db`` / ``FAIRGPU_DB`` wins over
``FAIRGPU_URL`` and the login file, and with neither it reads the default database
(the admin's view).
"""
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
@click.option("--url", "url", default=None, metavar="URL", help="Ask this fairgpu server (your own subtree).")
@domain_errors
def share(under, as_json, db_url, url):
    """Show fair shares: what each account is owed and what it holds."""
    from scheduler.cli.client import Api, api_configured

    if url or (not db_url and api_configured()):
        rows = Api.from_settings(url).call("GET", "/v1/share", params={"account": under} if under else None)
    else:
        from scheduler.services.share import share_rows
        from scheduler.store import session_scope

        with session_scope(open_engine(db_url)) as session:
            rows = share_rows(session, datetime.now(timezone.utc), under=under)
    emit(rows, as_json, COLUMNS)
