"""Fit the simulator to measured traces (Zeus NSDI'23) and report held-out error.

Per GPU the fit chooses the power constants (P0, v_min, knee, cap floor); per
(workload, GPU) the kernel dynamic power A and, per measured batch size, the host,
SM-bound and memory-bound step times. Epoch time is ``N / B * step`` and average power
``P0 + A g(x) u`` with the clock ratio ``x`` set by power capping, exactly the equations
the live simulator runs (:mod:`.gpu_model`). Rows are held out at random (seeded), the rest
fitted, and the held-out rows are predicted through :class:`StepTiming` like at run time.
The per-batch step-time fit is a weighted two-parameter non-negative least squares (closed
form, numpy only); the rest is a grid search refined by coordinate descent.
"""

from __future__ import annotations

import csv
import itertools
import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gputuned.collectors.sim.gpu_model import (
    Phase,
    PowerParams,
    cap_clocks,
    dvfs_factor_array,
    snap_clock_mhz,
    static_power,
    step_time_energy,
)
from gputuned.collectors.sim.job import MEMORY_PHASE_SM_SHARE, step_phases
from gputuned.collectors.sim.state import GPUProfile, load_profile
from gputuned.collectors.sim.workload import (
    StepTiming,
    Workload,
    available_workloads,
    load_workload,
)

logger = logging.getLogger(__name__)

#: Zeus file suffix -> simulator profile key.
#: Weight of squared relative epoch-time error against that of average power in the fit.
TIME_WEIGHT = 2.0
#: Largest relative change of kernel power per doubling of the batch size the fit considers.
POWER_SLOPE_MAX = 0.3

#: Averaging windows of the power-cap controller the fit chooses from (seconds; the controller
#: reads power every few milliseconds, so no window is shorter than 10 ms).
CAP_WINDOWS_S = (0.01, 0.03, 0.1, 0.3, 1.0)

ZEUS_GPUS = {"a40": "a40", "rtx6000": "quadro-rtx-6000", "p100": "p100-pcie-16gb"}


@dataclass
class Rows:
    """Measured rows of one (workload, GPU): batch, limit, epoch time, average power."""

    batch: np.ndarray
    limit_w: np.ndarray
    epoch_s: np.ndarray
    power_w: np.ndarray


def zeus_workloads() -> dict[tuple[str, str], Workload]:
    """Shipped workloads that name a Zeus (dataset, network), keyed by it."""
    out = {}
    for name in available_workloads():
        wl = load_workload(name)
        if wl.zeus:
            out[(wl.zeus["dataset"], wl.zeus["network"])] = wl
    return out


def load_rows(data_dir: Path, gpu: str, workloads: dict[tuple[str, str], Workload]) -> dict[str, Rows]:
    """Read summary_power_<gpu>.csv into rows per workload name."""
    path = data_dir / f"summary_power_{gpu}.csv"
    if not path.is_file():
        raise ValueError(f"{path}: not found (expected the Zeus NSDI'23 traces)")
    acc: dict[str, list[tuple[float, float, float, float]]] = {}
    with path.open() as f:
        for i, r in enumerate(csv.DictReader(f), start=2):
            try:
                key = (r["dataset"], r["network"])
                row = (float(r["batch_size"]), float(r["power_limit"]), float(r["time_per_epoch"]),
                       float(r["average_power"]))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}: row {i}: {e}") from e
            if key in workloads:
                acc.setdefault(workloads[key].name, []).append(row)
    return {n: Rows(*map(np.array, zip(*v, strict=True))) for n, v in sorted(acc.items())}


def _snap(x: np.ndarray, prof: GPUProfile) -> np.ndarray:
    f = prof.sm_clock_max_mhz - np.ceil((prof.sm_clock_max_mhz * (1 - x)) / prof.sm_clock_step_mhz - 1e-9) * prof.sm_clock_step_mhz
    return np.maximum(f, prof.sm_clock_min_mhz) / prof.sm_clock_max_mhz


