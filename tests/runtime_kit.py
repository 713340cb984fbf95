"""Test-side pieces for daemon-runtime tests; the child daemon and its raw protocol client are
gputuned.daemon.record.child, the crash and fuzz trials gputuned.daemon.record.trials."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def wait_for(pred: Any, timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())
