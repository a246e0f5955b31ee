"""Services: the scheduler's logic over the store, shared by the CLI, the API and the loop.

Each function takes the session (and the clock, where time matters) as arguments,
validates everything before it writes, and raises DomainError (or quota.QuotaError)
with a one-line message. The caller owns the transaction (`session_scope`).
"""
