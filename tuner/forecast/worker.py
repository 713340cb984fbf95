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
import signal
import time
from typing import Any

logger = logging.getLogger(__name__)

Job = dict[str, Any]
Grid = dict[str, list[float]]
MAX_GRID = 2000


def prophet_fit(t: list[float], y: list[float], grid: list[float], interval_width: float) -> Grid:
    """Fit Prophet to ``(t, y)`` (unix seconds) and predict yhat and its interval on ``grid``."""
    import pandas as pd
    from prophet import Prophet

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


def _quiet() -> None:
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_job(job: Job, send: Any) -> dict[str, float]:
    """Fit every series of a job, sending ``("forecast", key, grid)`` per series as it is done."""
    fit = FITTERS[job["fitter"]]
    stats = {"series": 0.0, "failed": 0.0, "fit_seconds": 0.0}
    for key, (t, y) in job["series"].items():
        step = job["step_s"]
        start = t[-1] + step
        n = int(math.ceil((job["until"] - start) / step)) + 1
        if n > MAX_GRID:  # a long refit period: coarser grid, bounded predict cost
            step *= n / MAX_GRID
            n = MAX_GRID
        grid = [start + i * step for i in range(max(n, 2))]
        began = time.process_time()
        try:
            result = fit(t, y, grid, job["interval_width"])
        except Exception as e:  # one bad series must not stop the others
            stats["failed"] += 1
            send(("error", key, f"{type(e).__name__}: {e}"))
            continue
        result["fit_s"] = [time.process_time() - began]
        stats["series"] += 1
        stats["fit_seconds"] += result["fit_s"][0]
        send(("forecast", key, result))
    return stats


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
