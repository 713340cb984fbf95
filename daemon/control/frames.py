"""Control protocol v1, daemon side: incremental framing and checks of incoming messages.

Frames are a 4-byte big-endian length then that many bytes of UTF-8 JSON (docs/protocol.md).
The decoder takes whatever a non-blocking read returned and yields complete bodies; a
length above the limit is refused before a byte of the body is read. Checks raise
:class:`MessageError` with a one-line reason naming the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

# One definition of the wire format for both ends: the plugin's torch-free protocol module.
from gputuned.trainer_plugin.protocol import HEADER, JOB_RE, STAT_KEYS, VERSION

ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
CLIENT_TYPES = ("hello", "report", "ack", "profile_result", "error", "admin")
ADMIN_OPS = ("status", "set", "restore")


class MessageError(ValueError):
    """A message that breaks the protocol; the text names the offending field."""


class FrameTooLarge(MessageError):
    """A frame header announcing more than the allowed body size."""


class FrameDecoder:
    """Accumulates bytes and yields complete frame bodies."""

    __slots__ = ("max_bytes", "_buf", "partial_since")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self.partial_since: float | None = None  # when the first byte of an unfinished frame came

    def feed(self, data: bytes, now: float) -> Iterator[bytes]:
        """Add ``data``; yield each complete body. Raises FrameTooLarge on a long header."""
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (length,) = HEADER.unpack_from(buf, pos)
            if length > self.max_bytes:
                raise FrameTooLarge(f"frame length {length} exceeds {self.max_bytes}")
            if n - pos - 4 < length:
                break
            yield bytes(buf[pos + 4 : pos + 4 + length])
            pos += 4 + length
        if pos:
            del buf[:pos]
        if buf:
            if pos or self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)


def encode(message: dict[str, Any]) -> bytes:
    """One frame for ``message`` (the caller adds v and seq)."""
    body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    return HEADER.pack(len(body)) + body


def _reject_constant(name: str) -> Any:
    raise MessageError(f"body: {name} is not JSON")


def decode(body: bytes, expected_seq: int | None = None) -> dict[str, Any]:
    """Parse a body and check the envelope (v, type, seq)."""
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except MessageError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MessageError(f"body: not UTF-8 JSON ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise MessageError("body: not a JSON object")
    v = obj.get("v")
    if v != VERSION or isinstance(v, bool):
        raise MessageError(f"v: expected {VERSION}, got {_short(v)}")
    kind = obj.get("type")
    if kind not in CLIENT_TYPES:
        raise MessageError(f"type: unknown {_short(kind)}")
    seq = _int(obj, "seq", 0)
    if expected_seq is not None and seq != expected_seq:
        raise MessageError(f"{kind}.seq: expected {expected_seq}, got {seq}")
    return obj


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _int(obj: dict[str, Any], key: str, minimum: int | None = None, maximum: int = 2**62) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MessageError(f"{obj.get('type')}.{key}: not an integer ({_short(value)})")
    if minimum is not None and value < minimum:
        raise MessageError(f"{obj.get('type')}.{key}: {value} below {minimum}")
    if value > maximum:
        raise MessageError(f"{obj.get('type')}.{key}: {value} above {maximum}")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_hello(obj: dict[str, Any]) -> None:
    job = obj.get("job")
    if not isinstance(job, str) or not JOB_RE.match(job):
        raise MessageError(f"hello.job: must match {JOB_RE.pattern} ({_short(job)})")
    world = _int(obj, "world_size", 1, 1 << 20)
    rank = _int(obj, "rank", 0, 1 << 20)
    if rank >= world:
        raise MessageError(f"hello.rank: {rank} not below world_size {world}")
    for key in ("local_rank", "pid", "batch_size"):
        _int(obj, key, 0)
    if not isinstance(obj.get("leader"), bool):
        raise MessageError("hello.leader: not a boolean")
    if obj.get("batch_mode") not in ("global", "micro"):
        raise MessageError(f"hello.batch_mode: expected global or micro ({_short(obj.get('batch_mode'))})")


def check_report(obj: dict[str, Any]) -> dict[str, float]:
    """Validate a report; return its known stats as floats."""
    _int(obj, "step", 0)
    _int(obj, "steps", 0)
    if "time" in obj and not _number(obj["time"]):
        raise MessageError("report.time: not a number")
    stats = obj.get("stats")
    if not isinstance(stats, dict):
        raise MessageError("report.stats: not an object")
    out: dict[str, float] = {}
    for key in STAT_KEYS:
        if key in stats:
            value = stats[key]
            if not _number(value):
                raise MessageError(f"report.stats.{key}: not a number ({_short(value)})")
            out[key] = float(value)
    return out


def check_ack(obj: dict[str, Any]) -> tuple[str, bool]:
    ident = obj.get("id")
    if not isinstance(ident, str) or not ID_RE.match(ident):
        raise MessageError(f"ack.id: not a decision id ({_short(ident)})")
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        raise MessageError("ack.ok: not a boolean")
    if "applied_step" in obj:
        _int(obj, "applied_step", 0)
    if "error" in obj and not isinstance(obj["error"], str):
        raise MessageError("ack.error: not a string")
    return ident, ok


def check_profile_result(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ident = obj.get("id")
    if not isinstance(ident, str) or not ID_RE.match(ident):
        raise MessageError(f"profile_result.id: not a decision id ({_short(ident)})")
    summary = obj.get("summary")
    if not isinstance(summary, dict):
        raise MessageError("profile_result.summary: not an object")
    return ident, summary


def check_admin(obj: dict[str, Any]) -> str:
    op = obj.get("op")
    if op not in ADMIN_OPS:
        raise MessageError(f"admin.op: expected one of {', '.join(ADMIN_OPS)} ({_short(op)})")
    if op in ("set", "restore") and "gpu" in obj:
        _int(obj, "gpu", 0, 1 << 16)
    if op == "set":
        if not isinstance(obj.get("knob"), str):
            raise MessageError("admin.knob: not a string")
        value = obj.get("value")
        if not (isinstance(value, int) and not isinstance(value, bool)) and not (
            isinstance(value, list) and len(value) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
        ):
            raise MessageError("admin.value: not an integer or a pair of integers")
        if "gpu" not in obj:
            raise MessageError("admin.gpu: missing")
    return str(op)
