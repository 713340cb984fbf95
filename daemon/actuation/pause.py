"""The tuner's pause flag: a file in the state directory, beside the state file.

``gputuned tuner pause`` sets it (through the daemon, or by writing the file when none runs),
``resume`` removes it; the tuner's guard refuses every move while it exists. It lives in the
state directory (``/var/lib/gputuned/tuner.pause`` beside ``state.json``), which systemd keeps
across stops, unlike the runtime directory: a pause outlives a restart. The file holds when and
by whom the tuner was paused, for ``status``; it is written atomically in the private state
directory (never a path a user names).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from gputuned.daemon.actuation.atomic import (
    fsync_dir,
    private_directory,
    read_private,
    replace_file,
)

logger = logging.getLogger(__name__)

NAME = "tuner.pause"


def pause_path(state_file: Path) -> Path:
    """The pause flag beside ``state_file``."""
    return Path(state_file).with_name(NAME)


class PauseFlag:
    """The pause flag at ``path``: set, clear, and read back who set it and when."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def paused(self) -> dict[str, Any] | None:
        """``{"since": wall time, "by": who}`` while paused, None otherwise (an unreadable flag still pauses)."""
        try:
            raw = read_private(self.path)
        except FileNotFoundError:
            return None
        except OSError as e:
            return {"since": None, "by": f"unreadable flag: {e.strerror or e}"}
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return {"since": None, "by": "unknown (not written by gputuned)"}
        return {"since": data.get("since"), "by": str(data.get("by") or "")}

    def set(self, paused: bool, by: str) -> dict[str, Any] | None:
        """Pause (``by`` names who) or resume; returns the flag's state after. Raises OSError."""
        if paused:
            if self.paused() is None:  # a second pause keeps the first one's time and author
                private_directory(self.path.parent)
                replace_file(self.path, (json.dumps({"since": time.time(), "by": by}) + "\n").encode())
                logger.warning("tuner paused by %s (%s)", by, self.path)
        elif self.path.exists():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            fsync_dir(self.path.parent)
            logger.warning("tuner resumed by %s", by)
        return self.paused()