def _fit_batches(y: np.ndarray, r: np.ndarray, bidx: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """Per batch: non-negative (c, s) minimising sum(((c + s r - y) / y)^2); r is rows x A."""
    w2 = (1.0 / y**2)[:, None]
    ones = np.ones_like(r)
    c = np.zeros((nb, r.shape[1]))
    s = np.zeros((nb, r.shape[1]))
    for b in range(nb):
        m = bidx == b
        if m.sum() < 3:
            c[b] = np.nan
            continue
        rw, yw = r[m], (y[m, None] * ones[m])
        sw = w2[m]
        a11, a12, a22 = sw.sum(0) * 1.0, (sw * rw).sum(0), (sw * rw * rw).sum(0)
        b1, b2 = (sw * yw).sum(0), (sw * rw * yw).sum(0)
        det = a11 * a22 - a12 * a12
        cc = np.where(det > 1e-18, (b1 * a22 - b2 * a12) / np.where(det > 1e-18, det, 1), b1 / a11)
        ss = np.where(det > 1e-18, (a11 * b2 - a12 * b1) / np.where(det > 1e-18, det, 1), 0.0)
        neg_c, neg_s = cc < 0, ss < 0
        cc = np.where(neg_c, 0.0, cc)
        ss = np.where(neg_c, b2 / a22, ss)
        ss = np.where(neg_s, 0.0, ss)
        cc = np.where(neg_s, b1 / a11, cc)
        c[b], s[b] = cc, np.maximum(ss, 0.0)
    return c, s


def _cap_clock_grid(limit_w: np.ndarray, a_grid: np.ndarray, gp: PowerParams) -> np.ndarray:
    """Clock ratio (rows x A grid) whose compute-phase power ``static(x) + A g(x)`` meets each limit."""
    xs = np.linspace(0.0, 1.0, 2001)
    g = dvfs_factor_array(xs, gp.voltage_floor, gp.voltage_knee)
    v = np.sqrt(np.where(xs > 0, g / np.maximum(xs, 1e-12), gp.voltage_floor**2))
    static = gp.base_w + gp.leakage_w * v + gp.clock_tree_w * xs * v * v
    limit = np.maximum(limit_w, gp.cap_floor_w)
    out = np.empty((len(limit), len(a_grid)))
    for j, a in enumerate(a_grid):
        out[:, j] = np.interp(limit, static + a * g, xs, left=0.0, right=1.0)
    return np.clip(out, gp.cap_floor_ratio, 1.0)


def _fit_pair(
    rows: Rows, train: np.ndarray, n: int, prof: GPUProfile, gp: PowerParams
) -> tuple[float, dict[str, Any]]:
    """Best kernel power A and per-batch tables for one (workload, GPU) on training rows."""
    bt = rows.batch[train]
    sizes = np.unique(bt)
    bidx = np.searchsorted(sizes, bt)
    a_grid = np.linspace(2.0, 1.6 * prof.power_limit_max_w, 60)
    x = _snap(_cap_clock_grid(rows.limit_w[train], a_grid, gp), prof)
    r = 1.0 / x
    y = rows.epoch_s[train] * bt / n
    c, s = _fit_batches(y, r, bidx, len(sizes))
    ok = ~np.isnan(c[:, 0])
    cr, sr = c[bidx], s[bidx]
    pred = np.maximum(cr + sr * r, 1e-12)
    gx = a_grid[None, :] * dvfs_factor_array(x, gp.voltage_floor, gp.voltage_knee)
    v2 = gx / a_grid[None, :] / x  # V(x)^2
    gm = a_grid[None, :] * (MEMORY_PHASE_SM_SHARE * v2 + 1.0 - MEMORY_PHASE_SM_SHARE)
    p0 = gp.base_w + gp.leakage_w * np.sqrt(v2) + gp.clock_tree_w * x * v2  # static power at the clock
    p = rows.power_w[train, None]
    yy = (p - p0 - gx * sr * r / pred) / p
    zz = gm * cr / pred / p
    rho = np.zeros_like(c)
    for b in range(len(sizes)):
        m = bidx == b
        rho[b] = np.clip((yy[m] * zz[m]).sum(0) / np.maximum((zz[m] ** 2).sum(0), 1e-12), 0.0, 1.0)
    pp = p0 + (gx * sr * r + gm * rho[bidx] * cr) / pred
    se = TIME_WEIGHT * ((pred - y[:, None]) / y[:, None]) ** 2 + ((pp - p) / p) ** 2
    # kernel power linear in log2(batch): A(b) = A0 (1 + slope log2(b / b_mid)), the best line on the grid
    k = np.flatnonzero(ok)
    eb = np.stack([se[bidx == b].sum(0) for b in k])  # batches x A grid
    lb = np.log2(sizes[k]) - np.log2(sizes[k]).mean()
    slopes = np.linspace(-POWER_SLOPE_MAX, POWER_SLOPE_MAX, 25)
    a_line = a_grid[None, :, None] * (1.0 + slopes[None, None, :] * lb[:, None, None])  # b x A0 x slope
    step_a = a_grid[1] - a_grid[0]
    jj_all = np.clip(np.rint((a_line - a_grid[0]) / step_a), 0, len(a_grid) - 1).astype(int)
    cost = np.take_along_axis(eb[:, :, None], jj_all, axis=1).sum(0)  # A0 x slope
    i0, i1 = np.unravel_index(int(np.argmin(cost)), cost.shape)
    best_j = np.zeros(len(sizes), dtype=int)
    best_j[k] = jj_all[:, i0, i1]
    total = float(cost[i0, i1])
    rows_ok = int(ok[bidx].sum())
    jj = best_j[k]
    table = {
        "batch_sizes": [float(v) for v in sizes[k]],
        "host_s": [float(v) for v in c[k, jj] * (1 - rho[k, jj])],
        "sm_s": [float(v) for v in s[k, jj]],
        "mem_s": [float(v) for v in c[k, jj] * rho[k, jj]],
        "dynamic_power_w": [float(a_grid[j]) for j in jj],
    }
    return total / max(rows_ok, 1), table


def predict(rows: Rows, n: int, prof: GPUProfile, gp: PowerParams, timing: StepTiming) -> tuple[np.ndarray, np.ndarray]:
    """Epoch time and average power of each row, through the live simulator's phase equations."""
    t_out, p_out = np.zeros(len(rows.batch)), np.zeros(len(rows.batch))
    for k, (b, limit) in enumerate(zip(rows.batch, rows.limit_w, strict=True)):
        host, sm, mem = timing.at(b)
        a = timing.power_at(b)
        phases = (*step_phases(sm, mem, a), Phase("idle", host, 0.0, 0.0))
        xs = [snap_clock_mhz(x, prof) / prof.sm_clock_max_mhz for x in cap_clocks(phases, float(limit), gp)]
        busy = phases[:2]
        step, energy = step_time_energy(busy, xs[:2], gp)
        energy += static_power(max(xs), gp) * host
        t_out[k], p_out[k] = n / b * (step + host), energy / (step + host)
    return t_out, p_out


def fit_gpu(
    pairs: dict[str, Rows], train: dict[str, np.ndarray], sizes: dict[str, int], prof: GPUProfile,
    fixed: dict[str, float] | None = None,
) -> tuple[PowerParams, dict[str, dict[str, Any]]]:
    """Grid search then coordinate descent over the GPU's power constants (``fixed`` ones held)."""
    fixed = fixed or {}
    floor_min = prof.sm_clock_min_mhz / prof.sm_clock_max_mhz
    p_min = min(float(r.power_w.min()) for r in pairs.values())
    grids = {
        "active_idle_w": list(np.linspace(0.5, 1.3, 33) * p_min),
        "voltage_floor": list(np.linspace(0.4, 1.0, 13)),
        "voltage_knee": list(np.linspace(0.1, 0.9, 17)),
        "cap_floor_ratio": sorted({floor_min, *[v for v in np.linspace(0.15, 0.7, 12) if v > floor_min]}),
        "cap_floor_w": [0.0, *list(prof.power_limit_min_w * np.linspace(1.0, 1.3, 7))],
    }
    grids.update({k: [v] for k, v in fixed.items() if k in grids})
    held = {k: v for k, v in fixed.items() if k not in grids}

    def loss(gp: PowerParams) -> float:
        return sum(_fit_pair(pairs[w], train[w], sizes[w], prof, gp)[0] for w in pairs)

    coarse = {k: [v[int(i)] for i in np.unique(np.linspace(0, len(v) - 1, 3).round())] for k, v in grids.items()}
    best = min(
        (PowerParams(*vals, **held) for vals in itertools.product(*coarse.values())),
        key=loss,
    )
    best_loss = loss(best)
    for _ in range(4):
        improved = False
        for key, values in grids.items():
            for v in values:
                cand = PowerParams(**{**best.as_dict(), key: float(v)})
                cl = loss(cand)
                if cl < best_loss - 1e-12:
                    best, best_loss, improved = cand, cl, True
        if not improved:
            break
    tables = {w: _fit_pair(pairs[w], train[w], sizes[w], prof, best)[1] for w in pairs}
    return best, tables


def _timing(table: dict[str, Any]) -> StepTiming:
    return StepTiming(*(tuple(table[k]) for k in ("batch_sizes", "host_s", "sm_s", "mem_s", "dynamic_power_w")))


def fit_cap_window(
    pairs: dict[str, Rows], train: dict[str, np.ndarray], sizes: dict[str, int], prof: GPUProfile,
    gp: PowerParams, tables: dict[str, dict[str, Any]],
) -> PowerParams:
    """The power-cap controller's averaging window that best predicts the training rows."""
    def loss(cand: PowerParams) -> float:
        total = 0.0
        for w, rows in pairs.items():
            t, p = predict(rows, sizes[w], prof, cand, _timing(tables[w]))
            m = train[w]
            total += float(np.sum(TIME_WEIGHT * (t[m] / rows.epoch_s[m] - 1) ** 2 + (p[m] / rows.power_w[m] - 1) ** 2))
        return total

    return min((replace(gp, cap_window_s=float(w)) for w in CAP_WINDOWS_S), key=loss)


def fit_noise_scale(data_dir: Path, wl: Workload) -> tuple[float, float] | None:
    """Fit Pollux's B_noise to epochs-to-target: epochs(B) ~ E0 (Bn + B) / (Bn + B0)."""
    path = data_dir / "summary_train.csv"
    if not path.is_file() or not wl.zeus:
        return None
    target = float(wl.zeus["target_metric"])
    per_b: dict[int, list[float]] = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            if (r["dataset"], r["network"]) != (wl.zeus["dataset"], wl.zeus["network"]):
                continue
            if abs(float(r["target_metric"]) - target) > 1e-9 or r["target_epoch"] in ("", "nan"):
                continue
            per_b.setdefault(int(r["batch_size"]), []).append(float(r["target_epoch"]))
    med = {b: statistics.median(v) for b, v in per_b.items() if v}
    if len(med) < 2:
        return None
    bmin = min(med, key=lambda b: (med[b], b))  # Pollux's form holds above the best batch
    bs = np.array([b for b in sorted(med) if b >= bmin], dtype=float)
    ep = np.array([med[int(b)] for b in bs])
    b0 = float(wl.default_batch_size)
    best: tuple[float, float, float] | None = None
    for bn in np.geomspace(1.0, 1e6, 400):
        shape = (bn + bs) / (bn + b0)
        e0 = float(np.exp(np.mean(np.log(ep) - np.log(shape))))
        err = float(np.mean((np.log(e0 * shape) - np.log(ep)) ** 2))
        if best is None or err < best[0]:
            best = (err, float(bn), e0)
    assert best is not None
    return best[1], best[2]


def holdout_mask(rows: Rows, mode: str, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """True for rows used in fitting: ``random`` holds out a seeded fraction of rows,
    ``power_limit`` every 5th power limit of the GPU's grid (the 3rd, 8th, ...)."""
    if mode == "random":
        return rng.random(len(rows.batch)) >= fraction
    if mode == "power_limit":
        grid = np.unique(rows.limit_w)
        held = grid[2::5]
        return ~np.isin(rows.limit_w, held)
    raise ValueError(f"holdout mode must be random or power_limit, got {mode!r}")


def heldout_errors(pairs: dict[str, Rows], train: dict[str, np.ndarray], sizes: dict[str, int], prof: GPUProfile,
                   gp: PowerParams, tables: dict[str, Any]) -> dict[str, float]:
    """Relative errors of epoch time and power on the held-out rows of one GPU: medians and worst."""
    t_err: list[float] = []
    p_err: list[float] = []
    for w, rows in pairs.items():
        t, p = predict(rows, sizes[w], prof, gp, _timing(tables[w]))
        held = ~train[w]
        t_err += list(np.abs(t[held] - rows.epoch_s[held]) / rows.epoch_s[held])
        p_err += list(np.abs(p[held] - rows.power_w[held]) / rows.power_w[held])
    return {
        "heldout_rows": len(t_err),
        "epoch_time_median": float(np.median(t_err)), "epoch_time_worst": float(np.max(t_err)),
        "power_median": float(np.median(p_err)), "power_worst": float(np.max(p_err)),
    }


def calibrate(
    data_dir: Path, holdout: float = 0.2, seed: int = 0, mode: str = "random", gpus: list[str] | None = None,
    on_gpu: Callable[[str], None] | None = None, clock_fits: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Fit every Zeus workload on every traced GPU (or the Zeus GPU names given); return the document.

    ``on_gpu`` is called with each GPU's profile key once that GPU is fitted (a progress hook);
    ``clock_fits`` holds, per profile key, the voltage curve and static split fitted to measured
    clock sweeps (:mod:`.calibrate_clocks`), kept fixed here.
    """
    wls = zeus_workloads()
    unknown = sorted(set(gpus or []) - set(ZEUS_GPUS))
    if unknown:
        raise ValueError(f"unknown GPU {unknown[0]!r}; the traces have {', '.join(ZEUS_GPUS)}")
    doc: dict[str, Any] = {
        "version": 1,
        "source": "Zeus NSDI'23 traces (ml-energy/zeus, examples/research_reproducibility/zeus_nsdi23/trace)",
        "holdout": {"mode": mode, "fraction": holdout, "seed": seed},
        "gpus": {}, "workloads": {}, "errors": {},
    }
    for gi, (zname, key) in enumerate(ZEUS_GPUS.items()):
        if gpus and zname not in gpus:
            continue
        rng = np.random.default_rng([seed, gi])  # each GPU's draw is independent of the others
        prof = load_profile(key)
        pairs = load_rows(data_dir, zname, wls)
        if mode == "power_limit":  # one grid per GPU, shared by its workloads
            grid = np.unique(np.concatenate([r.limit_w for r in pairs.values()]))
            held_pl = grid[2::5]
            train = {w: ~np.isin(r.limit_w, held_pl) for w, r in pairs.items()}
        else:
            train = {w: holdout_mask(r, mode, holdout, rng) for w, r in pairs.items()}
        sizes = {w.name: w.dataset_samples for w in wls.values()}
        fixed = {k: v for k, v in (clock_fits or {}).get(key, {}).items() if k in PowerParams.__dataclass_fields__}
        gp, tables = fit_gpu(pairs, train, sizes, prof, fixed)
        gp = fit_cap_window(pairs, train, sizes, prof, gp, tables)
        doc["gpus"][key] = gp.as_dict()
        for w in pairs:
            doc["workloads"].setdefault(w, {"gpus": {}})["gpus"][key] = tables[w]
        doc["errors"][key] = heldout_errors(pairs, train, sizes, prof, gp, tables)
        logger.info("calibrated %s: %s", key, doc["errors"][key])
        if on_gpu is not None:
            on_gpu(key)
    for wl in wls.values():
        fit = fit_noise_scale(data_dir, wl)
        if fit is not None:
            doc["workloads"].setdefault(wl.name, {"gpus": {}})
            doc["workloads"][wl.name]["grad_noise_scale"] = fit[0]
            doc["workloads"][wl.name]["target_epochs"] = fit[1]
    return doc
