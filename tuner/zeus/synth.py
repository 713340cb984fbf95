"""Synthetic GPUs made by perturbing a measured trace's power and time surfaces plausibly.

Used to train on a wider family of GPUs than the three measured ones and to check a policy on a
GPU it has never seen. Each perturbation keeps what physics keeps: epoch time does not rise with
the power limit, board power does not fall with it, and epochs to target stay GPU independent.

What changes (one draw per synthetic GPU, shared by its jobs):

- the power scale ``k``: limits and watts multiplied by ``k`` (a larger or smaller board);
- the power sensitivity ``alpha``: the slowdown at a lower limit, t(b, p) / t(b, p_max), raised
  to ``alpha`` (a GPU whose clocks drop more or less steeply under a cap);
- the power draw shape ``beta``: p(b, p) / p(b, p_max) raised to ``beta``;
- the batch-size scaling ``gamma``: epoch time multiplied by (b / b0) ** gamma (a GPU whose
  throughput grows more or less with the batch, e.g. more SMs to fill);
- 1% independent noise per (b, p) cell, then the monotone shapes restored.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np

from gputuned.tuner.zeus.traces import JobTrace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuWarp:
    """One synthetic GPU's perturbation parameters (see the module docstring)."""

    power_scale: float = 1.0
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 0.0
    cell_noise: float = 0.01

    @classmethod
    def draw(cls, rng: np.random.Generator) -> GpuWarp:
        """A random, physically plausible warp."""
        return cls(
            power_scale=float(rng.uniform(0.6, 1.6)),
            alpha=float(rng.uniform(0.5, 1.6)),
            beta=float(rng.uniform(0.8, 1.25)),
            gamma=float(rng.normal(0.0, 0.08)),
        )


def _monotone(values: list[float], increasing: bool) -> list[float]:
    """Running max (increasing) or min along the list: restores a monotone shape after noise."""
    out: list[float] = []
    for v in values:
        out.append(v if not out else (max(out[-1], v) if increasing else min(out[-1], v)))
    return out


def warp_trace(trace: JobTrace, warp: GpuWarp, rng: np.random.Generator, name: str) -> JobTrace:
    """The job as it would run on the synthetic GPU ``name`` described by ``warp``."""
    limits = trace.power_limits_w
    p_max = max(limits)
    new_limits = tuple(int(round(p * warp.power_scale)) for p in limits)
    b0 = trace.default_batch_size
    epoch: dict[tuple[int, int], tuple[float, float]] = {}
    for b in trace.batch_sizes:
        t_top, w_top = trace.epoch[(b, p_max)]
        times, watts = [], []
        for p in sorted(limits):  # ascending power limit
            t, w = trace.epoch[(b, p)]
            slow = max(t / t_top, 1.0) ** warp.alpha
            draw = min(w / w_top, 1.0) ** warp.beta
            noise = rng.normal(0.0, warp.cell_noise, 2) if warp.cell_noise > 0 else (0.0, 0.0)
            times.append(t_top * slow * math.exp(warp.gamma * math.log2(b / b0)) * (1.0 + float(noise[0])))
            watts.append(w_top * draw * warp.power_scale * (1.0 + float(noise[1])))
        # time must not rise with the limit (descending along ascending p), power must not fall
        times = list(reversed(_monotone(list(reversed(times)), increasing=True)))
        watts = _monotone(watts, increasing=True)
        for p, t, w in zip(sorted(limits), times, watts, strict=True):
            epoch[(b, int(round(p * warp.power_scale)))] = (t, w)
    return replace(trace, gpu=name, power_limits_w=tuple(sorted(new_limits)), epoch=epoch)


def synthetic_gpu(base: dict[str, JobTrace], seed: int, name: str | None = None) -> dict[str, JobTrace]:
    """Every job of a measured GPU warped into one synthetic GPU drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    warp = GpuWarp.draw(rng)
    gpu = name or f"synth{seed}"
    logger.info("%s: %s", gpu, warp)
    return {job: warp_trace(t, warp, rng, gpu) for job, t in base.items()}
