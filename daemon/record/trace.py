"""Trace files: every published sample, compact, checksummed, replayable.

Format, version 1 (all integers little-endian; see docs/trace-format.md)::

    header  b"GPUTRACE" | u16 version | u16 flags | u32 meta_len | meta (UTF-8 JSON)
    frame   u8 kind | u32 payload_len | u32 crc32(payload) | payload

    kind 1 DEFINE   zlib(JSON {"sources": {name: id}, "series": [[id, family, [[k, v], ...]], ...]})
    kind 2 PUBLISH  zlib( u16 source | f64 t | u32 n | u8 flags | [u32 ids x n] | u64 bits x n )
    kind 3 DROP     u16 source | f64 t

A PUBLISH frame whose flags bit 0 is set reuses the series ids of its source's previous
PUBLISH and stores each value's bits XOR the previous value's bits: unchanged values are
zero bytes, which zlib all but removes. A reader stops at the first damaged frame and
reports its index and byte offset; every frame before it stays usable.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from gputuned import __version__
from gputuned.collectors.families import Labels, Sample
from gputuned.daemon.app.catalog import served_catalog

MAGIC = b"GPUTRACE"
VERSION = 1
_HEADER = struct.Struct("<8sHHI")
_FRAME = struct.Struct("<BII")
_PUB = struct.Struct("<HdIB")
_DROP = struct.Struct("<Hd")
DEFINE, PUBLISH, DROP = 1, 2, 3
_SAME_IDS = 1
MAX_PAYLOAD = 64 << 20
#: The trace file extension; a run folder's trace is ``trace.gttrace``.
SUFFIX = ".gttrace"
#: The extension run folders had before the one above; still read.
LEGACY_SUFFIX = ".gtrace"
RUN_TRACE = "trace" + SUFFIX


def find_run_trace(folder: Path) -> Path | None:
    """The trace file of a run folder (``trace.gttrace``, or ``trace.gtrace`` in older ones)."""
    for suffix in (SUFFIX, LEGACY_SUFFIX):
        path = folder / ("trace" + suffix)
        if path.is_file():
            return path
    return None


class TraceError(ValueError):
    """A trace file that cannot be read (further); the message says where."""


@dataclass
class Publish:
    source: str
    t: float
    ids: np.ndarray  # uint32 series ids
    values: np.ndarray  # float64


@dataclass
class Drop:
    source: str
    t: float


Event = Publish | Drop


class TraceWriter:
    """Appends store events to a trace file; use as a store listener."""

    def __init__(self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> None:
        self._f: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        info = {"gputuned_version": __version__, "hostname": socket.gethostname(), "created": time.time()}
        info.update(meta or {})
        body = json.dumps(info).encode()
        self._f.write(_HEADER.pack(MAGIC, VERSION, 0, len(body)) + body)
        self._sources: dict[str, int] = {}
        self._series: dict[tuple[str, Labels], int] = {}
        self._prev: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.samples_written = 0
        self.bytes_written = _HEADER.size + len(body)

    def _frame(self, kind: int, payload: bytes) -> None:
        self._f.write(_FRAME.pack(kind, len(payload), zlib.crc32(payload)) + payload)
        self.bytes_written += _FRAME.size + len(payload)

    def _ids(self, source: str, samples: list[Sample]) -> tuple[int, np.ndarray]:
        new_sources = {}
        sid = self._sources.get(source)
        if sid is None:
            sid = self._sources[source] = len(self._sources)
            new_sources[source] = sid
        new_series = []
        ids = np.empty(len(samples), dtype=np.uint32)
        series = self._series
        for i, (name, labels, _) in enumerate(samples):
            key = (name, labels)
            k = series.get(key)
            if k is None:
                k = series[key] = len(series)
                new_series.append([k, name, [list(p) for p in labels]])
            ids[i] = k
        if new_sources or new_series:
            body = json.dumps({"sources": new_sources, "series": new_series}, separators=(",", ":"))
            self._frame(DEFINE, zlib.compress(body.encode(), 9))
        return sid, ids

    def publish(self, source: str, t: float, samples: list[Sample]) -> None:
        sid, ids = self._ids(source, samples)
        values = np.fromiter((s[2] for s in samples), dtype=np.float64, count=len(samples))
        bits = values.view(np.uint64)
        prev = self._prev.get(sid)
        flags = 0
        if prev is not None and np.array_equal(prev[0], ids):
            flags = _SAME_IDS
            body = (bits ^ prev[1]).tobytes()
        else:
            body = ids.tobytes() + bits.tobytes()
        self._prev[sid] = (ids, bits.copy())
        raw = _PUB.pack(sid, t, len(samples), flags) + body
        self._frame(PUBLISH, zlib.compress(raw, 6))
        self.samples_written += len(samples)

    def drop(self, source: str, t: float) -> None:
        sid = self._sources.get(source)
        if sid is not None:
            self._frame(DROP, _DROP.pack(sid, t))
            self._prev.pop(sid, None)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()


@dataclass
class Trace:
    """A decoded trace: metadata, series table and events; ``error`` if it ends damaged."""

    meta: dict[str, Any]
    series: list[tuple[str, Labels]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    error: str | None = None

    @property
    def sample_count(self) -> int:
        return sum(len(e.ids) for e in self.events if isinstance(e, Publish))

    def samples(self, event: Publish) -> list[Sample]:
        """The event's samples as store tuples."""
        table = self.series
        return [(*table[i], v) for i, v in zip(event.ids.tolist(), event.values.tolist(), strict=True)]


