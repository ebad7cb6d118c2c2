"""Request-size limit of the HTTP ingress (ASGI middleware, applied before any parsing)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from serve.schemas import error_body

DEFAULT_MAX_BODY_BYTES = 1_000_000  # until the ingress sets the configured limit


class BodySizeLimit:
    """ASGI middleware: a body above `app.state.max_body_bytes` gets 413 before any parsing."""

    def __init__(self, asgi_app):
        self.asgi_app = asgi_app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.asgi_app(scope, receive, send)
        limit = getattr(getattr(scope.get("app"), "state", None), "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _too_large(scope, receive, send, limit)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                return await _too_large(scope, receive, send, limit)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.asgi_app(scope, replay, send)


async def _too_large(scope, receive, send, limit: int) -> None:
    response = JSONResponse(error_body("body", f"request body is larger than {limit} bytes"), status_code=413)
    await response(scope, receive, send)
