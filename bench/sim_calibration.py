"""The simulated GPU's clock response against measured data (Perseus SOSP'24, Zeus NSDI'23).

  python bench/sim_calibration.py            # every figure below
  python bench/sim_calibration.py --quick    # skip the live-simulator lock/limit sweep

Prints: the A100 energy curve of the former uncalibrated model and of the fitted one against the
measured sweeps (energy at 870 MHz over max-clock energy, energy-optimal clock); the model
hold-out (GPU constants fitted on one model's stages, checked on the other's); the A40
power-limit sweeps predicted from the clock fit; the Zeus hold-out errors of the shipped
calibration; the best lock's saving at <= 1/3/5 % slowdown and the equal-time power limit's
energy, measured and simulated.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np

from gputuned.collectors.sim.calibrate_clocks import (
    CLOCK_FIELDS,
    PERSEUS_GPUS,
    Sweep,
    calibrate_clocks,
    fit_phases,
    load_sweeps,
    simulate_lock,
)
from gputuned.collectors.sim.gpu_model import Phase, PowerParams, default_power_params
from gputuned.collectors.sim.state import GPUProfile, load_profile
from gputuned.collectors.sim.workload import load_calibration, power_params

SLOWDOWNS = (0.01, 0.03, 0.05)


def curve(phases: list[Phase], gp: PowerParams, prof: GPUProfile, limit_w: float,
          locks: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Seconds and joules of one pass over the phases at each locked clock (MHz)."""
    out = np.array([[sum(v) for v in zip(*(simulate_lock(ph, gp, prof, f / prof.sm_clock_max_mhz, limit_w)
                                           for ph in phases), strict=True)] for f in locks])
    return out[:, 0], out[:, 1]


def limit_curve(phases: list[Phase], gp: PowerParams, prof: GPUProfile, top_w: float) -> tuple[np.ndarray, ...]:
    """(limits, seconds, joules) of one pass over the phases at power limits from ``top_w`` down in 1 W steps."""
    limits = np.arange(top_w, prof.power_limit_min_w - 1, -1.0)
    arr = np.array([[sum(v) for v in zip(*(simulate_lock(ph, gp, prof, 1.0, float(lim)) for ph in phases), strict=True)]
                    for lim in limits])
    return limits, arr[:, 0], arr[:, 1]


def best_lock(t: np.ndarray, e: np.ndarray, slow: float) -> int:
    """Index of the lowest-energy point within ``slow`` of the top clock's time (the last point)."""
    ok = np.flatnonzero(t <= t[-1] * (1.0 + slow) + 1e-12)
    return int(ok[np.argmin(e[ok])])


