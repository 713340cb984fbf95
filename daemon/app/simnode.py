"""A simulated node whose GPU settings outlive the process, as real GPUs' settings do.

A real GPU keeps a lowered power limit or locked clocks after the daemon that set them
is killed; the simulated GPUs live inside the daemon's process and would forget. With
``sim.settings_file`` set, every settings field of every simulated device is loaded from
that JSON file at start and written back (atomically) the moment a set call changes it,
so a crash test can kill the daemon and let ``gputuned restore``, another process, find
the node as the daemon left it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from gputuned.collectors.sim.state import SimBackend, SimDevice

logger = logging.getLogger(__name__)

SETTINGS = ("power_limit_mw", "locked_sm_clocks_mhz", "locked_memory_clocks_mhz", "applications_clocks_mhz")


class _Persister:
    def __init__(self, path: Path, devices: list[SimDevice]) -> None:
        self.path = path
        self.devices = devices
        self.lock = threading.Lock()
        self.writes = 0

    def snapshot(self) -> dict[str, Any]:
        out = {}
        for d in self.devices:
            entry = {}
            for name in SETTINGS:
                v = object.__getattribute__(d, name)
                entry[name] = list(v) if isinstance(v, tuple) else v
            out[d.uuid] = entry
        return {"gpus": out}

    def save(self) -> None:
        with self.lock:
            body = json.dumps(self.snapshot(), sort_keys=True).encode()
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            self.writes += 1


def _persisting_class(base: type[SimDevice]) -> type[SimDevice]:
    def __setattr__(self: SimDevice, name: str, value: Any) -> None:  # noqa: N807
        object.__setattr__(self, name, value)
        if name in SETTINGS:
            persister = self.__dict__.get("_persister")
            if persister is not None:
                persister.save()

    return type(f"Persisting{base.__name__}", (base,), {"__setattr__": __setattr__})


def load_settings(path: Path) -> dict[str, dict[str, Any]]:
    """The settings per GPU uuid recorded in ``path`` (empty if the file is absent)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    gpus = raw.get("gpus", {}) if isinstance(raw, dict) else {}
    return {str(k): dict(v) for k, v in gpus.items() if isinstance(v, dict)}


def persist_settings(backend: SimBackend, path: Path) -> SimBackend:
    """Load ``backend``'s device settings from ``path`` and keep it up to date from now on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = load_settings(path)
    persister = _Persister(path, backend.devices)
    for dev in backend.devices:
        for name, value in saved.get(dev.uuid, {}).items():
            if name in SETTINGS:
                setattr(dev, name, tuple(value) if isinstance(value, list) else value)
        dev.__class__ = _persisting_class(type(dev))
        dev.__dict__["_persister"] = persister
    persister.save()
    logger.info("simulated GPU settings kept in %s", path)
    return backend
