"""API keys: bearer-token authentication of every route but /healthz.

Keys come from `serve.api_keys` and, comma-separated, from the environment variable
KNOWLEDGE_LAB_API_KEYS (read where the application is built). Replicas get only the keys'
SHA-256 digests, never the keys; a presented token is hashed and compared with every digest in
constant time (`hmac.compare_digest`), so neither the comparison nor an early exit tells how much
of a key matched. No key: authentication is off, which is the default on 127.0.0.1; binding any
other address without a key logs a loud warning.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os

from fastapi.responses import JSONResponse

ENV_VAR = "KNOWLEDGE_LAB_API_KEYS"
OPEN_PATHS = frozenset({"/healthz"})
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

log = logging.getLogger(__name__)


def configured_keys(config_keys: list[str], environ: dict | None = None) -> list[str]:
    """The accepted keys: the config's, then the environment variable's (blanks dropped)."""
    env = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return [k for k in [*config_keys, *(part.strip() for part in env.split(","))] if k and k.strip()]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def warn_if_exposed(host: str, keys: list[str]) -> None:
    """A loud warning when the server listens beyond this machine with no key."""
    if host not in LOOPBACK and not keys:
        log.warning("!!! serve.host is %s and no API key is set: ANYONE who can reach this address can use "
                    "every model of this run. Set serve.api_keys or %s. !!!", host, ENV_VAR)


def is_authorized(header: str | None, digests: tuple[str, ...]) -> bool:
    """Whether an Authorization header carries one of the keys (constant-time comparison)."""
    scheme, _, token = (header or "").partition(" ")
    presented = digest(token.strip()) if scheme.lower() == "bearer" and token.strip() else ""
    ok = False
    for d in digests:  # every digest is compared: the time does not depend on which one matched
        ok |= hmac.compare_digest(presented.encode(), d.encode())
    return ok


def unauthorized(header: str | None) -> JSONResponse:
    """OpenAI's 401 body; the message says whether the key was missing or wrong."""
    if not header:
        message = ("You didn't provide an API key. Send it in the Authorization header: "
                   "'Authorization: Bearer YOUR_KEY'.")
    else:
        message = "Incorrect API key provided in the Authorization header."
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    return JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})


class ApiKeyAuth:
    """ASGI middleware: a request without a valid key gets 401 before anything else runs.
    The digests are read from `app.state.api_key_digests` (empty: authentication off)."""

    def __init__(self, asgi_app):
        self.asgi_app = asgi_app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.asgi_app(scope, receive, send)
        digests = getattr(getattr(scope.get("app"), "state", None), "api_key_digests", ())
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if digests and path.removeprefix(root) not in OPEN_PATHS:
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1") or None
            if not is_authorized(header, digests):
                return await unauthorized(header)(scope, receive, send)
        return await self.asgi_app(scope, receive, send)
