"""Perseus-style slack reclaiming for data-parallel jobs: slow only the GPUs off the critical path.

In synchronous data parallelism every step waits for the slowest rank. A rank that computes
faster than the slowest one waits (its "wait time" from the trainer plugin); its GPU can run
at a lower SM clock without lengthening the step (Perseus, SOSP'24, locks the clocks of the
stages off the critical path), or, where clocks cannot be locked, at a lower power limit. This
controller, run once per decision interval, lowers the clock (or limit) of a rank by one step
while its slack stays above ``min_slack`` and raises it back when its slack falls under
``min_slack / 2``; the critical rank (least slack) is never lowered and is raised towards its
maximum if it was lowered before. Batch size is decided for the whole job elsewhere, never per
rank.

The critical path is the job's, not a node's: in a multi-node job each node's daemon is given
every rank's timing, those of other nodes with the GPU key :data:`REMOTE`, and plans only its
own GPUs, so a node none of whose ranks is critical lowers all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: The GPU key of a rank on another node: counted for the critical path, never planned here.
REMOTE = ""


@dataclass(frozen=True)
class RankTiming:
    """One rank's mean step statistics over the last interval, from the trainer plugin."""

    rank: int
    gpu: str
    compute_s: float
    wait_s: float


@dataclass(frozen=True)
class SlackConfig:
    """Controller settings: slack thresholds (fractions of the step) and the power step in watts."""

    min_slack: float = 0.05
    step_w: float = 10.0


def slack(timings: Sequence[RankTiming]) -> dict[str, float]:
    """Each local GPU's slack: the fraction of the slowest rank's compute time (any node's) it spends idle."""
    if not timings:
        return {}
    critical = max(t.compute_s for t in timings)
    if critical <= 0:
        return {t.gpu: 0.0 for t in timings if t.gpu != REMOTE}
    return {t.gpu: max(0.0, (critical - t.compute_s) / critical) for t in timings if t.gpu != REMOTE}


def critical_gpu(timings: Sequence[RankTiming]) -> str:
    """The GPU on the critical path (longest compute); :data:`REMOTE` when it is on another node."""
    return max(timings, key=lambda t: t.compute_s).gpu


def plan_power_limits(
    timings: Sequence[RankTiming],
    limits_w: Mapping[str, float],
    bounds_w: Mapping[str, tuple[float, float]],
    config: SlackConfig | None = None,
) -> dict[str, float]:
    """New power limit per GPU; only GPUs with slack are lowered, never the critical one."""
    cfg = config or SlackConfig()
    return plan_steps(timings, limits_w, bounds_w, cfg.step_w, cfg.min_slack)


def plan_steps(
    timings: Sequence[RankTiming], values: Mapping[str, float], bounds: Mapping[str, tuple[float, float]],
    step: float, min_slack: float = 0.05,
) -> dict[str, float]:
    """New value per GPU of a knob that speeds it up as it rises (an SM clock in MHz, a power
    limit in W), one ``step`` at a time: only GPUs with slack are lowered, never the critical one.
    Ranks of other nodes (:data:`REMOTE`) count for the critical path only."""
    if not timings:
        return dict(values)
    s = slack(timings)
    crit = critical_gpu(timings)
    out: dict[str, float] = {}
    for t in timings:
        if t.gpu == REMOTE:
            continue
        lo, hi = bounds[t.gpu]
        cur = values[t.gpu]
        if t.gpu == crit:
            new = min(hi, cur + step) if cur < hi else cur
        elif s[t.gpu] > min_slack:
            new = max(lo, cur - step)
        elif s[t.gpu] < min_slack / 2:
            new = min(hi, cur + step)
        else:
            new = cur
        if new != cur:
            logger.debug("gpu %s: slack %.3f, %.0f -> %.0f", t.gpu, s[t.gpu], cur, new)
        out[t.gpu] = new
    return out
