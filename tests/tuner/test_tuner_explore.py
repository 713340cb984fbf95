"""Exploration pieces of the gputuned policy: profile smoothing, pooled noise, prior-guided Thompson, synthetic GPUs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gputuned.tuner.zeus.agent import ArmMemory, pooled_log_sd, thompson
from gputuned.tuner.zeus.objectives import ZeusCost, smooth_profile
from gputuned.tuner.zeus.synth import GpuWarp, synthetic_gpu, warp_trace
from gputuned.tuner.zeus.traces import PACKAGED_TRACES, load_gpu


@pytest.fixture(scope="module")
def a40() -> dict:
    return load_gpu(PACKAGED_TRACES, "a40")


def test_smoothing_restores_physical_shapes_and_steadies_the_pick(a40: dict) -> None:
    trace = a40["cifar100"]
    truth = {p: trace.epoch[(128, p)] for p in trace.power_limits_w}
    objective = ZeusCost(0.5)
    best = objective.pick_power_limit(truth, trace.max_power_w)
    rng = np.random.default_rng(0)

    def cost(p: int) -> float:
        t, w = truth[p]
        return objective.cost(t * w, t, trace.max_power_w)

    raw_excess = smooth_excess = 0.0
    for _ in range(200):
        noisy = {p: (t * (1 + rng.normal(0, 0.02)), w * (1 + rng.normal(0, 0.02))) for p, (t, w) in truth.items()}
        smooth = smooth_profile(noisy)
        limits = sorted(smooth)
        assert all(smooth[a][0] >= smooth[b][0] - 1e-9 for a, b in zip(limits, limits[1:], strict=False))
        assert all(smooth[a][1] <= smooth[b][1] + 1e-9 for a, b in zip(limits, limits[1:], strict=False))
        raw_excess += cost(objective.pick_power_limit(noisy, trace.max_power_w)) / cost(best) - 1
        smooth_excess += cost(objective.pick_power_limit(smooth, trace.max_power_w)) / cost(best) - 1
    assert smooth_excess < raw_excess


def test_pooled_noise_is_shared_across_sizes_and_floored() -> None:
    mem = ArmMemory(sizes=(8, 16, 32), default_batch_size=16)
    mem.run_costs = {16: [100.0] * 10}
    assert pooled_log_sd(mem) == pytest.approx(math.sqrt(2 * 0.1**2 / 11), rel=1e-6)
    mem.run_costs = {8: [80.0, 120.0, 80.0, 120.0], 16: [100.0, 100.0, 100.0]}
    noisy = pooled_log_sd(mem)
    assert noisy > 0.1
    mem.run_costs[16] += [100.0] * 40
    assert pooled_log_sd(mem) < noisy


def _memory(epoch_cost: dict[int, float]) -> ArmMemory:
    mem = ArmMemory(sizes=tuple(sorted(epoch_cost)), default_batch_size=32, epoch_cost=epoch_cost, norm=100.0)
    mem.run_costs = {32: [100.0, 102.0, 98.0]}
    return mem


def test_thompson_explores_an_untried_size_only_when_it_is_much_cheaper_per_epoch() -> None:
    rng = np.random.default_rng(0)
    cheap = _memory({8: 1.0, 16: 0.8, 32: 1.0})
    picks = [thompson(cheap, rng) for _ in range(200)]
    assert picks.count(16) > 150
    assert thompson(cheap, rng, untried=False) == 32
    similar = _memory({8: 0.99, 16: 0.98, 32: 1.0})
    assert {thompson(similar, rng) for _ in range(200)} == {32}
    # A larger size is expected to need more epochs: 10% cheaper per epoch is not enough to try it.
    larger = _memory({32: 1.0, 64: 0.9, 128: 0.95})
    assert {thompson(larger, rng) for _ in range(200)} == {32}
    cheap.stopped.add(16)
    assert {thompson(cheap, rng) for _ in range(50)} == {32}


def test_warped_gpu_keeps_physics_and_the_jobs(a40: dict) -> None:
    synth = synthetic_gpu(a40, seed=3)
    assert set(synth) == set(a40)
    for job, trace in synth.items():
        base = a40[job]
        assert trace.epochs_to_target == base.epochs_to_target
        assert trace.batch_sizes == base.batch_sizes and len(trace.power_limits_w) == len(base.power_limits_w)
        for b in trace.batch_sizes:
            row = [trace.epoch[(b, p)] for p in trace.power_limits_w]
            assert all(x[0] >= y[0] for x, y in zip(row, row[1:], strict=False))
            assert all(x[1] <= y[1] for x, y in zip(row, row[1:], strict=False))
    base = a40["squad"]
    identity = warp_trace(base, GpuWarp(cell_noise=0.0), np.random.default_rng(0), "same")
    kept = 0
    for b in base.batch_sizes:
        row = [base.epoch[(b, p)] for p in base.power_limits_w]
        if all(x[0] >= y[0] and x[1] <= y[1] for x, y in zip(row, row[1:], strict=False)):
            kept += 1  # an already physical row comes through unchanged
            got = [v for p in base.power_limits_w for v in identity.epoch[(b, p)]]
            assert got == pytest.approx([v for cell in row for v in cell])
    assert kept > 0
    bigger = warp_trace(a40["squad"], GpuWarp(power_scale=1.5, cell_noise=0.0), np.random.default_rng(0), "big")
    assert bigger.max_power_w == 450
