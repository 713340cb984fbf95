"""A short capture on every rank on request: each rank's timing, a torch.profiler trace, one summary.

The leader receives a ``profile_steps`` decision and every rank starts the capture at the same
agreed step (the decision exchange). Each rank times its steps (wall period, data-loader wait,
communication wait) and runs torch.profiler, so the profiler's own cost is the same on every
rank and no rank looks slow for being profiled. The capture ends at an agreed step too (the
start of a decision exchange, once it has its steps and has seen ``MIN_EXCHANGES`` exchanges,
so it spans about that many seconds of wall time), where the ranks gather their timings on
the leader, which summarises them (:mod:`gputuned.trainer_plugin.rootcause`) and answers the
daemon. Each rank keeps its trace file in the trace folder, rotated.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gputuned.trainer_plugin.rootcause import analyse, describe_shares, rank_timing

logger = logging.getLogger(__name__)

#: a capture spans at least this many decision exchanges (about sync_period_s each)
MIN_EXCHANGES = 2
#: trace files kept in the trace folder, and their total size at most
KEEP_TRACES = 16
KEEP_TRACE_BYTES = 512 << 20
TRACE_PREFIX = "gputuned-trace-"


def rotate(folder: Path, keep: int = KEEP_TRACES, max_bytes: int = KEEP_TRACE_BYTES) -> list[Path]:
    """Delete the oldest trace files beyond ``keep`` files or ``max_bytes`` in all; returns those deleted."""
    files = []
    for p in folder.glob(f"{TRACE_PREFIX}*.json"):
        try:
            st = p.stat()
        except OSError:
            continue
        files.append((st.st_mtime, st.st_size, p))
    files.sort(reverse=True)
    kept_bytes, gone = 0, []
    for n, (_, size, p) in enumerate(files):
        kept_bytes += size
        if n >= keep or kept_bytes > max_bytes:
            try:
                p.unlink()
                gone.append(p)
            except OSError as e:
                logger.debug("cannot delete old trace %s: %s", p, e)
    return gone


def default_trace_dir() -> Path:
    """Where traces go when the loop names no folder: ``gputuned-traces-<uid>`` in the temp dir."""
    return Path(tempfile.gettempdir()) / f"gputuned-traces-{os.getuid()}"


def device_of(rank: int) -> tuple[str, int | None]:
    """This rank's device in words and its GPU index (CUDA's, or by local rank on a CPU run)."""
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        return f"cuda:{index}", index
    local = os.environ.get("LOCAL_RANK")
    return "cpu", int(local) if local is not None and local.isdigit() else rank


class ProfileCapture:
    """One rank's capture: step timing and a torch.profiler run, summarised on the leader."""

    def __init__(self, decision_id: str, steps: int, rank: int, trace_dir: str | None, job: str = "job",
                 probe: Any = None, top: int = 10) -> None:
        self.decision_id = decision_id  # the leader's (the daemon's request); empty on other ranks
        self.steps = steps
        self.rank = rank
        self.top = top
        self.trace_dir = Path(trace_dir) if trace_dir else default_trace_dir()
        self.job = job
        self._probe = probe if hasattr(probe, "every_step") else None
        if self._probe is not None:
            self._probe.every_step(True)  # the exposed communication time of every captured step
        self.done_steps = 0
        self.exchanges = 0
        self.period = self.step_time = self.data_wait = self.comm_wait = 0.0
        self._t0 = time.time()
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._prof: Any = torch.profiler.profile(activities=activities, record_shapes=False)
        self._prof.__enter__()

    def add_step(self, period: float, step_time: float, data_wait: float, comm_wait: float) -> None:
        """Count one captured step's wall period, time inside the step, data wait and communication wait."""
        self.done_steps += 1
        self.period += period
        self.step_time += step_time
        self.data_wait += data_wait
        self.comm_wait += comm_wait

    def add_wait(self, seconds: float) -> None:
        """Add time this rank waited for the others outside the all-reduce (the decision exchange)."""
        self.comm_wait += seconds

    def ends_here(self) -> bool:
        """At the start of a decision exchange (the same step on every rank): True when the capture ends."""
        self.exchanges += 1
        return self.done_steps >= self.steps and self.exchanges >= MIN_EXCHANGES

    def finish(self, distributed: bool, context: dict[str, Any], client: Any = None, step: int = 0) -> dict[str, Any] | None:
        """Stop, keep the trace, gather every rank's timing on the leader (collective), which answers ``client``.

        Returns the leader's summary (None on other ranks).
        """
        prof = self._prof
        self.abandon()
        device, gpu = device_of(self.rank)
        mine = rank_timing(self.rank, self.done_steps, self.period, self.step_time, self.data_wait, self.comm_wait,
                           device, gpu)
        mine["top_ops"] = self._top_ops(prof)
        mine["trace"] = self._save_trace(prof)
        gathered: list[Any] = [mine]
        if distributed:
            gathered = [None] * dist.get_world_size() if self.rank == 0 else []
            dist.gather_object(mine, gathered if self.rank == 0 else None, dst=0)
        if self.rank != 0:
            return None
        summary = self._summary([g for g in gathered if g is not None], context)
        self.answer(summary, client, step)
        return summary

    def answer(self, summary: dict[str, Any], client: Any, step: int) -> None:
        """Log the leader's summary and send it to the daemon that asked for it."""
        logger.info("profile %s: %s; %s", self.decision_id or "(local)", describe_shares(summary),
                    "; ".join(summary["suggestions"]))
        if client is not None and self.decision_id:
            client.profile_result(self.decision_id, summary)
            client.ack(self.decision_id, True, applied_step=step)

    def _summary(self, ranks: list[dict[str, Any]], context: dict[str, Any]) -> dict[str, Any]:
        by_rank = {r["rank"]: r for r in ranks}
        summary: dict[str, Any] = {"steps": self.done_steps, "t": self._t0, "step_time_s": by_rank[0]["period_s"],
                                   "context": {k: context[k] for k in ("compression", "precision", "device")
                                               if k in context},
                                   "ranks": [{k: v for k, v in r.items() if k not in ("top_ops", "trace")}
                                             for r in sorted(ranks, key=lambda r: r["rank"])]}
        out = analyse(summary)
        # the operators and traces of the rank that explains the step, and of the leader
        shown = out["straggler"]["rank"] if out["straggler"] else 0
        out["profiled_rank"] = shown
        out["top_ops"] = by_rank[shown]["top_ops"]
        out["traces"] = {str(r): by_rank[r]["trace"] for r in sorted({0, shown}) if by_rank[r]["trace"]}
        return out

    def _top_ops(self, prof: Any) -> list[list[Any]]:
        use_cuda = torch.cuda.is_available()
        rows = []
        for evt in prof.key_averages():
            t = evt.self_device_time_total if use_cuda else evt.self_cpu_time_total
            if t > 0:
                rows.append((evt.key, float(t)))
        total = sum(t for _, t in rows) or 1.0
        rows.sort(key=lambda r: -r[1])
        return [[name[:80], round(t / total, 4)] for name, t in rows[:self.top]]

    def _save_trace(self, prof: Any) -> str | None:
        """Write this rank's chrome trace into the trace folder (rotated); its path, or None."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._t0))
        path = self.trace_dir / f"{TRACE_PREFIX}{self.job}-{stamp}-{self.decision_id}-rank{self.rank}.json"
        try:
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(path))
            rotate(self.trace_dir)
        except OSError as e:
            logger.warning("profile %s: cannot write the trace to %s: %s", self.decision_id, self.trace_dir, e)
            return None
        return str(path)

    def abandon(self) -> None:
        """Stop the profiler (and the probe's every-step timing); without :meth:`finish`, no summary."""
        if self._probe is not None:
            self._probe.every_step(False)
            self._probe = None
        if self._prof is not None:
            self._prof.__exit__(None, None, None)
            self._prof = None
