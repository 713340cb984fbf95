"""Crash-safe checkpoints: asynchronous, atomic (temp, fsync, rename), checksummed, last K kept.

File layout: 8-byte magic, 32-byte SHA-256 of the payload, 8-byte big-endian payload length,
then the payload (``torch.save`` of the state). A file whose magic, length or checksum does not
match is skipped on load with a warning and the previous checkpoint is used. A run that
finished writes a last checkpoint and then a done marker (``DONE``, JSON naming that step);
any later checkpoint removes the marker, since the run went on.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

MAGIC = b"GPTUCK01"
_HEAD = struct.Struct(">8s32sQ")
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")
DONE_NAME = "DONE"

#: Called with (step, temp path, bytes written so far) half-way through a write; a fault-injection seam.
PartialWriteHook = Callable[[int, Path, int], None]


def snapshot(obj: Any) -> Any:
    """Deep copy of a state structure with every tensor cloned to CPU (safe to write later)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(snapshot(v) for v in obj)
    return obj


def gather_per_rank(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order, on every rank (collective; ``[obj]`` outside a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class CheckpointCorrupt(Exception):
    """A checkpoint file failed its magic, length or checksum check."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointManager:
    """Writes checkpoints of one run into a directory and finds the newest valid one."""

    def __init__(self, directory: str | Path, keep: int = 3, asynchronous: bool = True,
                 on_partial_write: PartialWriteHook | None = None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.asynchronous = asynchronous
        self.on_partial_write = on_partial_write
        self.written = 0
        self.failed = 0
        self._thread: threading.Thread | None = None

    def path_for(self, step: int) -> Path:
        """File name of the checkpoint at ``step``."""
        return self.dir / f"ckpt-{step:09d}.pt"

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Snapshot ``state`` now and write it (in a background thread when asynchronous)."""
        self.wait()
        (self.dir / DONE_NAME).unlink(missing_ok=True)  # the run goes on past a finish marked before
        snap = snapshot(state)
        if self.asynchronous:
            self._thread = threading.Thread(target=self._write, args=(step, snap), name="gputuned-ckpt", daemon=True)
            self._thread.start()
        else:
            self._write(step, snap)

    def wait(self) -> None:
        """Block until a write in flight has finished."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def mark_done(self, step: int) -> bool:
        """After the write of checkpoint ``step`` finishes, mark the run done at it; False if it was not written."""
        self.wait()
        final = self.path_for(step)
        if not final.exists():
            return False
        tmp = self.dir / f".{DONE_NAME}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"step": step, "checkpoint": final.name}))
        os.replace(tmp, self.dir / DONE_NAME)
        _fsync_dir(self.dir)
        return True

    def done_step(self) -> int | None:
        """The step a finished run was marked done at, or None (no marker, or one that does not parse)."""
        try:
            return int(json.loads((self.dir / DONE_NAME).read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write(self, step: int, state: dict[str, Any]) -> None:
        final = self.path_for(step)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            buf = io.BytesIO()
            torch.save(state, buf)
            payload = buf.getvalue()
            head = _HEAD.pack(MAGIC, hashlib.sha256(payload).digest(), len(payload))
            with open(tmp, "wb") as f:
                f.write(head)
                half = len(payload) // 2
                f.write(payload[:half])
                if self.on_partial_write is not None:
                    f.flush()
                    self.on_partial_write(step, tmp, len(head) + half)
                f.write(payload[half:])
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _fsync_dir(self.dir)
            self.written += 1
            logger.info("checkpoint step %d written to %s (%d bytes)", step, final, len(payload))
            self._prune()
        except Exception:  # a failed write must not kill training; the previous checkpoint stays
            self.failed += 1
            logger.exception("checkpoint step %d failed", step)
            tmp.unlink(missing_ok=True)

    def _prune(self) -> None:
        for old in self.list()[:-self.keep]:
            old[1].unlink(missing_ok=True)

    def list(self) -> list[tuple[int, Path]]:
        """Finished checkpoint files, oldest first (temporaries are ignored)."""
        found = []
        for p in self.dir.iterdir():
            m = _NAME.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        """Load and verify one checkpoint; raise CheckpointCorrupt when it does not check out."""
        data = path.read_bytes()
        if len(data) < _HEAD.size:
            raise CheckpointCorrupt(f"{path}: truncated header")
        magic, digest, length = _HEAD.unpack_from(data)
        payload = data[_HEAD.size:]
        if magic != MAGIC:
            raise CheckpointCorrupt(f"{path}: bad magic")
        if len(payload) != length:
            raise CheckpointCorrupt(f"{path}: {len(payload)} payload bytes, header says {length}")
        if hashlib.sha256(payload).digest() != digest:
            raise CheckpointCorrupt(f"{path}: checksum mismatch")
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)

    def latest(self) -> tuple[int, dict[str, Any]] | None:
        """Newest checkpoint that verifies, skipping (and logging) corrupt ones; None if none."""
        for step, path in reversed(self.list()):
            try:
                return step, self.read(path)
            except (CheckpointCorrupt, OSError, EOFError, RuntimeError) as e:
                logger.warning("skipping corrupt checkpoint: %s", e)
        return None

    def clean_temporaries(self) -> int:
        """Remove temp files left by writers that died; return how many."""
        n = 0
        for p in self.dir.glob(".ckpt-*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
        return n
