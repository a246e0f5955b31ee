"""`fairgpu admin token`: issue, revoke and list API tokens, straight on the database (--db).

The raw token is printed once, to stdout, when it is issued; only its hash is kept.
``--scrape`` issues a token that reads every series of /metrics and nothing else (for
Prometheus: ``fairgpu admin token issue --scrape > scrape.token``, docs/metrics.md).
"""
from __future__ import annotations

import click

from scheduler.cli.common import (
    db_option,
    db_session,
    domain_errors,
    emit,
    info,
    json_option,
)


@click.group()
def token() -> None:
    """API tokens: one per account (an institution's covers its sub-accounts), or admin."""


@token.command("issue")
@click.argument("account", required=False)
@click.option("--expires", default=None, metavar="DURATION",
              help="e.g. 30d, 12h, 90m (1m to 3650d; default: never).")
@click.option("--name", default=None, metavar="NAME", help="A label for listings (default: the account).")
@click.option("--admin", "as_admin", is_flag=True, help="Issue an admin token instead (no ACCOUNT).")
@click.option("--scrape", "as_scrape", is_flag=True,
              help="Issue a token for /metrics only, with every account's series (no ACCOUNT).")
@db_option
@domain_errors
def issue(account, expires, name, as_admin, as_scrape, db_url):
    """Issue a token for ACCOUNT (or --admin, or --scrape) and print it (it is shown only this once)."""
    if (account is not None) + as_admin + as_scrape != 1:
        raise click.UsageError("give exactly one of ACCOUNT, --admin or --scrape")
    from quota.limits import TOKEN_LIFETIME
    from scheduler.cli.formatting import when
    from scheduler.services.auth import FULL, SCRAPE, issue_token, token_row
    from scheduler.services.validate import parse_duration
    from scheduler.store import utcnow

    expires_s = parse_duration(expires, TOKEN_LIFETIME) if expires is not None else None
    with db_session(db_url) as session:
        raw = issue_token(session, account=account, name=name or "", expires_s=expires_s, at=utcnow(),
                          scope=SCRAPE if as_scrape else FULL)
        row = token_row(session, raw)
    click.echo(raw)
    who = "admin" if as_admin else "scraping /metrics" if as_scrape else f"account {account}"
    until = f", expires {when(row.expires_at)}" if row.expires_at else ""
    info(f"token {row.id} ({row.prefix}...) for {who}{until}; it is shown only now, keep it secret")


@token.command("revoke")
@click.argument("token_id")
@db_option
@domain_errors
def revoke(token_id, db_url):
    """Revoke a token by its ID or the prefix shown by `token list`."""
    from scheduler.services.auth import revoke_token
    from scheduler.store import utcnow

    with db_session(db_url) as session:
        row = revoke_token(session, token_id, utcnow())
    info(f"revoked token {row.id} ({row.prefix}...)")


@token.command("list")
@json_option
@db_option
@domain_errors
def list_(as_json, db_url):
    """List tokens (never the tokens themselves: id, prefix, account, state, dates)."""
    from scheduler.services.auth import list_tokens
    from scheduler.store import utcnow

    with db_session(db_url) as session:
        rows = list_tokens(session, utcnow())
    emit(rows, as_json, ["id", "prefix", "name", "account", "scope", "state", "created_at", "expires_at",
                         "last_used_at"])
