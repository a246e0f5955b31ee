"""A standby's API is read-only (scheduler.server, `fairgpu up --standby`).

`StandbyGuard` is ASGI middleware over the app: while `server.standing_by` is true, a
request that could write (any method but GET, HEAD, OPTIONS) is answered 503, with one
line (`server.standby_message()`, naming the leader) and `Retry-After`, before any route
or the database is reached; reads pass. Every answer carries `X-Fairgpu-Role` (`standby`
or `leader`), so a proxy can send writes to the leader. Standard library only.
"""
from __future__ import annotations

import json

READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class StandbyGuard:
    """ASGI middleware: while the server stands by (`Embedded.standing_by`), the API is
    read-only: a request that could write (POST, PUT, PATCH, DELETE) is answered 503 with
    one line naming the leader, and `Retry-After`. Every answer says the server's role in
    `X-Fairgpu-Role` (`standby` or `leader`)."""

    def __init__(self, app, server):
        self.app = app
        self.server = server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        role = b"standby" if self.server.standing_by else b"leader"
        if role == b"standby" and scope["method"] not in READ_ONLY_METHODS:
            body = json.dumps({"detail": self.server.standby_message()}).encode()
            ttl = str(max(1, int(self.server.lease_ttl_s))).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", ttl),
                                    (b"x-fairgpu-role", role), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return None

        async def send_role(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-fairgpu-role", role)]}
            await send(message)

        return await self.app(scope, receive, send_role)
