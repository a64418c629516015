"""Admin authentication of the HTTP API: a bearer token (RFC 6750 §2.1) compared in constant time, with a simple
per-client limit on wrong tokens.

- no ``Authorization`` header, another scheme, or a bare ``Bearer``: 401 with ``WWW-Authenticate: Bearer ...``;
- a well-formed bearer token that is wrong: 403 (counted against the client);
- more than ``max_failures`` wrong tokens from one client within ``window`` seconds: 429 with ``Retry-After`` for
  every admin request of that client until the window has passed (the right token too, so guessing stays slow);
- no token configured (``$LLMCF_ADMIN_TOKEN`` unset): 503, admin requests are disabled.

Hyper-parameters (``ServeConfig``): ``admin_max_failures`` = 5, ``admin_failure_window`` = 60 s.
"""
from __future__ import annotations

import hmac
import re
import threading
import time
from collections import deque

from fastapi import HTTPException

REALM = "llmcf"
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII, no spaces (RFC 6750's token68 is a subset)


def _challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    return {"WWW-Authenticate": "Bearer " + ", ".join(parts)}


class AdminAuth:
    """Checks ``Authorization`` headers against one token; ``check`` raises the HTTPException to send."""

    def __init__(self, token: str | None, env_name: str, max_failures: int = 5, window: float = 60.0):
        self.token = token or None
        self.env_name = env_name
        self.max_failures, self.window = int(max_failures), float(window)
        self._failures: dict[str, deque] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def _recent(self, client: str, now: float) -> deque:
        q = self._failures.setdefault(client, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            self._failures.pop(client, None)
        return q

    def check(self, authorization: str | None, client: str) -> None:
        """Return when ``authorization`` carries the right token; raise 503 / 401 / 403 / 429 otherwise."""
        if not self.enabled:
            raise HTTPException(503, f"admin requests are disabled: start the server with {self.env_name} set in "
                                     "its environment (or use serve.watch_seconds to reload on file changes)")
        now = time.monotonic()
        with self._lock:
            q = self._recent(client, now)
            if len(q) >= self.max_failures:
                wait = max(1, int(q[0] + self.window - now + 0.999))
                raise HTTPException(429, f"too many wrong admin tokens from this client: {len(q)} within "
                                         f"{self.window:g} s; retry after {wait} s", headers={"Retry-After": str(wait)})
        if authorization is None or not authorization.strip():
            raise HTTPException(401, "missing admin token: send the header 'Authorization: Bearer <token>'",
                                headers=_challenge())
        scheme, _, given = authorization.strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given or not _TOKEN.match(given):
            raise HTTPException(401, "malformed Authorization header: expected 'Bearer <token>'",
                                headers=_challenge("invalid_request", "expected Bearer <token>"))
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            with self._lock:
                self._failures.setdefault(client, deque()).append(now)
            raise HTTPException(403, "wrong admin token", headers=_challenge("invalid_token"))
