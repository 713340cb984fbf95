"""Control-socket protocol v1: every message kind and its checks, encoding, a blocking client.

The one definition of the wire format (docs/protocol.md) for every end: the daemon's control
server, the trainer plugin's client, ``gputuned status|set|restore`` and the test fake. A
frame is a 4-byte big-endian length then that many bytes of UTF-8 JSON encoding one object.
Decoding checks the whole message, so every receiver refuses the same input; each check
raises :class:`ProtocolError` with a one-line reason naming the field. Standard library
only: the trainer plugin imports it without the daemon.
"""

from __future__ import annotations

import json
import math
import re
import socket
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from gputuned.frames import (  # noqa: F401  (re-exported: the protocol is the one import of every end)
    HEADER,
    MAX_MESSAGE_BYTES,
    FrameDecoder,
    FrameTooLarge,
    ProtocolError,
    frame,
    read_body,
)

VERSION = 1
MAX_REPLY_BYTES = 16 << 20  # admin_reply only: the status of a large node
MAX_INT = 2**62  # JSON integers beyond +-MAX_INT are refused anywhere in a body
MAX_RANKS = 1 << 20
MAX_ERROR_CHARS = 500
#: the most entries of a report's ``rank_times`` (the job's slowest ranks and the sender's own)
MAX_RANK_TIMES = 256
MAX_RANK_SECONDS = 86400.0  # a step's compute or wait time beyond a day is refused
NAME_PATTERN = "[A-Za-z0-9._:-]{1,128}"  # job names and decision ids, matched whole
NAME_RE = re.compile(NAME_PATTERN)
STAT_KEYS = (
    "step_time_s", "compute_time_s", "comm_time_s", "data_wait_s", "samples_per_s", "loss",
    "loss_scale", "overflows_total", "grad_norm", "grad_noise_scale", "batch_size",
    "micro_batch_size", "accumulation_steps", "goodput", "samples_total", "comm_bytes_total",
    "comm_bytes_uncompressed_total", "oom_total",
)
ADMIN_OPS = ("status", "set", "restore", "release", "pause", "resume")
BATCH_MODES = ("global", "micro")
DECISION_KINDS = ("batch_size", "profile_steps")
#: the message types each receiver accepts
TO_DAEMON = ("hello", "report", "ack", "profile_result", "error", "admin")
TO_TRAINER = ("welcome", "decision", "error")
TO_ADMIN = ("admin_reply", "error")
MESSAGE_TYPES = (*TO_DAEMON, "welcome", "decision", "admin_reply")


# -- frames ----------------------------------------------------------------------------------


def size_limit(kind: Any) -> int:
    """The largest body a message of type ``kind`` may have."""
    return MAX_REPLY_BYTES if kind == "admin_reply" else MAX_MESSAGE_BYTES


def encode(message: dict[str, Any], max_bytes: int | None = None) -> bytes:
    """One frame of ``message`` as given (no field checks; see :func:`message`)."""
    try:
        body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ProtocolError(f"{message.get('type')}: cannot be encoded ({e})") from None
    limit = size_limit(message.get("type")) if max_bytes is None else max_bytes
    if len(body) > limit:
        raise FrameTooLarge(f"message of {len(body)} bytes exceeds {limit}")
    return frame(body)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"body: {name} is not JSON")


def _parse_int(text: str) -> int:
    # the length test first: int() of thousands of digits is slow, then refused anyway
    if len(text) > 20 or abs(value := int(text)) > MAX_INT:
        raise ProtocolError(f"body: integer {_short(text)} out of range (at most 2**62 in size)")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"body: number {_short(text)} is not finite")
    return value


