"""Fit the simulated GPU's clock response to measured locked-clock sweeps (Perseus SOSP'24).

Each sweep is one pipeline stage's forward or backward of a large model timed and metered at
every locked SM clock. One sweep is one :class:`~.gpu_model.Phase`: its time at the highest
clock ``t0`` and clock-sensitive share ``s`` (``t(x) = t0 (1 - s + s / x)``), its SM power
(energy per unit of work goes with ``V(x)^2``) and DRAM power (energy per unit of work
constant). Per GPU the fit chooses the voltage curve (``v_min``, knee) and the split of the
clock-dependent static power into leakage (``V``) and clock tree (``x V^2``), with the board's
clock-independent part fixed at the profile's idle power and the total at max clock at the
profile's P0. A sweep's time stops falling above a plateau clock. Where the power on the
plateaus sits at the profile's maximum limit (A40) the rig's power cap holds the clock there:
the plateau starts at the lowest locked clock from which the measured power stays within 2 %
of the rig's mean plateau power, every plateau point is fitted as the phase at that clock, and
the sweeps are simulated through the cap at the mean plateau power (the controller holds the
average at that share of the nominal limit, which the power-limit predictions keep). Elsewhere
(A100, whose rig drew up to 480 W against a 400 W profile) the stage is bound elsewhere above
the plateau while its power still rises: the phase's ``sat_ratio``, simulated under a limit
that never binds.

Hold-out: the GPU constants are fitted on one model's stages and checked on the other model's
(whose phases get their time, SM and DRAM power from its own sweep, with the GPU constants
frozen); the A40 power-limit sweeps of whole pipelines are predicted from the clock fit.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from gputuned.collectors.sim.gpu_model import (
    Phase,
    PowerParams,
    cap_clocks,
    default_power_params,
    phase_power,
    phase_time,
    snap_clock_mhz,
)
from gputuned.collectors.sim.job import COMM_POWER_SHARE
from gputuned.collectors.sim.state import GPUProfile, load_profile

#: Perseus GPU name -> simulator profile key.
PERSEUS_GPUS = {"a100_sxm": "a100-sxm4-80gb", "a40": "a40"}
MODELS = ("gpt3-175b", "bloom")
#: Pipeline job of the A40 power-limit sweeps -> (the measured stage model standing in for its
#: stages, pipeline stages), from the artifact's workloads/*/models_A40.csv.
JOBS = {"gpt3-2.7b": ("gpt3-175b", 8), "gpt3-6.7b": ("gpt3-175b", 4), "bloom-3b": ("bloom", 8)}
#: Uniformly partitioned GPT-3 jobs: (layers, model width, vocabulary, context) from the GPT-3 paper
#: (Brown et al. 2020, Table 2.1; GPT-2's 50257-token BPE). Their last stage also runs the LM head.
GPT3_SHAPES = {"gpt3-2.7b": (32, 2560, 50257, 2048), "gpt3-6.7b": (32, 4096, 50257, 2048)}


def last_stage_cost(layers: int, width: int, vocab: int, context: int, pp: int) -> float:
    """A uniform partition's last stage over a middle one: its layers plus the LM head, in matmul
    FLOPs per token (a layer 24 w^2 + 4 n w, the head 2 w V; tensor parallelism splits both alike)."""
    layer = 24 * width * width + 4 * context * width
    return 1.0 + 2 * width * vocab / (layers / pp * layer)

#: Coarse grid of (v_min, knee, clock-tree share of the clock-dependent static power), then a finer
#: one around the coarse optimum.
_COARSE = (np.arange(0.5, 1.0, 0.05), np.arange(0.3, 0.96, 0.06), np.linspace(0.0, 1.0, 3))
_FINE_STEP = (0.01, 0.02, 0.25)
#: Under a binding cap, the plateau starts where the measured power reaches this share of the
#: rig's mean plateau power and stays there.
PLATEAU_POWER_SHARE = 0.98


@dataclass
class Sweep:
    """One (GPU, model, stage, instruction) sweep: clock ratios, seconds and joules."""

    gpu: str
    model: str
    stage: int
    instruction: str
    x: np.ndarray
    t: np.ndarray
    e: np.ndarray


def _data_file(name: str) -> Path:
    return Path(str(resources.files("gputuned.collectors.sim") / "data" / name))


def load_sweeps(path: Path | None = None) -> list[Sweep]:
    """The shipped (or given) stage sweeps, one :class:`Sweep` each, clocks ascending."""
    acc: dict[tuple[str, str, int, str], list[tuple[float, float, float]]] = {}
    with (path or _data_file("perseus_stage_sweeps.csv")).open() as fh:
        for r in csv.DictReader(fh):
            key = (r["gpu"], r["model"], int(r["stage"]), r["instruction"])
            acc.setdefault(key, []).append((float(r["frequency_mhz"]), float(r["time_s"]), float(r["energy_j"])))
    out = []
    for (gpu, model, stage, ins), rows in sorted(acc.items()):
        f, t, e = (np.array(c) for c in zip(*sorted(rows), strict=True))
        fmax = load_profile(PERSEUS_GPUS[gpu]).sm_clock_max_mhz
        out.append(Sweep(gpu, model, stage, ins, f / fmax, t, e))
    return out


def fit_time(x: np.ndarray, t: np.ndarray, plateau: float | None = None) -> tuple[float, float, float]:
    """(t0, s, plateau clock ratio) minimising the relative error of ``t0 (1 - s + s / min(x, xc))``
    (``xc`` chosen by the fit, or the given plateau)."""
    best: tuple[float, float, float, float] | None = None
    candidates = [plateau] if plateau is not None else np.unique(np.r_[x[x > 0.8 * x.max()], 1.0])
    for xc in candidates:
        xe = np.minimum(x, xc)
        a = np.c_[np.ones_like(xe), 1.0 / xe] / t[:, None]
        c = np.linalg.lstsq(a, np.ones_like(t), rcond=None)[0]
        err = float(np.mean((a @ c - 1.0) ** 2))
        if best is None or err < best[0] - 1e-8:
            best = (err, float(c.sum()), float(c[1] / c.sum()), float(xc))
    assert best is not None
    return best[1:]


def _volt(x: np.ndarray, vmin: float, knee: float) -> np.ndarray:
    return vmin + (1.0 - vmin) * np.maximum(0.0, (x - knee) / (1.0 - knee))


def plateau_is_cap(sweeps: list[Sweep], prof: GPUProfile) -> bool:
    """Whether the sweeps' plateaus sit at the profile's maximum power limit (the cap holds the clock)."""
    return 0.95 <= _plateau_power(sweeps) / prof.power_limit_max_w <= 1.02


def _plateau_power(sweeps: list[Sweep]) -> float:
    powers = []
    for sw in sweeps:
        m = sw.x >= fit_time(sw.x, sw.t)[2] - 1e-9
        powers.extend(sw.e[m] / sw.t[m])
    return float(np.mean(powers))


def plateau_clock(sw: Sweep, limit_w: float) -> float:
    """Lowest locked clock ratio from which the sweep's power stays at the capped plateau."""
    high = sw.e / sw.t >= PLATEAU_POWER_SHARE * limit_w
    k = len(high)
    while k > 0 and high[k - 1]:
        k -= 1
    return float(sw.x[k]) if k < len(high) else 1.0


