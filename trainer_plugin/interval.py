"""What the steps since the last report add up to, in the control protocol's stat names.

Steps add plain sums and keep their losses, loss scales and gradient norms as tensors: nothing
here reads a tensor back (a device sync) until the report folds them, about once a second. The
loss scale comes from a :class:`LossScaleWatch`, which follows the scaler across reports.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gputuned.trainer_plugin.noise_scale import NoiseScaleEstimator

#: One gradient-norm sample: squared norms of this rank's and the averaged gradients (one tensor
#: per bucket or parameter), the loss scale they were computed under (None without a scaler) and
#: the global batch size of the step.
NormSample = tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None, int]


class LossScaleWatch:
    """Follows a loss scaler (``torch.amp.GradScaler``) across steps, one read per step."""

    def __init__(self) -> None:
        self.current: torch.Tensor | None = None  # after the last update: what the next step runs with
        self.used: torch.Tensor | None = None  # what the last recorded step's gradients were scaled by

    def update(self, scaler: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Read the scale after ``scaler.update()``: the new scale and the one the step ran with."""
        scale = getattr(scaler, "_scale", None)
        scale = scale.detach().clone() if isinstance(scale, torch.Tensor) else torch.tensor(scaler.get_scale())
        before = self.current
        if before is None and isinstance(getattr(scaler, "_init_scale", None), float):
            before = torch.tensor(scaler._init_scale, device=scale.device)
        self.used = before
        self.current = scale
        return scale, before


class IntervalStats:
    """Sums over the steps of one report interval; :meth:`reset` starts the next interval.

    The training loop's plugin adds to the sums and lists directly on every step (a method call
    there would cost about as much as the additions); this class folds them into a report.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self, start: float | None = None) -> None:
        """Forget every step: the next report covers what follows ``start`` (perf_counter s; None: the next step)."""
        self.started = start  # the interval's wall-clock start: throughput counts every second from it
        self.steps = 0
        self.step_time_s = self.data_wait_s = self.comm_time_s = 0.0
        self.samples = 0
        self.losses: list[torch.Tensor] = []
        self.norms: list[NormSample] = []
        self.scale_last: torch.Tensor | None = None
        self.overflow_flags: list[torch.Tensor] = []

    def add_scale(self, scale: torch.Tensor, before: torch.Tensor | None) -> None:
        """Keep the loss scale after a step; a drop from ``before`` is an overflow (a backoff)."""
        if before is not None:
            self.overflow_flags.append(scale < before.to(scale.device))
        self.scale_last = scale

    def overflows(self) -> int:
        """Overflows in this interval."""
        return int(torch.stack(self.overflow_flags).sum()) if self.overflow_flags else 0

    def means(self, end: float) -> dict[str, Any]:
        """The step count; mean times, throughput, loss and the last loss scale when there are any.

        Throughput is the samples over the wall time from the interval's start to ``end``
        (perf_counter s): what the job delivers, pauses between steps included (a stopped or
        straggling rank, the loop's own work); the step times say where the steps' own time went.
        """
        n = max(self.steps, 1)
        stats: dict[str, Any] = {"steps": self.steps}
        if self.steps:
            step, data, comm = self.step_time_s, self.data_wait_s, self.comm_time_s
            wall = end - self.started if self.started is not None else step
            stats.update(step_time_s=step / n, data_wait_s=data / n, comm_time_s=comm / n,
                         compute_time_s=max(0.0, (step - data - comm) / n),
                         samples_per_s=self.samples / wall if wall > 0 else 0.0)
        if self.losses:
            stats["loss"] = float(torch.stack(self.losses).mean())
        if self.scale_last is not None:
            stats["loss_scale"] = float(self.scale_last)
        return stats

    def fold_norms(self, noise: NoiseScaleEstimator, world_size: int) -> dict[str, Any]:
        """The gradient norm over the finite samples; with several ranks, update and give the noise scale."""
        small_sum = big_sum = 0.0
        count = 0
        for local, glob, scale, batch in self.norms:
            if len(local) != len(glob):
                continue
            inv = 1.0 / float(scale) ** 2 if scale is not None else 1.0
            small = float(torch.stack(local).sum()) * inv
            big = float(torch.stack(glob).sum()) * inv
            if not (math.isfinite(small) and math.isfinite(big)):
                continue
            small_sum += small
            big_sum += big
            count += 1
            batch_used = batch
        if not count:
            return {}
        stats: dict[str, Any] = {"grad_norm": math.sqrt(big_sum / count)}
        if world_size > 1:
            noise.update(small_sum / count, batch_used / world_size, big_sum / count, batch_used)
            if noise.noise_scale is not None:
                stats["grad_noise_scale"] = noise.noise_scale
        return stats
