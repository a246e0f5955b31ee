"""Errors raised by the policy core. Messages are one line, fit for a CLI."""


class QuotaError(ValueError):
    """An account tree, capacity or request that breaks a rule of the policy."""
