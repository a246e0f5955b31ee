"""Whether this server takes script jobs at all: a sandbox must start where they run
(scheduler.runtime.sandbox), unless the admin accepted unsandboxed scripts
(`fairgpu up --unsandboxed-scripts`).

Invariants:
- The API is handed where the answer comes from (``create_app(sandbox_status=...)``, a
  callable returning a ``SandboxStatus``): the embedded server builds it from the sandbox
  probe, a test from whatever it needs. Nothing here probes anything.
- Refused, a script submission and a working-directory upload are a 409 with one line
  (``NoSandbox``), right after the token is checked: before anything is written and
  before a byte of an upload's body is read.
- This is the front door only: a task on a node where no sandbox starts still refuses
  to run a script unless its payload allows it (scheduler.runtime.tasks).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scheduler.services.errors import DomainError

FLAG = "--unsandboxed-scripts"


class NoSandbox(DomainError):
    """No sandbox can start where scripts would run, and unsandboxed scripts were not accepted (409)."""


@dataclass(frozen=True)
class SandboxStatus:
    available: bool  # a sandbox starts where script jobs run
    why: str = ""  # one line, when not available
    unsandboxed_allowed: bool = False  # the server runs with --unsandboxed-scripts

    def refusal(self) -> str | None:
        """The one-line 409 for a script job or an upload, or None when they are taken."""
        if self.available or self.unsandboxed_allowed:
            return None
        return (f"no sandbox can start on this server's nodes ({self.why or 'no reason given'}); "
                f"script jobs are refused unless the server runs with {FLAG}")


StatusSource = Callable[[], SandboxStatus]


def check_scripts(source: StatusSource | None) -> None:
    """Raise NoSandbox when script jobs are refused here (no source: they are not checked)."""
    if source is None:
        return
    why = source().refusal()
    if why is not None:
        raise NoSandbox(why)
