"""What the live tuner optimises and how often it acts (the ``[tuner]`` table)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gputuned.tuner.decision.guard import DEFAULT_PAUSE_FILE

OBJECTIVES = ("energy_slowdown", "energy", "throughput", "cost")
CHOOSERS = ("learned", "climber")


@dataclass
class TuningConfig:
    """What the live tuner optimises and how often it acts."""

    objective: str = "energy_slowdown"
    interval_s: float = 20.0
    max_slowdown: float = 0.03
    job: str | None = None  # None: the first job with a connected leader
    # "learned" (the packaged numpy policy), "climber", or a policy file (.npz); None: ``chooser`` decides
    policy: str | Path | None = None
    chooser: str = "auto"  # auto (learned if the packaged policy loads and is the default), learned, climber
    perseus: bool = True  # lower GPUs with slack when several ranks report compute times
    tune_power: bool = True
    tune_batch: bool = True
    pause_file: Path | None = DEFAULT_PAUSE_FILE  # the kill switch `gputuned tuner pause` sets
    eta: float = 0.5  # weight of energy in the ``cost`` objective (Zeus)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"tuner.objective: unknown {self.objective!r} ({', '.join(OBJECTIVES)})")
        if not self.interval_s > 0:
            raise ValueError(f"tuner.interval_s: must be positive, got {self.interval_s}")
        if not 0.0 <= self.max_slowdown < 1.0:
            raise ValueError(f"tuner.max_slowdown: must be in [0, 1), got {self.max_slowdown}")
        if self.chooser not in ("auto", *CHOOSERS):
            raise ValueError(f"tuner.chooser: unknown {self.chooser!r} (auto, {', '.join(CHOOSERS)})")
        if isinstance(self.policy, str) and not self.policy.endswith(".npz") and self.policy not in CHOOSERS:
            raise ValueError(f"tuner.policy: expected \"learned\", \"climber\" or a .npz file, got {self.policy!r}")

    def chooser_kind(self) -> tuple[str, Path | None]:
        """(auto | learned | climber, policy file or None) from ``policy`` and ``chooser``."""
        if self.policy is None:
            return self.chooser, None
        if str(self.policy) in CHOOSERS:
            return str(self.policy), None
        return "learned", Path(self.policy)
