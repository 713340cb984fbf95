"""The live tuner's settings: the ``[tuner]`` table of the daemon's config, less ``enabled``.

What the tuner optimises, how often it acts, which chooser decides and which knobs it
moves. Bad values raise a validation error (a ``ValueError``) whose message names the key.
The pause is no setting: it lives beside the daemon's state file (``tuner.pause``, set by
``gputuned tuner pause``), so an old config's ``pause_file`` is dropped with one warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Strict,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

logger = logging.getLogger(__name__)

#: What the tuner can optimise: energy per sample under a slowdown budget, energy alone,
#: throughput, or Zeus's cost (``eta`` weighs energy against time).
OBJECTIVES = ("energy_slowdown", "energy", "throughput", "cost")
#: The choosers a config can name: the packaged learned policy, or the hill climber.
CHOOSERS = ("learned", "climber")

Seconds = Annotated[float, Strict()]


class TuningConfig(BaseModel):
    """What the live tuner optimises and how often it acts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: StrictStr = "energy_slowdown"
    interval_s: Seconds = 20.0
    max_slowdown: Annotated[float, Strict()] = 0.03
    job: StrictStr | None = None  # None: the first job with a connected leader
    # "learned" (the packaged numpy policy), "climber", or a policy file (.npz); None: ``chooser`` decides
    policy: StrictStr | Path | None = None
    chooser: StrictStr = "auto"  # auto (learned if the packaged policy loads and is the default), learned, climber
    perseus: StrictBool = True  # lower GPUs with slack when several ranks report compute times
    tune_power: StrictBool = True
    tune_clocks: StrictBool = True  # lock SM (and memory) clocks [f, f] where the GPUs support it, beside the power limit
    tune_batch: StrictBool = True
    eta: Annotated[float, Strict()] = 0.5  # weight of energy in the ``cost`` objective (Zeus)

    @model_validator(mode="before")
    @classmethod
    def _pause_file_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "pause_file" in data:
            data = {k: v for k, v in data.items() if k != "pause_file"}
            logger.warning("tuner.pause_file is no longer read: the pause lives beside the state file "
                           "(<state directory>/tuner.pause, set by `gputuned tuner pause|resume`); remove the key")
        return data

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, v: str) -> str:
        if v not in OBJECTIVES:
            raise ValueError(f"tuner.objective: unknown {v!r} ({', '.join(OBJECTIVES)})")
        return v

    @field_validator("interval_s")
    @classmethod
    def _positive_interval(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"tuner.interval_s: must be positive, got {v}")
        return v

    @field_validator("max_slowdown")
    @classmethod
    def _slowdown_fraction(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"tuner.max_slowdown: must be in [0, 1), got {v}")
        return v

    @field_validator("chooser")
    @classmethod
    def _known_chooser(cls, v: str) -> str:
        if v not in ("auto", *CHOOSERS):
            raise ValueError(f"tuner.chooser: unknown {v!r} (auto, {', '.join(CHOOSERS)})")
        return v

    @field_validator("policy")
    @classmethod
    def _policy_name_or_file(cls, v: str | Path | None) -> str | Path | None:
        if isinstance(v, str) and not v.endswith(".npz") and v not in CHOOSERS:
            raise ValueError(f"tuner.policy: expected \"learned\", \"climber\" or a .npz file, got {v!r}")
        return v

    def chooser_kind(self) -> tuple[str, Path | None]:
        """(auto | learned | climber, policy file or None) from ``policy`` and ``chooser``."""
        if self.policy is None:
            return self.chooser, None
        if str(self.policy) in CHOOSERS:
            return str(self.policy), None
        return "learned", Path(self.policy)
