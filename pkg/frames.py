"""Frames of the control-socket protocol: a 4-byte big-endian length, then that many body bytes.

The byte layer under :mod:`gputuned.protocol` (which re-exports these names): building a frame,
reading one from a blocking socket, and accumulating frames from non-blocking reads, each
refusing a length over its limit before reading the body. Standard library only.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

HEADER = struct.Struct(">I")
MAX_MESSAGE_BYTES = 65536


class ProtocolError(ValueError):
    """A frame or message that breaks protocol v1; the text names the offending field."""


class FrameTooLarge(ProtocolError):
    """A frame header announcing more than the allowed body size (the body is never read)."""


def frame(body: bytes) -> bytes:
    """The frame carrying ``body``: its length, then the body."""
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Accumulates bytes from non-blocking reads and yields complete frame bodies."""

    __slots__ = ("max_bytes", "_buf", "partial_since")

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self.partial_since: float | None = None  # when the first byte of an unfinished frame came

    def feed(self, data: bytes, now: float) -> Iterator[bytes]:
        """Add ``data``; yield each complete body. Raises FrameTooLarge on a long header."""
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= HEADER.size:
            (length,) = HEADER.unpack_from(buf, pos)
            if length > self.max_bytes:
                raise FrameTooLarge(f"frame length {length} exceeds {self.max_bytes}")
            if n - pos - HEADER.size < length:
                break
            yield bytes(buf[pos + HEADER.size : pos + HEADER.size + length])
            pos += HEADER.size + length
        if pos:
            del buf[:pos]
        if buf:
            if pos or self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("peer closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_body(sock: socket.socket, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Read one frame (blocking) and return its body; an oversized length raises unread."""
    (length,) = HEADER.unpack(_recv_exact(sock, HEADER.size))
    if length > max_bytes:
        raise FrameTooLarge(f"frame length {length} exceeds {max_bytes}")
    return _recv_exact(sock, length)
