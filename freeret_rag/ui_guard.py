"""The login's guard: an ASGI middleware in front of Gradio's app (`ui.launch_options`).

- Failed sign-ins are slowed and then refused, per client address: every failed attempt is
  answered after `delay_s` (an async wait: other users are not held up), and after `max_failures`
  failures in a row that client gets 429 "Too many failed sign-ins" for `lockout_s` seconds,
  whatever it sends. A successful sign-in clears its count. Behind a reverse proxy every user
  shares the proxy's address (the forwarded header is not trusted: anyone can write it), so a
  lockout then applies to all of them.
- The login page does not describe the API: Gradio embeds the API description (endpoint names,
  parameters) in every page, also in the page that asks for the password, while
  /gradio_api/info answers 401. For a page that asks for a login, that description is emptied.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, Awaitable, Callable

MAX_FAILURES = 5  # failed sign-ins in a row before a client is locked out
DELAY_S = 1.0  # every failed sign-in is answered this much later
LOCKOUT_S = 60.0  # how long a client that failed MAX_FAILURES times is refused

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_LOGIN_PAGE = re.compile(rb'window\.gradio_config = \{"auth_required":\s*true')
_API_INFO = re.compile(rb"(<script>window\.gradio_api_info = ).*?(;</script>)", re.DOTALL)
NO_API_INFO = b'{"named_endpoints":{},"unnamed_endpoints":{}}'


def without_api_info(page: bytes) -> bytes:
    """A login page without the API description; any other page as it is."""
    if not _LOGIN_PAGE.search(page):
        return page
    return _API_INFO.sub(lambda match: match.group(1) + NO_API_INFO + match.group(2), page)


class LoginGuard:
    """ASGI middleware: see the module's docstring. Limits are read when the app is built."""

    def __init__(self, app: Callable, max_failures: int | None = None, delay_s: float | None = None,
                 lockout_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.max_failures = MAX_FAILURES if max_failures is None else max_failures
        self.delay_s = DELAY_S if delay_s is None else delay_s
        self.lockout_s = LOCKOUT_S if lockout_s is None else lockout_s
        self.clock = clock
        self.failures: dict[str, int] = {}  # client -> failed sign-ins in a row
        self.locked_until: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
        elif scope.get("method") == "POST" and scope.get("path", "").rstrip("/").endswith("/login"):
            await self._login(scope, receive, send)
        elif scope.get("method") == "GET":
            await self._page(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # -- sign-ins ----------------------------------------------------------------------------------
    def _client(self, scope: Scope) -> str:
        client = scope.get("client")
        return str(client[0]) if client else "?"

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self._client(scope)
        wait = self.locked_until.get(client, 0.0) - self.clock()
        if wait > 0:
            await self._refuse(send, wait)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 400:  # Gradio's "Incorrect credentials."
                    failures = self.failures[client] = self.failures.get(client, 0) + 1
                    if failures >= self.max_failures:
                        self.locked_until[client] = self.clock() + self.lockout_s
                        self.failures.pop(client, None)
                    await asyncio.sleep(self.delay_s)
                elif message["status"] < 400:
                    self.failures.pop(client, None)
            await send(message)

        await self.app(scope, receive, watch)

    async def _refuse(self, send: Send, wait: float) -> None:
        seconds = max(1, round(wait))
        body = json.dumps({"detail": f"Too many failed sign-ins from this address; try again in {seconds} s."}).encode()
        await send({"type": "http.response.start", "status": 429,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"retry-after", str(seconds).encode())]})
        await send({"type": "http.response.body", "body": body})

    # -- pages ---------------------------------------------------------------------------------------
    async def _page(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if headers.get(b"content-type", b"").startswith(b"text/html"):
                    start = message  # held back until the whole page is read
                    return
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = without_api_info(b"".join(chunks))
                headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, rewrite)
