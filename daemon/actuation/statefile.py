"""The state file: each changed GPU's original settings, written atomically before a change.

The file is the only thing that survives a crash, so it is written as a whole new file
(:mod:`~gputuned.daemon.actuation.atomic`: an exclusive temp file with a random name in a
private directory, fsync, rename, fsync the directory): a reader finds either the previous
complete file or the new complete file, never a truncated one. A copy is kept beside it (``state.json.1``, written before each
replace) for a file damaged or deleted behind the daemon's back. A file with GPU (or job)
entries means "these targets may differ from their originals"; after a full restore the
file and its copy are removed. Job entries (knobs whose target is the training job,
such as batch size) sit under ``jobs``, written only when there are some, so a file of GPU
entries alone reads as it always did (version 1). The operator's pins live in their own file
beside this one (:mod:`~gputuned.daemon.actuation.pins`): this file exists only while something
may differ from its originals.
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

from gputuned.daemon.actuation.atomic import (
    fsync_dir,
    private_directory,
    read_private,
    replace_file,
    temp_glob,
)

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
    # originals this process read from the GPU itself; False for those loaded from a file,
    # which are held to the config's bounds as well before they are applied
    read_here: bool = field(default=True, compare=False)

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
        return cls(index, uuid, *_knob_fields(f"gpus.{uuid}", raw), read_here=False)

    def copy(self) -> GPURecord:
        return GPURecord(self.index, self.uuid, dict(self.originals), list(self.changed), dict(self.targets),
                         self.read_here)


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
        """Nothing to keep: no record to restore (the file may go)."""
        return not self.changed()

    def changed(self) -> bool:
        """Whether a GPU or job may differ from its recorded originals (something to restore)."""
        return bool(self.gpus or self.jobs)


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
    """Reads and atomically replaces the state file at ``path``, with a second copy at ``<path>.1``.

    Each generation goes to ``<path>.1`` first, then replaces ``<path>``: a crash between the
    two leaves ``<path>`` at the generation before, which a reader takes; a file damaged or
    deleted behind the daemon's back falls back to the copy.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.previous = self.path.with_name(self.path.name + ".1")
        self.writes = 0
        self.last: bytes | None = None  # what this object last wrote or loaded from the file

    def exists(self) -> bool:
        """Whether the file or its copy is on disk (something may await restore)."""
        return os.path.lexists(self.path) or os.path.lexists(self.previous)

    def load(self) -> State:
        """The recorded state; the copy (``<path>.1``) when the file is absent or damaged.

        Absent both, an empty state. Raises StateFileError when neither can be read.
        """
        try:
            return self._load(self.path)
        except FileNotFoundError:
            if not os.path.lexists(self.previous):
                return State()
            why = f"{self.path} is missing"
        except StateFileError as e:
            why = str(e)
        try:
            state = self._load(self.previous)
        except (FileNotFoundError, StateFileError) as e2:
            prev = "absent" if isinstance(e2, FileNotFoundError) else str(e2)
            raise StateFileError(f"{why}; its copy {self.previous}: {prev}") from None
        logger.warning("%s; using its copy %s", why, self.previous)
        return state

    def _load(self, path: Path) -> State:
        try:
            data = read_private(path)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise StateFileError(f"{path}: cannot read: {e.strerror or e}") from None
        state = parse_state(data.decode("utf-8", errors="replace"), str(path))
        self.last = data
        return state

    def matches(self) -> bool:
        """Whether the file on disk holds exactly what this object last wrote."""
        try:
            return self.last is not None and read_private(self.path) == self.last
        except OSError:
            return False

    def save(self, state: State) -> None:
        """Replace the file with ``state`` (its copy first); raises OSError (UnsafeDirectory)."""
        state.pid = os.getpid()
        state.updated = time.time()
        body = (json.dumps(state.to_json(), indent=1, sort_keys=True) + "\n").encode()
        private_directory(self.path.parent)
        replace_file(self.previous, body)
        replace_file(self.path, body)
        self.last = body
        self.writes += 1

    def remove(self) -> None:
        """Delete the file (everything restored), its copy, and leftover temp files."""
        for p in (self.previous, self.path):  # the copy first: a crash between leaves the file
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self.last = None
        self.clean_temp_files()
        fsync_dir(self.path.parent)

    def set_aside(self) -> Path | None:
        """Rename a damaged file (and its copy) to ``*.damaged`` for the operator; returns the new name."""
        kept = None
        for p in (self.path, self.previous):
            if os.path.lexists(p):
                dest = p.with_name(p.name + ".damaged")
                try:
                    os.replace(p, dest)
                except OSError as e:
                    logger.error("cannot set %s aside: %s", p, e.strerror)
                    continue
                kept = kept or dest
        self.last = None
        fsync_dir(self.path.parent)
        return kept

    def clean_temp_files(self) -> None:
        """Remove temp files of writes a crash interrupted (they never hold the truth)."""
        try:
            leftovers = [*self.path.parent.glob(temp_glob(self.path)), *self.path.parent.glob(temp_glob(self.previous))]
        except OSError:
            return
        for p in leftovers:
            try:
                p.unlink()
            except OSError:
                logger.debug("cannot remove %s", p)
