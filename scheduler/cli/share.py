"""`fairgpu share`: every account's shares, usage, fair-share factor and entitlement (like sshare).

Two sources, one report: with a server named (``--url``, ``FAIRGPU_URL`` or
``fairgpu login``) it asks the API, which limits an institution to its own
subtree. ``--url`` always means the API; otherwise ``--db`` / ``FAIRGPU_DB`` wins over
``FAIRGPU_URL`` and the login file, and with neither it reads the default database
(the admin's view).
"""
from __future__ import annotations

import click

from scheduler.cli.common import db_option, db_session, domain_errors, emit, json_option

COLUMNS = ["account", "weight", "norm_shares", "raw_usage", "effective_usage", "fairshare_factor",
           "guaranteed_slices", "max_slices", "entitled_slices", "allocated_slices", "pending_jobs"]
EXPLAIN_COLUMNS = ["account", "owed_slices", "got_slices", "fairshare_factor", "usage_to_share", "cause"]


@click.command()
@click.option("--account", "under", default=None, metavar="NAME", help="Only this account and its sub-accounts.")
@click.option("--explain", is_flag=True,
              help="Why each account stands where it does: owed, got, factor and the cause, in words.")
@json_option
@db_option
@click.option("--url", "url", default=None, metavar="URL", help="Ask this fairgpu server (your own subtree).")
@domain_errors
def share(under, explain, as_json, db_url, url):
    """Show fair shares: what each account is owed and what it holds."""
    from scheduler.cli.client import Api, api_configured

    if url or (not db_url and api_configured()):
        rows = Api.from_settings(url).call("GET", "/v1/share/explain" if explain else "/v1/share",
                                           params={"account": under} if under else None)
    else:
        from scheduler.services.share import explain_rows, share_rows
        from scheduler.store import utcnow

        with db_session(db_url) as session:
            rows = (explain_rows if explain else share_rows)(session, utcnow(), under=under)
    emit(rows, as_json, EXPLAIN_COLUMNS if explain else COLUMNS)