def read_trace(path: str | os.PathLike[str], *, strict: bool = True) -> Trace:
    """Decode a trace file. With ``strict`` a damaged file raises TraceError naming the
    frame and byte offset; otherwise the intact prefix is returned with ``error`` set."""
    data = Path(path).read_bytes()
    if len(data) < _HEADER.size:
        raise TraceError(f"{path}: not a gputuned trace (file is {len(data)} bytes)")
    magic, version, _flags, meta_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise TraceError(f"{path}: not a gputuned trace (bad magic at byte 0)")
    if version != VERSION:
        raise TraceError(f"{path}: trace version {version} not supported (this gputuned reads {VERSION})")
    try:
        meta = json.loads(data[_HEADER.size : _HEADER.size + meta_len])
    except ValueError as e:
        raise TraceError(f"{path}: damaged header metadata at byte {_HEADER.size}: {e}") from None
    trace = Trace(meta)
    try:
        _decode_frames(data, _HEADER.size + meta_len, trace)
    except TraceError as e:
        trace.error = f"{path}: {e}"
        if strict:
            raise TraceError(trace.error) from None
    return trace


def _decode_frames(data: bytes, pos: int, trace: Trace) -> None:
    sources: dict[int, str] = {}
    prev: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    end = len(data)
    index = 0
    while pos < end:
        where = f"frame {index} at byte {pos}"
        if end - pos < _FRAME.size:
            raise TraceError(f"{where}: truncated frame header")
        kind, length, crc = _FRAME.unpack_from(data, pos)
        body_at = pos + _FRAME.size
        if length > MAX_PAYLOAD or body_at + length > end:
            raise TraceError(f"{where}: truncated (needs {length} payload bytes, {end - body_at} left)")
        payload = data[body_at : body_at + length]
        if zlib.crc32(payload) != crc:
            raise TraceError(f"{where}: checksum mismatch")
        if kind == DEFINE:
            try:
                d = json.loads(zlib.decompress(payload))
            except (zlib.error, ValueError) as e:
                raise TraceError(f"{where}: damaged series definitions: {e}") from None
            for name, sid in d["sources"].items():
                sources[int(sid)] = name
            for sid, name, labels in d["series"]:
                if sid != len(trace.series):
                    raise TraceError(f"{where}: series id {sid} out of order")
                trace.series.append((name, tuple((str(k), str(v)) for k, v in labels)))
        elif kind == PUBLISH:
            try:
                raw = zlib.decompress(payload)
            except zlib.error as e:
                raise TraceError(f"{where}: {e}") from None
            sid, t, n, flags = _PUB.unpack_from(raw)
            off = _PUB.size
            if flags & _SAME_IDS:
                if sid not in prev or len(prev[sid][0]) != n:
                    raise TraceError(f"{where}: delta frame without a matching previous frame")
                ids = prev[sid][0]
                bits = np.frombuffer(raw, dtype=np.uint64, count=n, offset=off) ^ prev[sid][1]
            else:
                ids = np.frombuffer(raw, dtype=np.uint32, count=n, offset=off)
                bits = np.frombuffer(raw, dtype=np.uint64, count=n, offset=off + 4 * n)
            if n and int(ids.max()) >= len(trace.series):
                raise TraceError(f"{where}: unknown series id {int(ids.max())}")
            if sid not in sources:
                raise TraceError(f"{where}: unknown source id {sid}")
            prev[sid] = (ids, bits)
            trace.events.append(Publish(sources[sid], t, ids, bits.view(np.float64)))
        elif kind == DROP:
            sid, t = _DROP.unpack_from(payload)
            trace.events.append(Drop(sources.get(sid, f"source{sid}"), t))
            prev.pop(sid, None)
        else:
            raise TraceError(f"{where}: unknown frame kind {kind}")
        pos = body_at + length
        index += 1


def _number(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def to_openmetrics(trace: Trace, out: IO[str]) -> int:
    """Write the trace as OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics``.

    Returns the number of samples written. Samples of a family are contiguous, each
    series' samples in time order, timestamps in seconds.
    """
    per_series: dict[int, list[tuple[float, float]]] = {}
    for ev in trace.events:
        if isinstance(ev, Publish):
            t = ev.t
            for i, v in zip(ev.ids.tolist(), ev.values.tolist(), strict=True):
                per_series.setdefault(i, []).append((t, v))
    by_family: dict[str, list[int]] = {}
    for sid in sorted(per_series):
        by_family.setdefault(trace.series[sid][0], []).append(sid)
    written, catalog = 0, served_catalog()
    for name in sorted(by_family):
        fam = catalog.get(name)
        kind = fam.kind if fam else "unknown"
        base = name[:-6] if kind == "counter" else name
        out.write(f"# TYPE {base} {kind}\n")
        if fam and fam.help:
            out.write(f"# HELP {base} {_escape(fam.help)}\n")
        for sid in by_family[name]:
            labels = trace.series[sid][1]
            lab = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}" if labels else ""
            last_t = None
            for t, v in per_series[sid]:
                if t == last_t:
                    continue
                last_t = t
                out.write(f"{name}{lab} {_number(v)} {t:.3f}\n")
                written += 1
    out.write("# EOF\n")
    return written


def iter_publishes(trace: Trace) -> Iterator[tuple[str, float, list[Sample] | None]]:
    """(source, t, samples) per event in file order; samples None for a drop."""
    for ev in trace.events:
        if isinstance(ev, Publish):
            yield ev.source, ev.t, trace.samples(ev)
        else:
            yield ev.source, ev.t, None


class Recorder:
    """Store listener writing every publish and drop to a trace file."""

    def __init__(self, writer: TraceWriter) -> None:
        self.writer = writer

    def __call__(self, source: str, t: float, samples: list[Sample] | None) -> None:
        if samples is None:
            self.writer.drop(source, t)
        else:
            self.writer.publish(source, t, samples)
