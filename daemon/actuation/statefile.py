"""The state file: each changed GPU's original settings, written atomically before a change.

The file is the only thing that survives a crash, so it is written as a whole new file
(temp file in the same directory, fsync, rename, fsync the directory): a reader finds
either the previous complete file or the new complete file, never a truncated one. A
file with GPU (or job) entries means "these targets may differ from their originals"; after
a full restore the file is removed. Job entries (knobs whose target is the training job,
such as batch size) sit under ``jobs``, written only when there are some, so a file of
GPU entries alone reads as it always did (version 1).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class StateFileError(ValueError):
    """The state file exists but cannot be read as a state file; the text says why."""


@dataclass
class GPURecord:
    """One GPU's recorded originals and the knobs changed since they were recorded."""

    index: int
    uuid: str
    originals: dict[str, Any] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    targets: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "originals": self.originals,
            "changed": self.changed,
            "targets": self.targets,
        }

    @classmethod
    def from_json(cls, uuid: str, raw: Any) -> GPURecord:
        if not isinstance(raw, dict):
            raise StateFileError(f"gpus.{uuid}: not an object")
        index = raw.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise StateFileError(f"gpus.{uuid}.index: not an integer")
        return cls(index, uuid, *_knob_fields(f"gpus.{uuid}", raw))

    def copy(self) -> GPURecord:
        return GPURecord(self.index, self.uuid, dict(self.originals), list(self.changed), dict(self.targets))


@dataclass
class JobRecord:
    """One job's recorded originals (its own values before the first change) and changed knobs."""

    job: str
    originals: dict[str, Any] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    targets: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job, "originals": self.originals, "changed": self.changed, "targets": self.targets}

    @classmethod
    def from_json(cls, job: str, raw: Any) -> JobRecord:
        if not isinstance(raw, dict):
            raise StateFileError(f"jobs.{job}: not an object")
        return cls(job, *_knob_fields(f"jobs.{job}", raw))

    def copy(self) -> JobRecord:
        return JobRecord(self.job, dict(self.originals), list(self.changed), dict(self.targets))


def _knob_fields(where: str, raw: dict[str, Any]) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    originals = raw.get("originals", {})
    changed = raw.get("changed", [])
    targets = raw.get("targets", {})
    if not isinstance(originals, dict) or not isinstance(targets, dict):
        raise StateFileError(f"{where}: originals/targets not objects")
    if not isinstance(changed, list) or not all(isinstance(k, str) for k in changed):
        raise StateFileError(f"{where}.changed: not a list of knob names")
    return dict(originals), list(changed), dict(targets)


@dataclass
class State:
    """Everything the state file holds."""

    gpus: dict[str, GPURecord] = field(default_factory=dict)
    pid: int = 0
    updated: float = 0.0
    jobs: dict[str, JobRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "pid": self.pid,
            "updated": self.updated,
            "gpus": {u: r.to_json() for u, r in sorted(self.gpus.items())},
        }
        if self.jobs:
            out["jobs"] = {j: r.to_json() for j, r in sorted(self.jobs.items())}
        return out

    def copy(self) -> State:
        """A deep copy of the records (to change and save before adopting)."""
        return State({u: r.copy() for u, r in self.gpus.items()}, self.pid, self.updated,
                     {j: r.copy() for j, r in self.jobs.items()})

    def empty(self) -> bool:
        return not self.gpus and not self.jobs


def parse_state(text: str, where: str = "state file") -> State:
    """Parse state-file text; raises StateFileError naming what is wrong."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise StateFileError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise StateFileError(f"{where}: not a JSON object")
    if raw.get("version") != FORMAT_VERSION:
        raise StateFileError(f"{where}: version {raw.get('version')!r}, expected {FORMAT_VERSION}")
    gpus = raw.get("gpus", {})
    if not isinstance(gpus, dict):
        raise StateFileError(f"{where}: gpus: not an object")
    jobs = raw.get("jobs", {})
    if not isinstance(jobs, dict):
        raise StateFileError(f"{where}: jobs: not an object")
    state = State(pid=int(raw.get("pid", 0) or 0), updated=float(raw.get("updated", 0.0) or 0.0))
    for uuid, rec in gpus.items():
        state.gpus[uuid] = GPURecord.from_json(uuid, rec)
    for job, rec in jobs.items():
        state.jobs[job] = JobRecord.from_json(job, rec)
    return state


class StateFile:
    """Reads and atomically replaces the state file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.writes = 0

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> State:
        """The recorded state; an absent file is an empty state. Raises StateFileError."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return State()
        except OSError as e:
            raise StateFileError(f"{self.path}: cannot read: {e.strerror}") from None
        return parse_state(text, str(self.path))

    def save(self, state: State) -> None:
        """Replace the file with ``state``: temp file, fsync, rename, fsync directory."""
        state.pid = os.getpid()
        state.updated = time.time()
        body = (json.dumps(state.to_json(), indent=1, sort_keys=True) + "\n").encode()
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = directory / f".{self.path.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(body)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        _fsync_dir(directory)
        self.writes += 1

    def remove(self) -> None:
        """Delete the file (everything restored) and any temp files a crash left behind."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.clean_temp_files()
        _fsync_dir(self.path.parent)

    def clean_temp_files(self) -> None:
        """Remove temp files of writes a crash interrupted (they never hold the truth)."""
        try:
            leftovers = list(self.path.parent.glob(f".{self.path.name}.*.tmp"))
        except OSError:
            return
        for p in leftovers:
            try:
                p.unlink()
            except OSError:
                logger.debug("cannot remove %s", p)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
