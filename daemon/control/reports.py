"""Trainer reports as series: the latest statistics per (job, rank), published each tick.

Reports arrive far more often than the collection tick (a rank may report many times a
second); each one only replaces that rank's latest values here, and the control server
publishes the whole table under source ``trainer`` once per tick, so the store's ring
buffers hold one point per tick and a scrape costs nothing extra.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from gputuned.collectors import families as F
from gputuned.collectors.families import Labels, Sample

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
    stats: dict[str, float] = field(default_factory=dict)


def series_keys(job: str, rank: int) -> list[tuple[str, Labels]]:
    """Every series a rank can have, for forgetting its history once it expired."""
    lab: Labels = (("job", job), ("rank", str(rank)))
    return [(name, lab) for name in (*STAT_FAMILIES.values(), STEP, LAST_REPORT, RANK_CONNECTED)]


class JobTable:
    """Latest statistics per (job, rank); thread-safe."""

    def __init__(self, ttl_s: float = 60.0, max_ranks: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_ranks = max_ranks
        self._lock = threading.Lock()
        self._ranks: dict[tuple[str, int], RankState] = {}
        self.reports = 0  # reports taken since start

    def connect(self, job: str, rank: int) -> bool:
        """Mark a rank connected; False when the table is full (too many distinct ranks)."""
        with self._lock:
            if (job, rank) not in self._ranks and len(self._ranks) >= self.max_ranks:
                return False
            st = self._ranks.setdefault((job, rank), RankState())
            st.connected = True
            return True

    def disconnect(self, job: str, rank: int, now: float) -> None:
        with self._lock:
            st = self._ranks.get((job, rank))
            if st is not None:
                st.connected = False
                st.gone_at = now

    def update(self, job: str, rank: int, step: int, t: float, stats: dict[str, float]) -> None:
        """Take one report of a rank: its step, the report's time and its statistics."""
        with self._lock:
            self.reports += 1
            st = self._ranks.setdefault((job, rank), RankState())
            st.step = step
            st.t = t
            st.stats.update(stats)

    def jobs(self) -> dict[str, list[int]]:
        """Connected ranks per job."""
        with self._lock:
            out: dict[str, list[int]] = {}
            for (job, rank), st in self._ranks.items():
                if st.connected:
                    out.setdefault(job, []).append(rank)
        return {j: sorted(r) for j, r in sorted(out.items())}

    def expire(self, now: float) -> list[tuple[str, int]]:
        """Forget ranks disconnected for longer than the TTL; returns them."""
        with self._lock:
            gone = [k for k, st in self._ranks.items() if not st.connected and now - st.gone_at > self.ttl_s]
            for key in gone:
                del self._ranks[key]
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
