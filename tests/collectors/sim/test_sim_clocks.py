"""The simulated GPU's clock response against the measured Perseus SOSP'24 sweeps (shipped extract)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gputuned.collectors.sim.calibrate_clocks import (
    PERSEUS_GPUS,
    controller_ratio,
    fit_gpu,
    holdout,
    load_power_limit_sweeps,
    load_sweeps,
    plateau_clock,
    predict_power_limits,
    rig_limit_w,
)
from gputuned.collectors.sim.gpu_model import (
    Phase,
    PowerParams,
    cap_clocks,
    phase_power,
    phase_time,
)
from gputuned.collectors.sim.state import load_profile
from gputuned.collectors.sim.workload import load_calibration, power_params

SHARED = Path("/work/shared/data/perseus-sosp24/stage_profile")


@pytest.fixture(scope="module")
def sweeps():
    return load_sweeps()


def test_shipped_extract_matches_the_artifact(sweeps) -> None:
    assert {(s.gpu, s.model) for s in sweeps} == {(g, m) for g in PERSEUS_GPUS for m in ("gpt3-175b", "bloom")}
    assert len(sweeps) == 2 * 2 * 8 * 2  # GPUs x models x stages x forward/backward
    if not SHARED.is_dir():
        pytest.skip("Perseus artifact not present")
    line = (SHARED / "bloom+a40_bf16.csv").read_text().splitlines()[1].split(",")  # stage 0 forward at 1740
    s = next(s for s in sweeps if (s.gpu, s.model, s.stage, s.instruction) == ("a40", "bloom", 0, "forward"))
    assert s.t[-1] == pytest.approx(float(line[3]), rel=1e-4) and s.e[-1] == pytest.approx(float(line[4]), rel=1e-4)


@pytest.mark.parametrize("gpu", list(PERSEUS_GPUS))
def test_model_holdout_within_bounds(sweeps, gpu: str) -> None:
    """GPU constants fitted on one model predict the other model's sweeps (RMS over every clock)."""
    for train, test in (("gpt3-175b", "bloom"), ("bloom", "gpt3-175b")):
        h = holdout(sweeps, gpu, train, test)
        assert h["heldout_time_rms"] < 0.03, h
        assert h["heldout_energy_rms"] < 0.03, h


def test_a40_power_limits_predicted_from_clock_fit(sweeps) -> None:
    gp = fit_gpu([s for s in sweeps if s.gpu == "a40"], load_profile("a40"))
    rows = predict_power_limits(sweeps, gp, lo_w=225.0)
    assert {r["model"] for r in rows} == {"gpt3-2.7b", "gpt3-6.7b", "bloom-3b"}
    assert len(rows) == 3 * 4 and set(load_power_limit_sweeps()) >= {r["model"] for r in rows}
    for r in rows:
        assert abs(r["time_pred"] / r["time"] - 1) < 0.03, r
        assert abs(r["energy_pred"] - r["energy"]) < 0.03, r


def test_a40_pipeline_job_slows_at_most_as_its_slowest_stage(sweeps) -> None:
    """Bubbles and the lighter stages' waits follow the slowest capped stage; the fixed time does not slow."""
    gp = fit_gpu([s for s in sweeps if s.gpu == "a40"], load_profile("a40"))
    rows = predict_power_limits(sweeps, gp, lo_w=200.0)
    assert len(rows) == 3 * 5
    for r in rows:
        assert 1.0 <= r["time_pred"] <= r["slot"] + 1e-9, r
    low = {r["model"]: r for r in rows if r["limit_w"] == 200.0}
    assert all(r["time_pred"] > 1.1 for r in low.values()), low  # below the voltage knee the cap slows every job


def test_a40_plateau_is_where_power_meets_the_rig_cap(sweeps) -> None:
    """Under the rig's binding cap a sweep's plateau starts where its power reaches the capped level."""
    prof = load_profile("a40")
    a40 = [s for s in sweeps if s.gpu == "a40"]
    limit = rig_limit_w(a40, prof)
    assert 0.95 <= controller_ratio(a40, prof) < 1.0
    for s in a40:
        xc = plateau_clock(s, limit)
        assert 0.8 <= xc <= 0.9, (s.model, s.instruction, xc)  # 1390-1570 MHz of 1740
        assert (s.e / s.t)[s.x >= xc].min() >= 0.98 * limit
    a100 = [s for s in sweeps if s.gpu == "a100_sxm"]
    assert controller_ratio(a100, load_profile("a100")) == 1.0


def test_shipped_a100_curve_puts_the_energy_optimum_near_1080_mhz(sweeps) -> None:
    from gputuned.collectors.sim.calibrate_clocks import fit_phases, simulate_lock

    prof = load_profile("a100")
    gp = power_params("a100", load_calibration())
    assert 0.7 <= gp.voltage_floor <= 0.85 and 0.74 <= gp.voltage_knee <= 0.82
    phases = fit_phases([s for s in sweeps if s.gpu == "a100_sxm" and s.model == "gpt3-175b"], gp)
    energy = {f: sum(simulate_lock(ph, gp, prof, f / 1410, 500.0)[1] for ph in phases) for f in range(855, 1411, 15)}
    best = min(energy, key=energy.__getitem__)
    assert 1050 <= best <= 1110
    assert 0.72 <= energy[870] / energy[1410] <= 0.80  # measured 0.75


def test_cap_throttles_hot_phases_a_lock_slows_all() -> None:
    gp = PowerParams(active_idle_w=90.0, voltage_floor=0.8, voltage_knee=0.78, cap_floor_ratio=0.15,
                     clock_tree_w=30.0, cap_window_s=0.05)
    hot = Phase("compute", 0.2, 1.0, 0.0, 380.0)
    cool = Phase("memory", 0.2, 0.2, 0.8, 60.0, 80.0)
    xs = cap_clocks((hot, cool), 350.0, gp)
    assert xs[0] < 0.95 and xs[1] == 1.0  # each phase longer than the window has its own cap clock
    assert phase_power(hot, xs[0], gp) <= 350.0 + 1e-6
    pooled = cap_clocks((hot, cool), 350.0, PowerParams(**{**gp.as_dict(), "cap_window_s": 1.0}))
    assert pooled[0] == pooled[1] > xs[0]  # shorter than the window: one clock on the mean power
    assert phase_time(cool, 0.5) < phase_time(hot, 0.5)  # a lock slows the memory-bound phase less
