"""What the decision kernel needs of a node (the daemon's store and actuator, or the simulated node)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gputuned.tuner.decision.observe import Interval
from gputuned.tuner.decision.perseus import RankTiming


@dataclass(frozen=True)
class GPULimits:
    """One tuned GPU: its key in events and the guard, its power-limit range (W), its lockable SM and memory clocks (MHz)."""

    key: str
    lo_w: float
    hi_w: float
    sm_clocks: tuple[int, ...] = ()  # descending; empty: the SM clocks cannot be locked
    memory_clocks: tuple[int, ...] = ()  # the top and the candidates under it (moves.memory_candidates); empty: none


@dataclass(frozen=True)
class Ack:
    """The job's answer to a batch-size request."""

    ok: bool
    error: str = ""


class Node(Protocol):
    """What the kernel needs of a node: measurements, the power limit, the job's batch size."""

    def gpus(self) -> list[GPULimits]:
        """The tuned GPUs, in a fixed order."""
        ...

    def measure(self, now: float) -> Interval | None:
        """The interval since the last call (None when it cannot be measured)."""
        ...

    def set_power_limit(self, gpu: str, watts: float, origin: str = "tuner") -> bool:
        """Set one GPU's power limit (``origin``: tuner or perseus); True when applied."""
        ...

    def set_sm_clock(self, gpu: str, mhz: int | None, origin: str = "tuner") -> bool:
        """Lock one GPU's SM clock at [mhz, mhz] (None: unlock); True when applied."""
        ...

    def set_memory_clock(self, gpu: str, mhz: int | None, origin: str = "tuner") -> bool:
        """Lock one GPU's memory clock at [mhz, mhz] (None: unlock); True when applied."""
        ...

    def request_batch(self, size: int) -> str:
        """Ask the job for a global batch size; returns a request id (LookupError/ValueError: not sent)."""
        ...

    def batch_ack(self, ident: str) -> Ack | None:
        """The job's answer to request ``ident``, None while it has not answered."""
        ...

    def rank_timings(self) -> list[RankTiming]:
        """Per-rank compute times with each rank's GPU key (empty: no Perseus)."""
        ...
