"""The forecast worker process: Prophet fits at low priority, away from the collection loop.

The parent sends one job at a time (a bounded, downsampled history per series) through a
``multiprocessing`` queue; the worker fits each series in turn and sends back, per series,
a forecast grid (times, yhat, lower, upper) reaching past the next refit. Prophet, pandas
and cmdstanpy are imported here only, inside the child.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import resource
import signal
import time
from collections import deque
from typing import Any

logger = logging.getLogger(__name__)

Job = dict[str, Any]
Grid = dict[str, list[float]]
MAX_GRID = 2000


def prophet_fit(t: list[float], y: list[float], grid: list[float], interval_width: float) -> Grid:
    """Fit Prophet to ``(t, y)`` (unix seconds) and predict yhat and its interval on ``grid``."""
    import pandas as pd
    from prophet import Prophet

    _quiet()  # cmdstanpy sets its own level when first imported
    span = t[-1] - t[0]
    model = Prophet(
        interval_width=interval_width,
        daily_seasonality=span >= 2 * 86400,
        weekly_seasonality=span >= 14 * 86400,
        yearly_seasonality=False,
        uncertainty_samples=200,
    )
    df = pd.DataFrame({"ds": pd.to_datetime(t, unit="s"), "y": y})
    model.fit(df)
    out = model.predict(pd.DataFrame({"ds": pd.to_datetime(grid, unit="s")}))
    return {
        "t": list(grid),
        "yhat": out["yhat"].tolist(),
        "lo": out["yhat_lower"].tolist(),
        "hi": out["yhat_upper"].tolist(),
    }


def linear_fit(t: list[float], y: list[float], grid: list[float], interval_width: float) -> Grid:
    """Least-squares trend with a normal residual interval: the cheap stand-in for Prophet."""
    from statistics import NormalDist

    import numpy as np

    tt = np.asarray(t) - t[-1]
    yy = np.asarray(y)
    slope, icpt = np.polyfit(tt, yy, 1)
    resid = yy - (slope * tt + icpt)
    half = NormalDist().inv_cdf(0.5 + interval_width / 2) * max(float(resid.std(ddof=2)), 1e-12)
    yhat = slope * (np.asarray(grid) - t[-1]) + icpt
    return {"t": list(grid), "yhat": yhat.tolist(), "lo": (yhat - half).tolist(), "hi": (yhat + half).tolist()}


FITTERS = {"prophet": prophet_fit, "linear": linear_fit}


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process and by its waited-for children (CmdStan)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), kids.ru_utime + kids.ru_stime


def _quiet() -> None:
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_job(job: Job, send: Any) -> dict[str, float]:
    """Fit every series of a job, sending ``("forecast", key, grid)`` per series as it is done."""
    fit = FITTERS[job["fitter"]]
    stats = {"series": 0.0, "failed": 0.0, "fit_seconds": 0.0, "child_seconds": 0.0}
    for key, (t, y) in job["series"].items():
        step = job["step_s"]
        start = t[-1] + step
        n = int(math.ceil((job["until"] - start) / step)) + 1
        if n > MAX_GRID:  # a long refit period: coarser grid, bounded predict cost
            step *= n / MAX_GRID
            n = MAX_GRID
        grid = [start + i * step for i in range(max(n, 2))]
        own0, kids0 = cpu_seconds()
        try:
            result = fit(t, y, grid, job["interval_width"])
        except Exception as e:  # one bad series must not stop the others
            stats["failed"] += 1
            send(("error", key, f"{type(e).__name__}: {e}"))
            continue
        own1, kids1 = cpu_seconds()
        # CmdStan runs as a child process: its CPU is part of the fit's cost
        result["fit_s"] = [(own1 - own0) + (kids1 - kids0)]
        stats["series"] += 1
        stats["fit_seconds"] += result["fit_s"][0]
        stats["child_seconds"] += kids1 - kids0
        send(("forecast", key, result))
    return stats


class InlineWorker:
    """The worker process's part played in this process: a job is fitted when it is put.

    Deterministic virtual-time runs (benches, tests) attach it with
    ``ForecastService.start_inline``; ``cache`` (shared between services) keeps each job's
    answer, so runs that differ only in what they do with a forecast fit once.
    """

    def __init__(self, cache: dict[Any, list[Any]] | None = None) -> None:
        self._out: deque[Any] = deque()
        self.cache = {} if cache is None else cache
        _quiet()

    def put_nowait(self, job: Job | None) -> None:
        """Fit ``job`` now (``None``, the stop request, is ignored)."""
        if job is None:
            return
        ck = (job["fitter"], job["until"], tuple((k, v[0][-1], len(v[0])) for k, v in job["series"].items()))
        msgs = self.cache.get(ck)
        if msgs is None:
            msgs = []
            stats = run_job(job, msgs.append)
            msgs.append(("done", job["id"], stats))
            self.cache[ck] = msgs
        self._out.extend(msgs)

    def get_nowait(self) -> Any:
        """The next answer, as the results queue would give it."""
        if not self._out:
            raise queue.Empty
        return self._out.popleft()

    def is_alive(self) -> bool:
        """Always: it lives in this process."""
        return True


def worker_main(jobs: Any, results: Any, nice: int) -> None:
    """Child process entry: lower priority, then serve jobs until ``None`` arrives."""
    # Ctrl-C in a terminal reaches the whole process group; the daemon stops the worker itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(nice)
    _quiet()
    while True:
        job = jobs.get()
        if job is None:
            return
        began = time.monotonic()
        stats = run_job(job, results.put)
        stats["wall_seconds"] = time.monotonic() - began
        results.put(("done", job["id"], stats))
