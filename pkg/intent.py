"""Intent as data: every change of a knob, whoever made it, as one record the other parts can read.

The actuator emits a :class:`Change` for each applied change (tuner, Perseus, an operator's
``set``, a restore, or a job acknowledging a batch size). The forecaster opens a settle window on
the series the knob affects, the guard and ``status`` show who changed what last, the state file
keeps what is pinned, and the exporter serves the changes as a series for dashboard annotations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

#: Who made a change.
ORIGINS = ("tuner", "perseus", "operator", "restore", "job")

#: Default settle window, seconds: how long the series a change affects take to reach their new level.
SETTLE_S = 20.0


@dataclass(frozen=True)
class Change:
    """One applied knob change: when, who, which knob on which GPU or job, from what to what."""

    t: float
    origin: str  # one of ORIGINS
    knob: str  # a registered knob name: power_limit, locked_sm_clocks, batch_size, ...
    gpu: int | None  # the GPU index for a GPU knob, None for a job knob
    job: str | None  # the job's name for a job knob (or the job the tuner acted for)
    previous: Any
    new: Any
    settle_s: float = SETTLE_S

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise ValueError(f"change origin must be one of {', '.join(ORIGINS)}, not {self.origin!r}")

    def settled(self, now: float) -> bool:
        """Whether the settle window has passed at ``now``."""
        return now >= self.t + self.settle_s

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists for tuples), for the state file, status and the forecaster's process."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Change:
        """The inverse of :meth:`to_dict`."""
        return cls(**{k: d[k] for k in ("t", "origin", "knob", "gpu", "job", "previous", "new")},
                   settle_s=float(d.get("settle_s", SETTLE_S)))


ChangeHook = Callable[[Change], None]
