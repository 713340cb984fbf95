"""How many file descriptors the process has free, counted cheaply enough to ask at every accept."""

from __future__ import annotations

import os
import resource


class FdBudget:
    """Free file descriptors of this process: RLIMIT_NOFILE less those open (re-counted from
    ``fd_dir`` at most every ``every`` seconds, adjusted in between by what the front opened)."""

    def __init__(self, reserved: int, fd_dir: str = "/proc/self/fd", every: float = 0.2) -> None:
        self.reserved = reserved
        self._dir = fd_dir
        self._every = every
        self._counted_at = -1e9
        self._open = 0

    def note(self, delta: int) -> None:
        """The front opened (+1) or closed (-1) a descriptor."""
        self._open += delta

    def low(self, now: float) -> bool:
        """Whether no more than the reserve (at most half the limit) is free."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return False
        if now - self._counted_at >= self._every:
            self._counted_at = now
            try:
                self._open = len(os.listdir(self._dir)) - 1  # less the one listdir itself held
            except OSError:
                return True  # cannot even open a directory: as good as none free
        return soft - self._open <= min(self.reserved, soft // 2)
