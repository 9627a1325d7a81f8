"""The file routes' guard: an ASGI middleware in front of Gradio's app (`ui.launch_options`).

Gradio serves any file under `allowed_paths` at `/gradio_api/file=<path>` (and at the older
`/gradio_api/file/<path>`). The app allows its asset folder and its kept uploads, but only the
files of documents still in the library may be served: a request for a file under the data folder
that `serves(path)` does not vouch for (a deleted document's original or page image, the index,
any other file there) is answered 404 Not Found before Gradio sees it, and so is a file that is
not there at all (Gradio says 403). Files elsewhere (Gradio's own upload and cache folders) are
left to Gradio's checks.

The path is resolved the way Gradio does (relative to the working directory, `..` and symlinks
followed), so no spelling of a path reaches a file under the data folder unchecked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .ui_guard import Message, Receive, Scope, Send

FILE_ROUTE = re.compile(r"/gradio_api/file(?:=|/)(.*)$", re.DOTALL)
NOT_FOUND = b'{"detail":"Not Found"}'


def requested_file(url_path: str) -> str | None:
    """The file a request path asks Gradio's file route for (as written), or None for other routes
    and for URLs (Gradio fetches those itself)."""
    match = FILE_ROUTE.search(url_path)
    if match is None or re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", match.group(1)):
        return None
    return match.group(1)


def under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


class FileGuard:
    """ASGI middleware: see the module's docstring. `serves(path)` may block (it runs in a thread)."""

    def __init__(self, app: Callable, roots: Iterable[str | Path], serves: Callable[..., bool],
                 by_login: bool = False) -> None:
        self.app = app
        #: `serves(path, requester)`: who asks too (`Requester`: the login as Gradio reads it, cookies).
        self.by_login = by_login
        # Both spellings of each root: as given (made absolute) and with its symlinks resolved.
        self.roots = sorted({Path(os.path.abspath(root)) for root in roots}
                            | {Path(os.path.realpath(root)) for root in roots})
        self.serves = serves

    def guarded(self, wanted: str) -> Path | None:
        """The resolved path if `wanted` points under one of the roots (literally or once resolved)."""
        literal, resolved = Path(os.path.abspath(wanted)), Path(os.path.realpath(wanted))
        return resolved if under(literal, self.roots) or under(resolved, self.roots) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wanted = requested_file(scope.get("path", "")) if scope.get("type") == "http" else None
        path = self.guarded(wanted) if wanted is not None else None
        missing = wanted is not None and not os.path.exists(wanted)  # e.g. a deleted upload's (Gradio: 403)
        if missing or (path is not None and not await self._serves(path, scope)):
            await self._not_found(send, head=scope.get("method") == "HEAD")
            return
        await self.app(scope, receive, send)

    async def _serves(self, path: Path, scope: Scope) -> bool:
        import anyio.to_thread

        try:
            if self.by_login:
                return bool(await anyio.to_thread.run_sync(self.serves, path, Requester.of(scope)))
            return bool(await anyio.to_thread.run_sync(self.serves, path))
        except Exception:  # noqa: BLE001 - cannot tell (e.g. the Chroma server is down): serve nothing
            return False

    @staticmethod
    async def _not_found(send: Send, head: bool = False) -> None:
        start: Message = {"type": "http.response.start", "status": 404,
                          "headers": [(b"content-type", b"application/json"),
                                      (b"content-length", str(len(NOT_FOUND)).encode())]}
        await send(start)
        await send({"type": "http.response.body", "body": b"" if head else NOT_FOUND})


def parse_cookies(header: str | None) -> dict[str, str]:
    """name -> value of a Cookie header ({} when absent or malformed)."""
    from http.cookies import CookieError, SimpleCookie

    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(header or "")
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in cookies.items()}


def scope_cookies(scope: Scope) -> dict[str, str]:
    """The cookies of an ASGI request."""
    header = b"; ".join(value for name, value in scope.get("headers") or () if name == b"cookie")
    return parse_cookies(header.decode("latin-1"))


class Requester:
    """Who asks for a file: the login (as Gradio finds it, gradio/routes.py get_current_user: the
    access-token cookie looked up in the app's tokens; None when not signed in) and the cookies."""

    def __init__(self, login: str | None, cookies: dict[str, str]) -> None:
        self.login, self.cookies = login, cookies

    @classmethod
    def of(cls, scope: Scope) -> "Requester":
        cookies = scope_cookies(scope)
        app = scope.get("app")
        tokens, cookie_id = getattr(app, "tokens", None) or {}, getattr(app, "cookie_id", None)
        login = next((tokens[cookies[name]] for name in (f"access-token-{cookie_id}",
                                                           f"access-token-unsecure-{cookie_id}")
                      if cookies.get(name) in tokens), None)
        return cls(login, cookies)


DEMO_COOKIE = "freeret-demo"


class DemoCookie:
    """ASGI middleware of the demo: a browser without the `freeret-demo` cookie gets one (random).
    A demo session remembers the cookie of its first request, and its files are then served only to
    requests with that cookie (ui_users.Users.serves); clients without cookies keep the plain URLs."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or DEMO_COOKIE in scope_cookies(scope):
            await self.app(scope, receive, send)
            return
        import secrets

        cookie = f"{DEMO_COOKIE}={secrets.token_urlsafe(24)}; Path=/; HttpOnly; SameSite=Lax".encode()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, sending)


def demo_cookie() -> Any:
    """The demo's cookie as a Starlette middleware entry."""
    from starlette.middleware import Middleware

    return Middleware(DemoCookie)


def file_guard(roots: Iterable[str | Path], serves: Callable[..., bool], by_login: bool = False) -> Any:
    """The guard as a Starlette middleware entry (`by_login`: `serves(path, requester)`)."""
    from starlette.middleware import Middleware

    return Middleware(FileGuard, roots=list(roots), serves=serves, by_login=by_login)
