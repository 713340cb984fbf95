"""The Zeus-trace bench: every policy on every job of a GPU, the job recurring, averaged over seeds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from gputuned.tuner.zeus.agent import Chooser, GputunedPolicy
from gputuned.tuner.zeus.baselines import (
    DefaultPolicy,
    OraclePolicy,
    RecurringPolicy,
    ZeusStylePolicy,
    default_time_s,
)
from gputuned.tuner.zeus.objectives import Objective, ZeusCost
from gputuned.tuner.zeus.run import TraceRun
from gputuned.tuner.zeus.traces import JobTrace, load_gpu

logger = logging.getLogger(__name__)

POLICIES = ("default", "oracle", "zeus", "gputuned")
#: How many times each job recurs in one bench trial (Zeus's setting is a recurring job).
DEFAULT_RECURRENCES = 50


def run_job(
    trace: JobTrace,
    policy: RecurringPolicy,
    objective: Objective,
    recurrences: int,
    rng: np.random.Generator,
    noise: float = 0.02,
) -> tuple[float, float, float]:
    """Run ``recurrences`` recurrences; return mean (energy J, time s, cost) per recurrence."""
    ref = default_time_s(trace)
    energy = time = cost = 0.0
    for _ in range(recurrences):
        run = TraceRun(trace, rng, noise=noise)
        policy.run_recurrence(run, objective, ref)
        if not run.done:
            raise RuntimeError(f"{policy.name} left {trace.job} short of its target")
        energy += run.energy_j
        time += run.time_s
        cost += run.cost(objective, ref)
    return energy / recurrences, time / recurrences, cost / recurrences


def make_policy(name: str, trace: JobTrace, rng: np.random.Generator, chooser: Chooser | None) -> RecurringPolicy:
    """A fresh policy (no memory of earlier trials)."""
    if name == "default":
        return DefaultPolicy()
    if name == "oracle":
        return OraclePolicy(trace)
    if name == "zeus":
        return ZeusStylePolicy(rng)
    if name == "gputuned":
        if chooser is None:
            raise ValueError("the gputuned policy needs a chooser")
        return GputunedPolicy(chooser, rng=rng)
    raise ValueError(f"unknown policy {name!r}")


def bench_gpu(
    trace_dir: Path,
    gpu: str,
    eta: float = 0.5,
    seeds: int = 3,
    recurrences: int = DEFAULT_RECURRENCES,
    chooser: Chooser | None = None,
    policies: tuple[str, ...] = POLICIES,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run every policy on every job of ``gpu``; returns the bench JSON document."""
    traces = load_gpu(trace_dir, gpu)
    return bench_traces(traces, gpu, eta, range(seeds), recurrences, chooser, policies, progress)


def bench_traces(
    traces: dict[str, JobTrace],
    gpu: str,
    eta: float = 0.5,
    seeds: Iterable[int] = range(3),
    recurrences: int = DEFAULT_RECURRENCES,
    chooser: Chooser | None = None,
    policies: tuple[str, ...] = POLICIES,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run every policy on every given job (measured or synthetic GPU); the bench JSON document."""
    objective = ZeusCost(eta)
    seeds = list(seeds)
    results: list[dict] = []
    for job, trace in traces.items():
        for name in policies:
            sums = np.zeros(3)
            for seed in seeds:
                rng = np.random.default_rng(seed)
                policy = make_policy(name, trace, np.random.default_rng(10_000 + seed), chooser)
                sums += run_job(trace, policy, objective, recurrences, rng)
            e, t, c = sums / len(seeds)
            results.append({"job": job, "policy": name, "energy_j": e, "time_s": t, "cost": c})
            if progress is not None:
                progress(f"{gpu}/{job}/{name}")
    return {"gpu": gpu, "eta_knob": eta, "results": results}


def savings(doc: dict) -> dict[str, float]:
    """Mean over jobs of each policy's cost saving over default (1 - cost / default cost)."""
    by_job: dict[str, dict[str, float]] = {}
    for r in doc["results"]:
        by_job.setdefault(r["job"], {})[r["policy"]] = r["cost"]
    out: dict[str, float] = {}
    for name in {r["policy"] for r in doc["results"]} - {"default"}:
        vals = [1.0 - c[name] / c["default"] for c in by_job.values() if name in c and "default" in c]
        out[name] = float(np.mean(vals)) if vals else float("nan")
    return out
