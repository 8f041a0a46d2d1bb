"""Limits on requests: body size while it streams in, concurrent uploads, tokens in URLs.

Body size: a declared Content-Length over the limit is refused at once; a body without one
(chunked) is counted as it arrives and cut off at the limit, so a huge upload never reaches the
multipart parser or the disk.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLargeError(Exception):
    """Raised inside receive() when the streamed body passes the limit."""


def _too_large(limit: int) -> bytes:
    return json.dumps(
        {
            "error": "payload_too_large",
            "message": f"request body exceeds the limit of {limit} bytes",
        }
    ).encode()


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = _too_large(self.max_bytes)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class ConcurrencySlots:
    """At most `size` holders at once; try_acquire never waits (the caller answers 503)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    def try_acquire(self) -> bool:
        with self._lock:
            if self._in_use >= self.size:
                return False
            self._in_use += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._in_use = max(0, self._in_use - 1)


# Query parameters that would carry a credential: refused, and never logged in clear.
TOKEN_QUERY_NAMES = frozenset(
    {"token", "api_token", "apitoken", "access_token", "api_key", "apikey", "x-api-token", "auth"}
)
REDACTED = "REDACTED"


class QueryTokenGuard:
    """Refuse (400) any request with a token in its query string, before anything else runs.

    Query strings end up in access logs, proxy logs and browser history. The value is replaced
    in the request's scope before the answer, so the server's access log shows REDACTED.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        raw = bytes(scope["query_string"]).decode("latin-1")
        pairs = parse_qsl(raw, keep_blank_values=True)
        found = sorted({k for k, _ in pairs if k.strip().lower() in TOKEN_QUERY_NAMES})
        if not found:
            await self.app(scope, receive, send)
            return
        redacted = [(k, REDACTED if k in found else v) for k, v in pairs]
        scope["query_string"] = urlencode(redacted).encode("latin-1")
        body = json.dumps(
            {
                "error": "bad_request",
                "message": f"a token in the URL ({', '.join(found)}) is refused: send it in a "
                "header ('Authorization: Bearer <token>' or 'X-API-Token: <token>'); "
                "treat a token that was sent in a URL as leaked and re-issue it",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
