"""Request body size limit as ASGI middleware: a body over the limit is answered 413 with a JSON
error before the application reads any of it (a declared Content-Length over the limit is
refused at once; a chunked body is counted as it arrives)."""
from __future__ import annotations

import json


class BodySizeLimit:
    def __init__(self, app, max_bytes: int, on_refuse=None):
        """`on_refuse()` is called for each refused request (metrics)."""
        self.app, self.max_bytes, self.on_refuse = app, max_bytes, on_refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        chunks, size = [], 0
        while True:  # the body is bounded, so holding it is fine; the app then reads it from memory
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._refuse(send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        payload = json.dumps({"error": f"request body over {self.max_bytes} bytes"}).encode()
        if self.on_refuse is not None:
            self.on_refuse()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