def decode(body: bytes, kinds: Collection[str] = MESSAGE_TYPES) -> dict[str, Any]:
    """Parse a frame body and check all of it: the envelope (v, type in ``kinds``, seq), then its fields."""
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_reject_constant,
                         parse_int=_parse_int, parse_float=_parse_float)
    except ProtocolError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(f"body: not UTF-8 JSON ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError("body: not a JSON object")
    v = obj.get("v")
    if v != VERSION or isinstance(v, bool):
        raise ProtocolError(f"v: expected {VERSION}, got {_short(v)}")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in kinds:
        raise ProtocolError(f"type: unknown {_short(kind)}")
    _int(obj, "seq")
    if len(body) > size_limit(kind):
        raise FrameTooLarge(f"{kind}: {len(body)} bytes exceeds {size_limit(kind)}")
    return check(obj)


def read_message(sock: socket.socket, kinds: Collection[str] = MESSAGE_TYPES,
                 max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Read one frame (blocking) and return its message, checked by :func:`decode`."""
    return decode(read_body(sock, max_bytes), kinds)


def _int(obj: dict[str, Any], key: str, minimum: int = 0, maximum: int = MAX_INT) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{obj.get('type')}.{key}: not an integer ({_short(value)})")
    if value < minimum:
        raise ProtocolError(f"{obj.get('type')}.{key}: {value} below {minimum}")
    if value > maximum:
        raise ProtocolError(f"{obj.get('type')}.{key}: {_short(value)} above {maximum}")
    return value


def is_number(value: Any) -> bool:
    """True for a finite JSON number (an integer within +-2**62, or a finite float)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_INT <= value <= MAX_INT
    return isinstance(value, float) and math.isfinite(value)


def _of_type(obj: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise ProtocolError(f"{obj.get('type')}.{key}: not {what} ({_short(value)})")
    return value


def _name(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ProtocolError(f"{obj.get('type')}.{key}: must match {NAME_PATTERN} ({_short(value)})")
    return value


def _choice(obj: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or value not in allowed:
        raise ProtocolError(f"{obj.get('type')}.{key}: expected one of {', '.join(allowed)} ({_short(value)})")
    return value


# -- message kinds -------------------------------------------------------------------------


def _hello(m: dict[str, Any]) -> None:
    _name(m, "job")
    world = _int(m, "world_size", 1, MAX_RANKS)
    rank = _int(m, "rank", 0, MAX_RANKS)
    if rank >= world:
        raise ProtocolError(f"hello.rank: {rank} not below world_size {world}")
    for key in ("local_rank", "pid", "batch_size"):
        _int(m, key)
    _of_type(m, "leader", bool, "a boolean")
    _choice(m, "batch_mode", BATCH_MODES)
    if "cuda_uuid" in m and not (isinstance(m["cuda_uuid"], str) and CUDA_UUID_RE.fullmatch(m["cuda_uuid"])):
        raise ProtocolError(f"hello.cuda_uuid: must match {CUDA_UUID_RE.pattern} ({_short(m['cuda_uuid'])})")


#: A CUDA device's UUID as NVML and torch spell it (GPU-... or MIG-...); empty: not known.
CUDA_UUID_RE = re.compile(r"((GPU|MIG)-[0-9A-Za-z-]{1,90})?")


def _welcome(m: dict[str, Any]) -> None:
    _of_type(m, "session", str, "a string")
    interval: Any = m.get("report_interval_s")
    if not is_number(interval) or not 0 < interval <= 3600:
        raise ProtocolError(f"welcome.report_interval_s: not a number in (0, 3600] ({_short(interval)})")
    _of_type(m, "decisions", bool, "a boolean")


def _report(m: dict[str, Any]) -> None:
    _int(m, "step")
    _int(m, "steps")
    if "time" in m and not is_number(m["time"]):
        raise ProtocolError(f"report.time: not a number ({_short(m['time'])})")
    stats = _of_type(m, "stats", dict, "an object")
    for key in STAT_KEYS:
        if key in stats and not is_number(stats[key]):
            raise ProtocolError(f"report.stats.{key}: not a number ({_short(stats[key])})")
    if "rank_times" in m:
        _rank_times(m["rank_times"])


def _rank_times(entries: Any) -> None:
    """``rank_times``: at most MAX_RANK_TIMES [rank, compute_s, wait_s] triples, each rank once."""
    if not isinstance(entries, list) or len(entries) > MAX_RANK_TIMES:
        raise ProtocolError(f"report.rank_times: not a list of at most {MAX_RANK_TIMES} entries")
    seen: set[int] = set()
    for entry in entries:
        ok = isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], int) and not isinstance(entry[0], bool)
        if not ok or not 0 <= entry[0] < MAX_RANKS or entry[0] in seen:
            raise ProtocolError(f"report.rank_times: expected [rank, compute_s, wait_s], each rank once ({_short(entry)})")
        if not all(is_number(x) and 0 <= x <= MAX_RANK_SECONDS for x in entry[1:]):
            raise ProtocolError(f"report.rank_times: seconds not in [0, {MAX_RANK_SECONDS:g}] ({_short(entry)})")
        seen.add(entry[0])


def decision_change(m: dict[str, Any]) -> dict[str, int]:
    """The one change a decision asks for: {'batch_size': n} or {'profile_steps': n}, n >= 1."""
    kinds = [k for k in DECISION_KINDS if k in m]
    if len(kinds) != 1:
        raise ProtocolError("decision: needs exactly one of batch_size, profile_steps")
    return {kinds[0]: _int({"type": "decision", **m}, kinds[0], 1)}


def _decision(m: dict[str, Any]) -> None:
    _name(m, "id")
    decision_change(m)


def _ack(m: dict[str, Any]) -> None:
    _name(m, "id")
    _of_type(m, "ok", bool, "a boolean")
    if "applied_step" in m:
        _int(m, "applied_step")
    if "error" in m:
        _of_type(m, "error", str, "a string")


def _profile_result(m: dict[str, Any]) -> None:
    _name(m, "id")
    _of_type(m, "summary", dict, "an object")


def _admin(m: dict[str, Any]) -> None:
    op = _choice(m, "op", ADMIN_OPS)
    if "gpu" in m:
        _int(m, "gpu", 0, 1 << 16)
    if "job" in m:
        _name(m, "job")
    if op in ("set", "release") and "knob" in m:
        _of_type(m, "knob", str, "a string")
    if op == "set":
        value = m.get("value")
        pair = isinstance(value, list) and len(value) == 2 and all(is_number(x) and isinstance(x, int) for x in value)
        if not pair and not (is_number(value) and isinstance(value, int)):
            raise ProtocolError("admin.value: not an integer or a pair of integers")
        if ("gpu" in m) == ("job" in m) or "knob" not in m:
            raise ProtocolError("admin: set needs a knob and one of gpu, job")


def _admin_reply(m: dict[str, Any]) -> None:
    _choice(m, "op", ADMIN_OPS)
    _of_type(m, "ok", bool, "a boolean")


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "hello": _hello, "welcome": _welcome, "report": _report, "decision": _decision, "ack": _ack,
    "profile_result": _profile_result, "admin": _admin, "admin_reply": _admin_reply,
    "error": lambda m: _of_type(m, "error", str, "a string"),
}


def check(m: dict[str, Any]) -> dict[str, Any]:
    """Check the fields of a message of any type (envelope keys aside); return it unchanged."""
    kind = m.get("type")
    if not isinstance(kind, str) or kind not in CHECKS:
        raise ProtocolError(f"type: unknown {_short(kind)}")
    CHECKS[kind](m)
    return m


def message(kind: str, **fields: Any) -> dict[str, Any]:
    """Build a message of type ``kind`` (without v and seq) and check it."""
    return check({"type": kind, **fields})


def error(text: str) -> dict[str, Any]:
    """An error message carrying ``text`` (cut to MAX_ERROR_CHARS)."""
    return {"type": "error", "error": str(text)[:MAX_ERROR_CHARS]}


def clean_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The stats a report may carry: finite numbers only (unknown keys pass, as receivers ignore them)."""
    return {key: value for key, value in stats.items() if is_number(value)}


def report_stats(m: dict[str, Any]) -> dict[str, float]:
    """The known stats of a checked report, as floats."""
    stats = m["stats"]
    return {key: float(stats[key]) for key in STAT_KEYS if key in stats}


def report_rank_times(m: dict[str, Any]) -> dict[int, tuple[float, float]]:
    """A checked report's ``rank_times`` as rank -> (compute_s, wait_s); empty when it has none."""
    return {int(r): (float(c), float(w)) for r, c, w in m.get("rank_times", ())}


# -- blocking client -------------------------------------------------------------------------


class Channel:
    """One blocking connection: checked, numbered sends and checked receives."""

    def __init__(self, sock: socket.socket, kinds: Collection[str], max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.sock = sock
        self.kinds = kinds
        self.max_bytes = max_bytes
        self.seq = 0

    @classmethod
    def connect(cls, path: str | Path, kinds: Collection[str], timeout: float,
                max_bytes: int = MAX_MESSAGE_BYTES) -> Channel:
        """Connect to the Unix socket at ``path``; raises OSError."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            raise
        return cls(sock, kinds, max_bytes)

    def send(self, msg: dict[str, Any]) -> None:
        """Check ``msg``, add v and seq, and send it; a refused message sends nothing."""
        data = encode({"v": VERSION, "seq": self.seq, **check(msg)})
        self.sock.sendall(data)
        self.seq += 1

    def receive(self) -> dict[str, Any]:
        """The next message, checked; FrameTooLarge leaves the stream unusable."""
        return read_message(self.sock, self.kinds, self.max_bytes)

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send ``msg`` and return the answer."""
        self.send(msg)
        return self.receive()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(path: str | Path, msg: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one admin message on a fresh connection; the answer is an admin_reply or an error."""
    with Channel.connect(path, TO_ADMIN, timeout, MAX_REPLY_BYTES) as chan:
        return chan.request(msg)
