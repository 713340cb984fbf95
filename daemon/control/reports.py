"""Trainer reports as series: the latest statistics per (job, rank), published each tick.

Reports arrive far more often than the collection tick (a rank may report many times a
second); each one only replaces that rank's latest values here, and the control server
publishes the whole table under source ``trainer`` once per tick, so the store's ring
buffers hold one point per tick and a scrape costs nothing extra. The table also knows who
owns each job and which connection holds each rank, and bounds both per uid and in all.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from gputuned.collectors import families as F
from gputuned.collectors.attribution import RankClaim
from gputuned.collectors.families import Labels, Sample
from gputuned.daemon.control.config import ControlConfig

G, C = "gauge", "counter"

#: report stat key -> (family, kind, help)
STAT_FAMILIES: dict[str, str] = {
    "step_time_s": F.declare("gputuned_trainer_step_time_seconds", G, "Mean training step time over the last report."),
    "compute_time_s": F.declare("gputuned_trainer_compute_seconds", G, "Mean forward/backward compute time per step."),
    "comm_time_s": F.declare("gputuned_trainer_communication_seconds", G, "Mean gradient communication time per step."),
    "data_wait_s": F.declare("gputuned_trainer_dataloader_wait_seconds", G, "Mean time per step waiting for the data loader."),
    "samples_per_s": F.declare("gputuned_trainer_samples_per_second", G, "Training throughput of this rank."),
    "loss": F.declare("gputuned_trainer_loss", G, "Mean training loss over the last report."),
    "loss_scale": F.declare("gputuned_trainer_loss_scale", G, "Mixed-precision loss scale."),
    "overflows_total": F.declare("gputuned_trainer_overflows_total", C, "Steps skipped for gradient overflow since start."),
    "grad_norm": F.declare("gputuned_trainer_grad_norm", G, "Mean global gradient norm."),
    "grad_noise_scale": F.declare("gputuned_trainer_grad_noise_scale", G, "Estimated gradient noise scale (critical batch size)."),
    "batch_size": F.declare("gputuned_trainer_batch_size", G, "Current global batch size."),
    "micro_batch_size": F.declare("gputuned_trainer_micro_batch_size", G, "Current per-rank micro-batch size."),
    "accumulation_steps": F.declare("gputuned_trainer_accumulation_steps", G, "Gradient accumulation steps per optimizer step."),
    "goodput": F.declare("gputuned_trainer_goodput_samples_per_second", G, "Throughput times statistical efficiency."),
    "samples_total": F.declare("gputuned_trainer_samples_total", C, "Samples processed since start."),
    "comm_bytes_total": F.declare("gputuned_trainer_comm_bytes_total", C, "Bytes sent by gradient communication."),
    "comm_bytes_uncompressed_total": F.declare(
        "gputuned_trainer_comm_bytes_uncompressed_total", C, "Bytes gradient communication would have sent uncompressed."),
    "oom_total": F.declare("gputuned_trainer_oom_total", C, "Out-of-memory errors recovered from since start."),
}
STEP = F.declare("gputuned_trainer_step", G, "Last step a rank reported.")
LAST_REPORT = F.declare("gputuned_trainer_last_report_timestamp_seconds", G, "When a rank last reported (unix time).")
RANK_CONNECTED = F.declare("gputuned_trainer_rank_connected", G, "1 while a rank's connection is up.")

REPORTS = F.declare("gputuned_control_reports_total", C, "Trainer reports accepted on the control socket.")
REJECTED = F.declare("gputuned_control_rejected_total", C, "Control-socket messages or connections rejected, by reason.")
CONNECTIONS = F.declare("gputuned_control_connections", G, "Open control-socket connections.")
JOBS = F.declare("gputuned_control_jobs", G, "Training jobs with at least one connected rank.")
DECISIONS = F.declare("gputuned_control_decisions_total", C, "Decisions sent to job leaders and their answers, by result.")


@dataclass
class RankState:
    step: int = 0
    t: float = 0.0
    connected: bool = True
    gone_at: float = 0.0
    cid: int = 0  # the connection holding the rank (0: none)
    pid: int = 0  # its peer's pid
    uuid: str = ""  # the CUDA device UUID its hello reported (placed only where NVML lists its pid)
    leader: bool = False  # rank 0 that said it leads: decisions go to its connection
    stats: dict[str, float] = field(default_factory=dict)
    rank_times: dict[int, tuple[float, float]] = field(default_factory=dict)  # the job's ranks, as it last heard


@dataclass
class JobOwner:
    """Who opened a job: every later hello for it must come from the same uid."""

    uid: int
    pid: int  # the process of the first hello
    ranks: int = 0  # ranks of the job in the table, connected or not yet expired


Refusal = tuple[str, str]  # (reason counted in gputuned_control_rejected_total, text for the peer)
SERIES_PER_RANK = len(STAT_FAMILIES) + 3  # the most series one rank can make in the store


def series_keys(job: str, rank: int) -> list[tuple[str, Labels]]:
    """Every series a rank can have, for forgetting its history once it expired."""
    lab: Labels = (("job", job), ("rank", str(rank)))
    return [(name, lab) for name in (*STAT_FAMILIES.values(), STEP, LAST_REPORT, RANK_CONNECTED)]


class JobTable:
    """Latest statistics per (job, rank), each job's owner, and the bounds on both; thread-safe.

    A job belongs to the uid whose hello opened it until its last rank expires. A rank is
    held by one connection at a time, and a disconnect clears only that connection's rank.
    Ranks stay in the table (and their series in the store) for ``ttl_s`` after they
    disconnect, so the bounds count them until then: ``max_ranks`` ranks in all and
    ``max_ranks_per_uid`` per uid, ``max_jobs`` jobs and ``max_jobs_per_uid`` per uid, hence
    at most ``SERIES_PER_RANK * max_ranks`` trainer series.
    """

    def __init__(self, ttl_s: float = 60.0, max_ranks: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_ranks = self.max_ranks_per_uid = self.max_jobs = self.max_jobs_per_uid = max_ranks
        self._lock = threading.Lock()
        self._ranks: dict[tuple[str, int], RankState] = {}
        self._owners: dict[str, JobOwner] = {}
        self.reports = 0  # reports taken since start

    def configure(self, cfg: ControlConfig) -> None:
        """Take the TTL and the bounds from the ``[control]`` table."""
        self.ttl_s = cfg.job_ttl_s
        self.max_ranks, self.max_ranks_per_uid = cfg.max_ranks, cfg.max_ranks_per_uid
        self.max_jobs, self.max_jobs_per_uid = cfg.max_jobs, cfg.max_jobs_per_uid

    def connect(self, job: str, rank: int, *, uid: int, pid: int, cid: int, leader: bool = False,
                uuid: str = "") -> Refusal | None:
        """Give (job, rank) to connection ``cid`` of peer (uid, pid); a Refusal when it may not have it."""
        with self._lock:
            owner = self._owners.get(job)
            if owner is not None and owner.uid != uid:
                return "not_owner", f"job {job} belongs to uid {owner.uid}; uid {uid} may not join it"
            st = self._ranks.get((job, rank))
            if st is not None and st.connected:
                return "rank_taken", f"job {job} rank {rank} is already connected (pid {st.pid})"
            if st is None:
                why = self._over_bounds(uid, new_job=owner is None)
                if why is not None:
                    return why
                if owner is None:
                    owner = self._owners[job] = JobOwner(uid, pid)
                owner.ranks += 1
                st = self._ranks[(job, rank)] = RankState()
            st.connected, st.cid, st.pid, st.leader, st.uuid = True, cid, pid, leader, uuid
            return None

    def _over_bounds(self, uid: int, *, new_job: bool) -> Refusal | None:
        mine = [o for o in self._owners.values() if o.uid == uid]
        if new_job and len(self._owners) >= self.max_jobs:
            return "too_many_jobs", f"more than {self.max_jobs} jobs known (control.max_jobs)"
        if new_job and len(mine) >= self.max_jobs_per_uid:
            return "too_many_jobs", f"uid {uid} has {len(mine)} jobs, the most allowed (control.max_jobs_per_uid)"
        if len(self._ranks) >= self.max_ranks:
            return "too_many_ranks", f"more than {self.max_ranks} ranks known (control.max_ranks)"
        ranks = sum(o.ranks for o in mine)
        if ranks >= self.max_ranks_per_uid:
            return "too_many_ranks", f"uid {uid} has {ranks} ranks, the most allowed (control.max_ranks_per_uid)"
        return None

    def disconnect(self, job: str, rank: int, cid: int, now: float) -> None:
        """Connection ``cid`` closed: its rank, if it still holds it, is no longer connected."""
        with self._lock:
            st = self._ranks.get((job, rank))
            if st is not None and st.connected and st.cid == cid:
                st.connected, st.cid, st.leader, st.gone_at = False, 0, False, now

    def leader(self, job: str) -> int | None:
        """The connection id of ``job``'s leader (its rank 0, which said it leads), or None."""
        with self._lock:
            st = self._ranks.get((job, 0))
            return st.cid if st is not None and st.connected and st.leader else None

    def owner(self, job: str) -> JobOwner | None:
        """Who opened ``job`` (None when it is not in the table)."""
        with self._lock:
            owner = self._owners.get(job)
            return None if owner is None else JobOwner(owner.uid, owner.pid, owner.ranks)

    def pids(self, job: str) -> dict[int, int]:
        """The peer pid of each connected rank of ``job``."""
        with self._lock:
            return {r: st.pid for (j, r), st in self._ranks.items() if j == job and st.connected}

    def claims(self) -> list[RankClaim]:
        """Every connected rank with its peer pid and reported UUID, for placing ranks on GPUs."""
        with self._lock:
            return [RankClaim(j, r, st.pid, st.uuid) for (j, r), st in self._ranks.items() if st.connected]

    def update(self, job: str, rank: int, step: int, t: float, stats: dict[str, float],
               rank_times: dict[int, tuple[float, float]] | None = None) -> None:
        """Take one report of a connected rank: its step, the report's time, its statistics and
        the (compute, wait) seconds per step of the job's ranks that it carried, if any."""
        with self._lock:
            self.reports += 1
            st = self._ranks.get((job, rank))
            if st is not None:
                st.step, st.t = step, t
                st.stats.update(stats)
                st.rank_times = rank_times or st.rank_times

    def rank_times(self, job: str) -> dict[int, tuple[float, float]]:
        """The job's ranks' (compute_s, wait_s) per step from its newest report that carried them,
        so also the ranks on other nodes; empty when no connected rank sent them."""
        with self._lock:
            held = [st for (j, _), st in self._ranks.items() if j == job and st.connected and st.rank_times]
            return dict(max(held, key=lambda st: st.t).rank_times) if held else {}

    def jobs(self) -> dict[str, list[int]]:
        """Connected ranks per job."""
        with self._lock:
            out: dict[str, list[int]] = {}
            for (job, rank), st in self._ranks.items():
                if st.connected:
                    out.setdefault(job, []).append(rank)
        return {j: sorted(r) for j, r in sorted(out.items())}

    def expire(self, now: float) -> list[tuple[str, int]]:
        """Forget ranks disconnected for longer than the TTL, and jobs left with none; returns the ranks."""
        with self._lock:
            gone = [k for k, st in self._ranks.items() if not st.connected and now - st.gone_at > self.ttl_s]
            for job, rank in gone:
                del self._ranks[(job, rank)]
                owner = self._owners[job]
                owner.ranks -= 1
                if owner.ranks <= 0:
                    del self._owners[job]
        return gone

    def samples(self) -> list[Sample]:
        with self._lock:
            items = sorted(self._ranks.items())
            out: list[Sample] = []
            for (job, rank), st in items:
                lab: Labels = (("job", job), ("rank", str(rank)))
                out.append((RANK_CONNECTED, lab, 1.0 if st.connected else 0.0))
                if st.t:
                    out.append((STEP, lab, float(st.step)))
                    out.append((LAST_REPORT, lab, st.t))
                for key, value in st.stats.items():
                    out.append((STAT_FAMILIES[key], lab, value))
            return out

    def latest(self, job: str) -> dict[int, dict[str, float]]:
        """Latest stats per rank of one job (for the tuner's observation)."""
        with self._lock:
            return {r: dict(st.stats) for (j, r), st in self._ranks.items() if j == job}