def sweep_time(sw: Sweep, cap_w: float | None) -> tuple[float, float, float]:
    """The sweep's (t0, s, plateau): under a binding cap (``cap_w``) the plateau is where power meets it."""
    return fit_time(sw.x, sw.t, None if cap_w is None else plateau_clock(sw, cap_w))


def _energy_columns(sw: Sweep, t0: float, s: float, xc: float, vmin: float, knee: float,
                    base: float, leak: float, tree: float, cap: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static energy, SM column (t0 V^2) and DRAM column (t0) at every point; under a binding cap
    a plateau point is the phase at the plateau clock."""
    x = np.minimum(sw.x, xc) if cap else sw.x
    v = _volt(x, vmin, knee)
    tt = t0 * (1.0 - s + s / np.minimum(x, xc))
    static = tt * (base + leak * v + tree * x * v * v)
    return static, np.c_[t0 * v * v, np.full_like(x, t0)], sw.e


def _fit_powers(static: np.ndarray, cols: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative (SM W, DRAM W) minimising relative energy error; returns them and the squared error sum."""
    a, y = cols / e[:, None], (e - static) / e
    c = np.linalg.lstsq(a, y, rcond=None)[0]
    if (c < 0).any():
        j = int(np.argmax(c))
        c = np.zeros(2)
        c[j] = max(0.0, float(a[:, j] @ y) / float(a[:, j] @ a[:, j]))
    return c, float(np.sum((a @ c - y) ** 2))


def _cap_w(sweeps: list[Sweep], prof: GPUProfile, limit_w: float | None) -> float | None:
    """The rig's capped plateau power where a cap holds the sweeps' plateaus, else None."""
    if not plateau_is_cap(sweeps, prof):
        return None
    return rig_limit_w(sweeps, prof) if limit_w is None else limit_w


def fit_phases(sweeps: list[Sweep], gp: PowerParams, limit_w: float | None = None) -> list[Phase]:
    """Each sweep's phase with the GPU constants held (time from its clocks, powers from its energy);
    ``limit_w`` the rig's capped plateau power (default: these sweeps' own)."""
    out = []
    cap_w = _cap_w(sweeps, load_profile(PERSEUS_GPUS[sweeps[0].gpu]), limit_w)
    cap = cap_w is not None
    for sw in sweeps:
        t0, s, xc = sweep_time(sw, cap_w)
        static, cols, e = _energy_columns(sw, t0, s, xc, gp.voltage_floor, gp.voltage_knee, gp.base_w,
                                          gp.leakage_w, gp.clock_tree_w, cap)
        (a, d), _ = _fit_powers(static, cols, e)
        out.append(Phase(f"{sw.model}/{sw.stage}/{sw.instruction}", t0, s, 0.0, a, d, 1.0 if cap else xc))
    return out


def _grid_best(sweeps: list[Sweep], times: list[tuple[float, float, float]], prof: GPUProfile, spare: float,
               grid: tuple[np.ndarray, ...], cap: bool) -> tuple[float, float, float, float]:
    best: tuple[float, float, float, float] | None = None
    for vmin, knee, alpha in itertools.product(*grid):
        leak, tree = spare * (1.0 - alpha), spare * alpha
        err = sum(_fit_powers(*_energy_columns(sw, *tm, vmin, knee, prof.idle_power_w, leak, tree, cap))[1]
                  for sw, tm in zip(sweeps, times, strict=True))
        if best is None or err < best[0]:
            best = (err, float(vmin), float(knee), float(alpha))
    assert best is not None
    return best


def fit_gpu(sweeps: list[Sweep], prof: GPUProfile) -> PowerParams:
    """Voltage curve and leakage/clock-tree split (coarse then fine grid search) on the given sweeps."""
    base = default_power_params(prof)
    spare = base.active_idle_w - prof.idle_power_w
    cap_w = _cap_w(sweeps, prof, None)
    times = [sweep_time(sw, cap_w) for sw in sweeps]
    _, *centre = _grid_best(sweeps, times, prof, spare, _COARSE, cap_w is not None)
    fine = tuple(np.clip(c + d * np.arange(-3, 4), lo, hi) for c, d, lo, hi
                 in zip(centre, _FINE_STEP, (0.4, 0.2, 0.0), (0.99, 0.96, 1.0), strict=True))
    _, vmin, knee, alpha = _grid_best(sweeps, times, prof, spare, tuple(np.unique(f) for f in fine), cap_w is not None)
    return replace(base, voltage_floor=round(vmin, 3), voltage_knee=round(knee, 3),
                   leakage_w=round(spare * (1.0 - alpha), 3), clock_tree_w=round(spare * alpha, 3))


def rig_limit_w(sweeps: list[Sweep], prof: GPUProfile) -> float:
    """The measuring rig's power limit: the plateaus' mean power where the cap holds them, else a
    limit above every power measured."""
    if plateau_is_cap(sweeps, prof):
        return _plateau_power(sweeps)
    return max(prof.power_limit_max_w, max(float(np.max(sw.e / sw.t)) for sw in sweeps))


def simulate_lock(ph: Phase, gp: PowerParams, prof: GPUProfile, x_lock: float, limit_w: float) -> tuple[float, float]:
    """Seconds and joules of a phase at a locked clock under a power limit (the cap overrides the lock)."""
    x = cap_clocks((ph,), limit_w, gp, x_lock)[0]
    x = snap_clock_mhz(x, prof) / prof.sm_clock_max_mhz
    t = phase_time(ph, x)
    return t, phase_power(ph, x, gp) * t


def sweep_rms(sweeps: list[Sweep], phases: list[Phase], gp: PowerParams, prof: GPUProfile,
              limit_w: float) -> tuple[float, float]:
    """RMS relative error of time and of energy over every point of the sweeps."""
    et, ee = [], []
    for sw, ph in zip(sweeps, phases, strict=True):
        for x, t, e in zip(sw.x, sw.t, sw.e, strict=True):
            ts, es = simulate_lock(ph, gp, prof, float(x), limit_w)
            et.append(ts / t - 1.0)
            ee.append(es / e - 1.0)
    return float(np.sqrt(np.mean(np.square(et)))), float(np.sqrt(np.mean(np.square(ee))))


def holdout(sweeps: list[Sweep], gpu: str, train: str, test: str) -> dict[str, Any]:
    """GPU constants fitted on ``train``'s stages, checked on ``test``'s; RMS errors of both."""
    prof = load_profile(PERSEUS_GPUS[gpu])
    tr = [s for s in sweeps if s.gpu == gpu and s.model == train]
    te = [s for s in sweeps if s.gpu == gpu and s.model == test]
    gp = fit_gpu(tr, prof)
    limit = rig_limit_w(tr, prof)
    t_tr, e_tr = sweep_rms(tr, fit_phases(tr, gp, limit), gp, prof, limit)
    t_te, e_te = sweep_rms(te, fit_phases(te, gp, limit), gp, prof, limit)
    return {"gpu": PERSEUS_GPUS[gpu], "fitted_on": train, "checked_on": test, "voltage_floor": gp.voltage_floor,
            "voltage_knee": gp.voltage_knee, "leakage_w": gp.leakage_w, "clock_tree_w": gp.clock_tree_w,
            "rig_limit_w": round(limit, 1), "train_time_rms": t_tr, "train_energy_rms": e_tr,
            "heldout_time_rms": t_te, "heldout_energy_rms": e_te}


def load_power_limit_sweeps(path: Path | None = None) -> dict[str, tuple[int, int, list[tuple[float, float, float]]]]:
    """A40 pipeline jobs under one power limit: model -> (GPUs, microbatches, [(limit W, s, J)] limits descending)."""
    out: dict[str, tuple[int, int, list[tuple[float, float, float]]]] = {}
    with (path or _data_file("perseus_a40_power_limits.csv")).open() as f:
        for r in csv.DictReader(f):
            row = (float(r["power_limit_w"]), float(r["time_s"]), float(r["energy_j"]))
            out.setdefault(r["model"], (int(r["gpus"]), int(r["microbatches"]), []))[2].append(row)
    return {k: (n, m, sorted(v, reverse=True)) for k, (n, m, v) in out.items()}


def iteration(phases: list[Phase], gp: PowerParams, prof: GPUProfile, limit_w: float) -> tuple[float, float]:
    """Seconds and joules of one pass over the phases at a power limit (no lock)."""
    t = e = 0.0
    for ph in phases:
        dt, de = simulate_lock(ph, gp, prof, 1.0, limit_w)
        t, e = t + dt, e + de
    return t, e


@dataclass(frozen=True)
class PipelineJob:
    """A 1F1B pipeline job stood in by measured stages: every GPU runs its stage's forward and
    backward once per microbatch, a slot lasts as long as the slowest capped stage's, the warm-up
    and cool-down add ``stages - 1`` slots, and a GPU waits (at communication power) for the rest."""

    stages: tuple[tuple[Phase, ...], ...]  # each pipeline stage's forward and backward of one microbatch
    microbatches: int
    wait: Phase  # a GPU's waiting: its kernels at the live simulator's communication share
    fixed_s: float = 0.0  # clock-insensitive time per iteration (transfers, optimizer, input)

    def run(self, gp: PowerParams, prof: GPUProfile, limit_w: float) -> tuple[float, float, float]:
        """Seconds per iteration, joules per GPU (mean over stages) and the slowest stage's seconds per slot."""
        per_stage = [iteration(list(st), gp, prof, limit_w) for st in self.stages]
        slot = max(t for t, _ in per_stage)
        total = slot * (self.microbatches + len(self.stages) - 1) + self.fixed_s
        wait_w = phase_power(self.wait, 1.0, gp)
        joules = [e * self.microbatches + wait_w * (total - t * self.microbatches) for t, e in per_stage]
        return total, float(np.mean(joules)), slot


def pipeline_job(stand_in: list[Phase], pp: int, microbatches: int, gp: PowerParams, prof: GPUProfile,
                 limit_w: float, mean_w: float, last_cost: float | None = None) -> PipelineJob:
    """The job on ``pp`` stages of the stand-in model (its first, middle and last stages; with
    ``last_cost``, its middle stage everywhere and the last one that much longer), with the
    clock-insensitive time that gives the job's measured mean power per GPU at the reference limit."""
    by_stage: dict[str, list[Phase]] = {}
    for ph in stand_in:
        by_stage.setdefault(ph.name.split("/")[1], []).append(ph)
    measured = list(by_stage.values())
    if last_cost is None:
        stages = tuple(tuple(measured[-1] if j == pp - 1 else measured[min(j, len(measured) - 2)]) for j in range(pp))
    else:
        mid = measured[len(measured) // 2]
        stages = tuple(tuple(replace(ph, time_s=ph.time_s * (last_cost if j == pp - 1 else 1.0)) for ph in mid)
                       for j in range(pp))
    dynamic_w = sum((ph.sm_w + ph.dram_w) * ph.time_s for ph in stand_in) / sum(ph.time_s for ph in stand_in)
    job = PipelineJob(stages, microbatches, Phase("communication", 1.0, 0.0, 0.0, COMM_POWER_SHARE * dynamic_w))
    t, e, _ = job.run(gp, prof, limit_w)  # no fixed time: compute, bubbles and the lighter stages' waits
    wait_w = phase_power(job.wait, 1.0, gp)
    return replace(job, fixed_s=max(0.0, (e - mean_w * t) / max(mean_w - wait_w, 1.0)))


def controller_ratio(sweeps: list[Sweep], prof: GPUProfile) -> float:
    """Share of the nominal limit at which the rig's cap held average power (1 where it never bound)."""
    return rig_limit_w(sweeps, prof) / prof.power_limit_max_w if plateau_is_cap(sweeps, prof) else 1.0


def predict_power_limits(sweeps: list[Sweep], gp: PowerParams, lo_w: float = 200.0) -> list[dict[str, Any]]:
    """Each A40 pipeline job's time and energy relative to its top limit, measured against predicted
    from the clock fit (:class:`PipelineJob` on the stand-in model's stages, its clock-insensitive
    time set by the top limit's power; every limit acts at the share of it the clock sweeps' capped
    plateaus held). ``slot``: the slowest stage's own slowdown, the most waits that follow it give."""
    prof = load_profile("a40")
    a40 = [s for s in sweeps if s.gpu == "a40"]
    ratio, rig_w = controller_ratio(a40, prof), rig_limit_w(a40, prof)
    rows = []
    for model, (gpus, microbatches, meas) in load_power_limit_sweeps().items():
        if model not in JOBS:
            continue
        proxy, pp = JOBS[model]
        top, t_top, e_top = meas[0]
        stand_in = fit_phases([s for s in a40 if s.model == proxy], gp, rig_w)
        shape = GPT3_SHAPES.get(model)
        last = None if shape is None else last_stage_cost(*shape, pp)
        job = pipeline_job(stand_in, pp, microbatches, gp, prof, ratio * top, e_top / t_top / gpus, last)
        t_ref, e_ref, slot_ref = job.run(gp, prof, ratio * top)
        for limit, t, e in meas:
            if limit < lo_w:
                continue
            tp, ep, slot = job.run(gp, prof, ratio * limit)
            rows.append({"model": model, "stand_in": proxy, "limit_w": limit, "time": t / t_top,
                         "time_pred": tp / t_ref, "energy": e / e_top, "energy_pred": ep / e_ref,
                         "slot": slot / slot_ref})
    return rows


#: PowerParams fields the clock fit sets.
CLOCK_FIELDS = ("voltage_floor", "voltage_knee", "leakage_w", "clock_tree_w")


def calibrate_clocks(sweeps: list[Sweep] | None = None) -> dict[str, Any]:
    """The shipped clock fit (every model of each GPU), the model hold-outs and the power-limit check."""
    sweeps = load_sweeps() if sweeps is None else sweeps
    fits: dict[str, dict[str, float]] = {}
    gps: dict[str, PowerParams] = {}
    for gpu, key in PERSEUS_GPUS.items():
        mine = [s for s in sweeps if s.gpu == gpu]
        gps[gpu] = fit_gpu(mine, load_profile(key))
        fits[key] = {k: getattr(gps[gpu], k) for k in CLOCK_FIELDS}
        fits[key]["rig_limit_w"] = round(rig_limit_w(mine, load_profile(key)), 1)
        fits[key]["controller_ratio"] = round(controller_ratio(mine, load_profile(key)), 4)
    hold = [holdout(sweeps, gpu, a, b) for gpu in PERSEUS_GPUS for a, b in (MODELS, MODELS[::-1])]
    return {"source": "Perseus SOSP'24 artifact (ml-energy/zeus, sosp24_data), Apache-2.0",
            "fits": fits, "holdout": hold, "power_limits": predict_power_limits(sweeps, gps["a40"])}
