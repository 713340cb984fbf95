"""The ranks Perseus plans from: each local rank on its GPU, every other node's rank as remote.

A node's daemon hears its own ranks' reports (their compute time per step) and, through them,
the job-wide vector the plugin's exchange carries (every rank's compute and wait per step).
Local ranks are placed on the tuned GPUs by NVML's process lists (or, without them, the k-th
rank on the k-th GPU); the ranks of other nodes keep the GPU key
:data:`gputuned.tuner.decision.perseus.REMOTE`, so they count for the critical path and are
never planned here.
"""

from __future__ import annotations

from collections.abc import Callable

from gputuned.daemon.control.reports import STAT_FAMILIES
from gputuned.daemon.core.store import Store
from gputuned.tuner.decision.perseus import REMOTE, RankTiming

COMPUTE_SECONDS = STAT_FAMILIES["compute_time_s"]


def local_ranks(store: Store, job: str) -> list[tuple[int, float]]:
    """(rank, compute seconds per step) of ``job``'s ranks reporting to this daemon, by rank."""
    ranks = []
    for labels in store.series(COMPUTE_SECONDS):
        d = dict(labels)
        if d.get("job") == job and "rank" in d:
            v = store.value(COMPUTE_SECONDS, labels)
            if v is not None and v >= 0:  # 0: its steps only waited (the least critical rank)
                ranks.append((int(d["rank"]), float(v)))
    return sorted(ranks)


def place_ranks(ranks: list[int], keys: list[str], rank_gpus: Callable[[], dict[int, int]] | None) -> dict[int, str]:
    """Each local rank's GPU key among ``keys``, one GPU each; empty when they cannot all be placed.

    ``rank_gpus``: rank -> GPU index from NVML's process lists; None: the k-th rank on the k-th GPU.
    """
    if not ranks or len(ranks) != len(keys):
        return {}
    if rank_gpus is None:
        return dict(zip(ranks, keys, strict=True))
    placed = rank_gpus()
    on = {r: str(placed[r]) for r in ranks if r in placed and str(placed[r]) in keys}
    if len(on) != len(ranks) or len(set(on.values())) != len(on):
        return {}
    return on


def job_timings(local: list[tuple[int, float]], on: dict[int, str],
                times: dict[int, tuple[float, float]]) -> list[RankTiming]:
    """Perseus's input: the job-wide ``times`` with local ranks on their GPUs and the others remote;
    the local ranks alone (two at least) when ``times`` lacks one of them (an older plugin)."""
    if not on:
        return []
    if not set(on) <= set(times) or len(times) < 2:
        return [RankTiming(r, on[r], c, 0.0) for r, c in local] if len(local) > 1 else []
    return [RankTiming(r, on.get(r, REMOTE), c, w) for r, (c, w) in sorted(times.items())]
