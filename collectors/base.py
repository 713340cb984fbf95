"""The collector protocol, and the stand-in for a collector that could not start."""

from __future__ import annotations

from typing import Protocol

from gputuned.collectors.families import Sample


class Collector(Protocol):
    """Something that turns readings into samples once per tick.

    ``collect`` returns the complete current set of the collector's samples: series it
    does not return are no longer served. It may raise; the loop isolates it.
    """

    name: str

    def collect(self) -> list[Sample]: ...

    def close(self) -> None: ...


class UnavailableCollector:
    """Stands in for a collector whose source could not be opened (no NVML library, a failing factory).

    Every run raises the original error, so the loop serves the collector as down and
    logs why once, while the other collectors go on.
    """

    def __init__(self, name: str, error: Exception) -> None:
        self.name = name
        self.error = error

    def collect(self) -> list[Sample]:
        raise self.error

    def close(self) -> None:
        """Nothing to release."""
