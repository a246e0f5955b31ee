"""Services: the scheduler's logic over the store, shared by the CLI, the API and the loop.

Each function takes the session (and the clock, where time matters) as arguments,
validates everything before it writes (names, numbers and durations through
`validate`, against the ranges of `quota.limits`), and raises a domain error with a
one-line message; `errors.ERRORS` maps each to its HTTP status and exit code. The
caller owns the transaction (`session_scope`).
"""
