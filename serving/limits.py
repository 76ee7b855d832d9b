"""The checks every HTTP request and websocket passes before any route: the API key and the body size.

A plain ASGI middleware, so that an oversized upload is refused before it is read into memory and a missing key
is refused before the body is parsed; both answer in OpenAI's error shape.
"""

from __future__ import annotations

import hmac
import json

from .protocol import APIError, ServerConfig

OPEN_PATHS = ("/health",)  # a load balancer's probe needs no key


def key_problem(headers: dict[str, str], config: ServerConfig, query_key: str | None = None) -> APIError | None:
    """None when the request may pass; else the 401 to send. Takes `Authorization: Bearer <key>` (or, for
    websockets from browsers, which cannot set headers, the `openai-insecure-api-key.<key>` subprotocol)."""
    if not config.api_key:
        return None
    given = None
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    for protocol in headers.get("sec-websocket-protocol", "").split(","):
        if protocol.strip().startswith("openai-insecure-api-key."):
            given = protocol.strip()[len("openai-insecure-api-key."):]
    given = given or query_key
    if given is None:
        return APIError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key",
                        type="authentication_error")
    if not hmac.compare_digest(given.encode(), config.api_key.encode()):
        return APIError(401, "Incorrect API key provided.", code="invalid_api_key", type="authentication_error")
    return None


class ApiKeyAndBodyLimit:
    def __init__(self, app, config: ServerConfig):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if scope["path"] not in OPEN_PATHS:
            problem = key_problem(headers, self.config)
            if problem is not None:
                if scope["type"] == "websocket":  # refuse the handshake: the client sees HTTP 403
                    return await send({"type": "websocket.close", "code": 1008, "reason": problem.message})
                return await _send_error(send, problem)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        limit = self.config.max_body_bytes
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                return await _send_error(send, _too_large(limit))
            return await self.app(scope, receive, send)
        # No length given (chunked upload): read it here, within the limit, then hand it on.
        messages, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            size += len(message.get("body", b""))
            if size > limit:
                return await _send_error(send, _too_large(limit))
            messages.append(message)
            if not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than this server's limit of {limit} bytes.",
                    code="request_too_large")


async def _send_error(send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["OPEN_PATHS", "ApiKeyAndBodyLimit", "key_problem"]
