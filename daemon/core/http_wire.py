"""HTTP/1.1 on the wire for the front: request heads parsed (kept by their bytes, since a scraper sends
the same head every scrape) and responses formatted."""

from __future__ import annotations

import http
from typing import Any, NamedTuple


class Request(NamedTuple):
    """A parsed request head (the front serves no request bodies)."""

    method: str
    path: str
    version: str
    headers: dict[str, str]
    peer: str

    @property
    def keep_alive(self) -> bool:
        """Whether the client wants the connection kept after the response."""
        tokens = self.headers.get("connection", "").lower()
        return "keep-alive" in tokens if self.version == "HTTP/1.0" else "close" not in tokens


class Response(NamedTuple):
    """What a handler answers."""

    code: int
    body: bytes
    ctype: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


#: Parsed heads by their bytes: a scraper sends the same head every time (bounded, small heads only)
_HEADS: dict[bytes, tuple[str, str, str, dict[str, str]] | None] = {}
_HEADS_KEPT, _HEAD_KEPT_BYTES = 64, 1024
_PHRASES = {s.value: s.phrase for s in http.HTTPStatus}
_MISS: Any = object()


def parse_head(head: bytes, peer: str) -> Request | None:
    """The request in ``head`` (up to the blank line), or None when it is malformed or carries a body."""
    parsed = _HEADS.get(head, _MISS)  # one lookup: another front in this process may clear the dict between two
    if parsed is _MISS:
        parsed = _parse(head)
        if len(head) <= _HEAD_KEPT_BYTES:
            if len(_HEADS) >= _HEADS_KEPT:
                _HEADS.clear()
            _HEADS[head] = parsed
    if parsed is None:
        return None
    method, path, version, headers = parsed
    return Request(method, path, version, dict(headers), peer)


def _parse(head: bytes) -> tuple[str, str, str, dict[str, str]] | None:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            return None
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers or headers.get("content-length", "0").strip() not in ("", "0"):
        return None
    return parts[0], parts[1], parts[2], headers


def format_response(resp: Response, *, head_only: bool, keep_alive: bool) -> bytes:
    """The bytes of ``resp`` on the wire."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in resp.headers)
    head = (f"HTTP/1.1 {resp.code} {_PHRASES[resp.code]}\r\nContent-Type: {resp.ctype}\r\nContent-Length: {len(resp.body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n{extra}\r\n").encode("latin-1")
    return head if head_only else head + resp.body


def on_wire(req: Request, resp: Response) -> tuple[bytes, bool]:
    """``resp``'s bytes as the answer to ``req``, and whether the connection is kept after it."""
    keep = req.keep_alive and resp.code < 500
    return format_response(resp, head_only=req.method == "HEAD", keep_alive=keep), keep
