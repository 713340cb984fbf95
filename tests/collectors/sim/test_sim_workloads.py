"""Workload files: shipped set, timing resolution across GPUs, readings at time 0."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from gputuned.collectors.sim.node import build_sim_node
from gputuned.collectors.sim.state import RealClock
from gputuned.collectors.sim.workload import (
    available_workloads,
    load_calibration,
    load_workload,
    resolve_timing,
)

ZEUS = {"cifar100-shufflenetv2", "imagenet-resnet50", "squad-bert", "librispeech-deepspeech2",
        "movielens-ncf", "sentiment140-bert"}


def test_shipped_workloads_cover_zeus_jobs_extras_and_held_out() -> None:
    names = set(available_workloads())
    assert names >= ZEUS and len(names) >= len(ZEUS) + 2
    wls = [load_workload(n) for n in names]
    assert any(w.held_out for w in wls) and not all(w.held_out for w in wls)
    cal = load_calibration()
    for name in ZEUS:
        fitted = cal["workloads"][name]
        assert set(fitted["gpus"]) == {"a40", "quadro-rtx-6000", "p100-pcie-16gb"}
        assert fitted["grad_noise_scale"] > 0
    dlrm, _ = resolve_timing(load_workload("dlrm-criteo"), "a40", cal)
    gpt2, _ = resolve_timing(load_workload("gpt2-small-openwebtext"), "a40", cal)
    _, sm, mem = dlrm.at(8192)
    assert mem > 3 * sm  # memory-bound
    _, sm, mem = gpt2.at(16)
    assert sm > 3 * mem  # compute-bound
    assert load_workload("resnet50").name == "imagenet-resnet50"


def test_uncalibrated_gpu_gets_timing_transferred_by_peak_throughput() -> None:
    cal = load_calibration()
    wl = load_workload("squad-bert")
    a40, src_a40 = resolve_timing(wl, "a40", cal)
    h100, src_h100 = resolve_timing(wl, "h100", cal)
    assert src_a40 == "fitted on a40" and src_h100 == "transferred from a40"
    assert h100.at(32)[1] < a40.at(32)[1] / 5  # 989 vs 149.7 TFLOP/s
    assert h100.at(32)[0] == a40.at(32)[0]  # host time does not move with the GPU


def test_live_node_has_readings_before_first_step() -> None:
    backend = build_sim_node("v100", 4, "bert", None, RealClock(), seed=2)
    for dev in backend.devices:
        assert dev.util_gpu_pct > 0 and dev.power_mw > dev.profile.idle_power_w * 1000
        assert dev.memory_used_bytes > 0 and dev.sm_clock_mhz > 0 and dev.pstate == 0
    idle = build_sim_node("v100", 2, None, None, RealClock())
    assert all(d.util_gpu_pct == 0 and d.pstate == 8 and d.memory_used_bytes == 0 for d in idle.devices)
    assert idle.devices[0].power_mw == int(idle.devices[0].profile.idle_power_w * 1000)


def test_step_time_between_measured_sizes_never_makes_a_throughput_dip() -> None:
    # A step is a fixed cost plus a cost per sample, so between two measured sizes the
    # samples per second of the whole step must move monotonically; interpolating in
    # log2(batch) overstated the middle by up to 25% of the per-sample part and put a
    # false throughput valley at dlrm's default (8192, between 4096 and 16384).
    cal = load_calibration()
    for name in ("dlrm-criteo", "vit-b16-imagenet", "gpt2-small-openwebtext"):
        timing, _ = resolve_timing(load_workload(name), "a40", cal)
        sizes = timing.batch_sizes
        for lo, hi in pairwise(sizes):
            grid = [lo + (hi - lo) * k / 16 for k in range(17)]
            rates = [b / sum(timing.at(b)) for b in grid]
            rising = all(b >= a * (1 - 1e-9) for a, b in pairwise(rates))
            falling = all(b <= a * (1 + 1e-9) for a, b in pairwise(rates))
            assert rising or falling, (name, lo, hi, [round(r) for r in rates])
        mid = (sizes[1] + sizes[2]) / 2
        assert abs(sum(timing.at(mid)) - (sum(timing.at(sizes[1])) + sum(timing.at(sizes[2]))) / 2) < 1e-12


def test_a_fixed_setting_is_measured_per_target_and_a_refused_batch_gives_none() -> None:
    from gputuned.collectors.sim.node import measure_fixed

    full = measure_fixed("a100", 1, "imagenet-resnet50", 0, power_limit_w=400.0, window_s=60.0)
    capped = measure_fixed("a100", 1, "imagenet-resnet50", 0, power_limit_w=200.0, window_s=60.0)
    assert full is not None and capped is not None
    assert capped[0] < full[0] and capped[1] > full[1]  # less energy to target, more time
    wl = load_workload("imagenet-resnet50")
    assert measure_fixed("a100", 1, wl.name, 0, batch_size=wl.max_batch_size * 2) is None  # outside its range
    assert measure_fixed("p100", 1, wl.name, 0, batch_size=wl.max_batch_size) is None  # out of memory


def test_a_profile_file_keeps_its_paths_case(tmp_path: Path) -> None:
    """A profile given as a file is found at its path as written (a folder with capitals is not lower-cased)."""
    from gputuned.collectors.sim.workload import load_calibration, load_workload, resolve_timing

    src = Path(__file__).resolve().parents[2] / "data" / "rtx_a6000_memory_clocks.toml"
    path = tmp_path / "Profiles" / "RTX-A6000.toml"
    path.parent.mkdir()
    path.write_text(src.read_text())
    timing, where = resolve_timing(load_workload("librispeech-deepspeech2"), str(path), load_calibration())
    assert where.startswith("transferred from") and timing.sm_s
