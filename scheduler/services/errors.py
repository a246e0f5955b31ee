"""Errors a user can act on. Each message is one line and names what was wrong."""


class DomainError(Exception):
    """A request the domain refuses: unknown account, bad number, refused removal..."""


class NotFound(DomainError):
    """The thing does not exist (or the caller may not see it: the API answers 404 alike)."""
