"""The simulated job's voice on the control socket: reports out, decisions in.

:class:`SimTrainerReporter` does what the trainer plugin does inside a real PyTorch loop,
for the simulated job: it sends ``report`` messages with the job's step statistics and
applies ``decision`` messages (batch size, profile) to the job, acknowledging each. It
talks through any client with the :class:`ReportClient` methods; :func:`connect` builds one
with the factory its caller injects (the composition root passes the trainer plugin's
torch-free client class), so the daemon sees a simulated job exactly as it sees a real one.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Protocol

from gputuned.collectors.sim.physics import PhysicsBackend

logger = logging.getLogger(__name__)


class ReportClient(Protocol):
    """What the reporter needs from a control-socket client (DaemonClient has it)."""

    def report(self, step: int, steps: int, stats: dict[str, Any]) -> None: ...

    def poll_decision(self) -> dict[str, Any] | None: ...

    def ack(self, id: str, ok: bool, applied_step: int | None = None, error: str | None = None) -> None: ...  # noqa: A002

    def profile_result(self, id: str, summary: dict[str, Any]) -> None: ...  # noqa: A002

    def wait_connected(self, timeout: float) -> bool: ...

    def close(self, timeout: float = 1.0) -> None: ...


class ClientFactory(Protocol):
    """Builds a connected client for one rank of a job (the plugin's DaemonClient class is one)."""

    def __call__(self, path: str, *, job: str, rank: int, world_size: int, batch_size: int,
                 batch_mode: str) -> ReportClient: ...


def report_message_stats(backend: PhysicsBackend) -> dict[str, Any]:
    """The ``report.stats`` dict of rank 0 since the last call (syncs the backend first)."""
    if backend.job is None:
        raise ValueError("the simulated node runs no job")
    backend.sync()
    return backend.job.report_stats()


def profile_summary(backend: PhysicsBackend) -> dict[str, Any]:
    """A ``profile_result.summary`` from the job's last step: each rank's timing and where rank 0's time goes.

    Ranks wait for the slowest one (their sync wait) and then for the all-reduce; both are
    waits in communication as a rank measures them, so the daemon's analysis tells them apart.
    """
    job = backend.job
    if job is None or job.step_s <= 0:
        return {"ranks": [], "top_ops": []}
    step = job.step_s
    ranks = [{"rank": i, "steps": 1, "period_s": step, "step_s": step - r["data_wait_s"],
              "data_wait_s": r["data_wait_s"], "comm_s": r["sync_wait_s"] + job.comm_s, "device": f"cuda:{i}", "gpu": i}
             for i, r in enumerate(job.rank_stats())]
    r0 = job.ranks[0]
    return {
        "ranks": ranks,
        "top_ops": [["gemm/conv (SM-bound)", r0.sm_s / step], ["memory-bound kernels", (r0.busy_s - r0.sm_s) / step],
                    ["host (python, launches, optimizer)", r0.host_s / step]],
    }


class SimTrainerReporter:
    """Pumps one rank's reports into a client and, for the leader (rank 0), its decisions into the job."""

    def __init__(self, backend: PhysicsBackend, client: ReportClient, rank: int = 0) -> None:
        if backend.job is None:
            raise ValueError("the simulated node runs no job")
        self.backend = backend
        self.client = client
        self.rank = rank
        self.decisions: collections.Counter[str] = collections.Counter()  # answered, by kind
        self._last_steps = 0.0

    def pump(self) -> None:
        """Send one report for the steps since the last pump and apply pending decisions."""
        self.report()
        self.apply_decisions()

    def report(self) -> None:
        """Send this rank's report for the steps since the last one (the leader's full stats)."""
        job = self.backend.job
        assert job is not None
        if self.rank == 0:
            stats = report_message_stats(self.backend)
        else:  # other ranks report their own compute and data-wait times
            self.backend.sync()
            r = job.rank_stats()[self.rank]
            stats = {"step_time_s": job.step_s, "compute_time_s": r["compute_time_s"], "data_wait_s": r["data_wait_s"],
                     "batch_size": float(job.batch_size)}
        steps = max(1, int(job.steps_total - self._last_steps))
        self._last_steps = job.steps_total
        self.client.report(int(job.steps_total), steps, stats)

    def apply_decisions(self, wait_s: float = 0.0) -> int:
        """Apply the decisions received, waiting up to ``wait_s`` s for the first; returns how many."""
        deadline = time.monotonic() + wait_s
        n = 0
        while True:
            d = self.client.poll_decision()
            if d is None:
                if n or time.monotonic() > deadline:
                    return n
                time.sleep(0.0005)
                continue
            self._apply(d)
            n += 1

    def _apply(self, decision: dict[str, Any]) -> None:
        job = self.backend.job
        assert job is not None
        did = str(decision.get("id", ""))
        kind = next((k for k in ("batch_size", "profile_steps") if k in decision), "unknown")
        self.decisions[kind] += 1
        if kind == "batch_size":
            ok, err = job.set_batch_size(int(decision["batch_size"]))
            self.client.ack(did, ok, applied_step=int(job.steps_total) + 1 if ok else None, error=err or None)
        elif kind == "profile_steps":
            self.client.ack(did, True, applied_step=int(job.steps_total) + 1)
            self.client.profile_result(did, profile_summary(self.backend))
        else:
            self.client.ack(did, False, error="unknown decision")

    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Pump every ``interval_s`` seconds of wall time until ``stop`` is set (live nodes)."""
        while not stop.wait(interval_s):
            try:
                self.pump()
            except Exception:  # the simulated job must never take the daemon down
                logger.exception("simulated trainer report failed")


def connect(backend: PhysicsBackend, socket_path: str, job_name: str = "sim-job", *,
            make_client: ClientFactory, rank: int = 0) -> SimTrainerReporter:
    """A reporter speaking to the daemon at ``socket_path`` as ``rank``, through ``make_client``."""
    job = backend.job
    if job is None:
        raise ValueError("the simulated node runs no job")
    client = make_client(socket_path, job=job_name, rank=rank, world_size=job.world_size,
                         batch_size=job.batch_size, batch_mode="global")
    return SimTrainerReporter(backend, client, rank)
