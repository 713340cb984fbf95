"""Control-socket protocol v1 (docs/protocol.md): framing and message checks, torch-free."""

from __future__ import annotations

import json
import math
import re
import socket
import struct
from typing import Any

VERSION = 1
MAX_MESSAGE_BYTES = 65536
HEADER = struct.Struct(">I")
MESSAGE_TYPES = ("hello", "welcome", "report", "decision", "ack", "profile_result", "error")
JOB_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
STAT_KEYS = (
    "step_time_s", "compute_time_s", "comm_time_s", "data_wait_s", "samples_per_s", "loss",
    "loss_scale", "overflows_total", "grad_norm", "grad_noise_scale", "batch_size",
    "micro_batch_size", "accumulation_steps", "goodput", "samples_total", "comm_bytes_total",
    "comm_bytes_uncompressed_total", "oom_total",
)


class ProtocolError(ValueError):
    """A frame or message that breaks protocol v1; the text names the offending field."""


def encode(message: dict[str, Any], max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Return one frame: 4-byte big-endian length then UTF-8 JSON."""
    body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    if len(body) > max_bytes:
        raise ProtocolError(f"message of {len(body)} bytes exceeds {max_bytes}")
    return HEADER.pack(len(body)) + body


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
        raise ConnectionError(f"frame length {length} exceeds {max_bytes}")
    return _recv_exact(sock, length)


def read_frame(sock: socket.socket, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Read one frame (blocking) and return its decoded, envelope-checked object."""
    return decode(read_body(sock, max_bytes))


def decode(body: bytes) -> dict[str, Any]:
    """Decode a frame body and check the envelope keys v, type and seq."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"body: not UTF-8 JSON ({e})") from e
    if not isinstance(obj, dict):
        raise ProtocolError("body: not a JSON object")
    if obj.get("v") != VERSION or isinstance(obj.get("v"), bool):
        raise ProtocolError(f"v: expected {VERSION}, got {obj.get('v')!r}")
    if obj.get("type") not in MESSAGE_TYPES:
        raise ProtocolError(f"type: unknown {obj.get('type')!r}")
    _int_field(obj, "seq", minimum=0)
    return obj


def _int_field(obj: dict[str, Any], key: str, minimum: int | None = None) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{obj.get('type')}.{key}: not an integer ({value!r})")
    if minimum is not None and value < minimum:
        raise ProtocolError(f"{obj.get('type')}.{key}: {value} below {minimum}")
    return value


def check_decision(obj: dict[str, Any]) -> dict[str, Any]:
    """Validate a decision; return {'id', 'batch_size'|'profile_steps'} or raise ProtocolError."""
    if obj.get("type") != "decision":
        raise ProtocolError(f"type: expected decision, got {obj.get('type')!r}")
    ident = obj.get("id")
    if not isinstance(ident, str) or not 1 <= len(ident) <= 128:
        raise ProtocolError(f"decision.id: not a string of 1-128 chars ({ident!r})")
    out: dict[str, Any] = {"id": ident}
    kinds = [k for k in ("batch_size", "profile_steps") if k in obj]
    if len(kinds) != 1:
        raise ProtocolError("decision: needs exactly one of batch_size, profile_steps")
    out[kinds[0]] = _int_field(obj, kinds[0], minimum=1)
    return out


def check_hello(obj: dict[str, Any]) -> None:
    """Raise ProtocolError when a hello lacks or mistypes a required key."""
    job = obj.get("job")
    if not isinstance(job, str) or not JOB_RE.match(job):
        raise ProtocolError(f"hello.job: must match {JOB_RE.pattern} ({job!r})")
    for key in ("rank", "local_rank", "world_size", "pid", "batch_size"):
        _int_field(obj, key, minimum=0)
    if not isinstance(obj.get("leader"), bool):
        raise ProtocolError("hello.leader: not a boolean")
    if obj.get("batch_mode") not in ("global", "micro"):
        raise ProtocolError(f"hello.batch_mode: expected global or micro ({obj.get('batch_mode')!r})")


def clean_stats(stats: dict[str, Any]) -> dict[str, float]:
    """Keep finite numeric stats (unknown keys pass through, as the protocol ignores them)."""
    out: dict[str, float] = {}
    for key, value in stats.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        out[key] = value
    return out