def measured_curve(sweeps: list[Sweep]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clock ratios, summed seconds and joules over the given sweeps (same clock grid)."""
    return sweeps[0].x, sum(s.t for s in sweeps), sum(s.e for s in sweeps)  # type: ignore[return-value]


def energy_shape(sweeps: list[Sweep], gp: PowerParams, old: PowerParams, prof: GPUProfile, limit: float) -> None:
    """E(870 MHz) / E(max) and the energy-optimal clock: measured, fitted model, former model."""
    x, tm, em = measured_curve(sweeps)
    fm = x * prof.sm_clock_max_mhz
    locks = [c for c in prof.sm_clocks_mhz if c >= 500]
    phases = fit_phases(sweeps, gp, limit)
    ts, es = curve(phases, gp, prof, limit, locks)
    busy_w = float(em[-1] / tm[-1])  # the former model: one compute-bound phase, P0 + A g(x)
    old_ph = [Phase("compute", float(tm[-1]), 1.0, 0.0, busy_w - old.active_idle_w)]
    to, eo = curve(old_ph, old, prof, 1e9, locks)
    fl = np.array(locks, dtype=float)
    print(f"  {'':18} {'E(870)/E(max)':>13} {'energy-optimal clock':>21}")
    for name, f, e in (("measured", fm, em), ("fitted model", fl, es), ("former model", fl, eo)):
        i870 = int(np.argmin(np.abs(f - 870)))
        print(f"  {name:18} {e[i870] / e[np.argmax(f)]:13.3f} {f[int(np.argmin(e))]:17.0f} MHz")


def lock_vs_limit(sweeps: list[Sweep], gp: PowerParams, prof: GPUProfile, limit: float) -> None:
    """Best lock's saving at each slowdown bound and the equal-time power limit's energy."""
    x, tm, em = measured_curve(sweeps)
    phases = fit_phases(sweeps, gp, limit)
    locks = [int(round(v * prof.sm_clock_max_mhz)) for v in x]
    ts, es = curve(phases, gp, prof, limit, locks)
    lims, tl, el = limit_curve(phases, gp, prof, limit)
    for slow in SLOWDOWNS:
        im, i = best_lock(tm, em, slow), best_lock(ts, es, slow)
        j = int(np.flatnonzero(tl <= ts[i] * (1 + 1e-9))[-1])  # lowest limit no slower than the lock
        print(f"  <= {slow:.0%} slowdown: measured lock saves {1 - em[im] / em[-1]:5.1%} at {locks[im]} MHz; "
              f"simulated lock {1 - es[i] / es[-1]:5.1%} at {locks[i]} MHz (time {ts[i] / ts[-1]:.3f}); "
              f"equal-time limit {lims[j]:.0f} W saves {1 - el[j] / es[-1]:5.1%} "
              f"(lock better by {(el[j] - es[i]) / es[-1] * 100:.1f} points)")


def main(argv: list[str] | None = None) -> int:
    """Print every figure (see the module doc)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args(argv)
    sweeps = load_sweeps()
    cal = load_calibration()
    doc = calibrate_clocks(sweeps)
    print("Model hold-out: GPU constants fitted on one model's stages, checked on the other's (RMS over every clock)")
    print(f"  {'gpu':16} {'fitted on':10} {'checked on':10} {'v_min':>5} {'knee':>5} {'leak W':>6} {'tree W':>6} "
          f"{'train t':>7} {'train E':>7} {'held t':>7} {'held E':>7}")
    for h in doc["holdout"]:
        print(f"  {h['gpu']:16} {h['fitted_on']:10} {h['checked_on']:10} {h['voltage_floor']:5.2f} "
              f"{h['voltage_knee']:5.2f} {h['leakage_w']:6.1f} {h['clock_tree_w']:6.1f} {h['train_time_rms']:7.1%} "
              f"{h['train_energy_rms']:7.1%} {h['heldout_time_rms']:7.1%} {h['heldout_energy_rms']:7.1%}")
    print("A40 power-limit sweeps predicted from the clock fit (1F1B pipeline on the stand-in's stages; ratios to "
          "the 300 W point; energy error in points; slowest stage: its own slowdown, the most waits give)")
    for r in doc["power_limits"]:
        print(f"  {r['model']:10} ({r['stand_in']:9} stages) {r['limit_w']:4.0f} W: time {r['time']:.3f} vs "
              f"{r['time_pred']:.3f} ({r['time_pred'] / r['time'] - 1:+.1%}), energy {r['energy']:.3f} vs "
              f"{r['energy_pred']:.3f} ({(r['energy_pred'] - r['energy']) * 100:+.1f} pts); slowest stage "
              f"{r['slot']:.3f} ({r['slot'] / r['time'] - 1:+.1%})")
    print("Zeus NSDI'23 hold-out of the shipped calibration (median / worst)")
    for gpu, err in cal.get("errors", {}).items():
        print(f"  {gpu:16} epoch time {err['epoch_time_median']:.1%} / {err['epoch_time_worst']:.1%}, "
              f"power {err['power_median']:.1%} / {err['power_worst']:.1%}")
    for gpu, key in PERSEUS_GPUS.items():
        prof = load_profile(key)
        fit = doc["fits"][key]  # the clock fit on every model of the GPU (A40's live sim keeps its Zeus curve)
        gp = replace(power_params(key, cal), **{k: fit[k] for k in CLOCK_FIELDS})
        limit = fit["rig_limit_w"]
        for model in ("gpt3-175b", "bloom"):
            mine = [s for s in sweeps if s.gpu == gpu and s.model == model]
            print(f"{prof.name}, {model} (all stages, forward + backward), rig limit {limit:.0f} W")
            energy_shape(mine, gp, replace(default_power_params(prof), cap_floor_ratio=0.0), prof, limit)
            lock_vs_limit(mine, gp, prof, limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
