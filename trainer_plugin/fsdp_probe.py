"""Measure an FSDP2 (``fully_shard``) model's communication and gradients through FSDP's public API.

FSDP2 all-gathers each parameter group before its forward and backward and reduce-scatters
the group's gradients after its backward. :class:`ShardedProbe` hands every FSDP module a
timed all-gather and reduce-scatter (``FSDPModule.set_custom_all_gather`` /
``set_custom_reduce_scatter``: the same collectives FSDP makes by default, timed and counted)
and takes, on sampled steps:

- the local squared gradient norm (this rank's whole gradient, before the reduction) from the
  reduce-scatter's input: the group's unsharded gradients end to end (its zero padding adds
  nothing). Where FSDP reduces with a plain sum (an fp16 reduce dtype, or sum reduction forced)
  it may divide that input first by a factor it does not publish, so such samples are left out;
- the global one (the averaged gradient) from the sharded gradients FSDP hands to each
  parameter's post-accumulate-grad hooks (a DTensor; its local shard), summed on this rank
  during backward and across ranks by one scalar all-reduce when the step ends.

That all-reduce is a collective, so every rank must sample the same steps: the plugin samples
an FSDP model every ``norm_every`` steps (a step count, not a period). Both norms are read
during backward, before the loop unscales or clips the gradients.

Communication time is the time spent in FSDP's collectives: wall time on the CPU, where gloo
runs them before returning; on a GPU, timed with events on FSDP's communication streams (the
collectives' duration, overlapped with compute or not).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

from gputuned.trainer_plugin.compression import CommCounters

logger = logging.getLogger(__name__)


class _Timer:
    """Time spent in collectives: wall time on the CPU, event pairs read back later elsewhere."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._pending: list[tuple[Any, Any]] = []

    def start(self, device: torch.device) -> Any:
        """Mark a collective's start; the token to pass to :meth:`stop`."""
        if device.type == "cpu":
            return time.perf_counter()
        event = torch.Event(device=device, enable_timing=True)
        event.record()
        return event

    def stop(self, token: Any) -> None:
        """Mark the end of the collective started at ``token``."""
        if isinstance(token, float):
            self.seconds += time.perf_counter() - token
            return
        end = torch.Event(device=token.device, enable_timing=True)
        end.record()
        self._pending.append((token, end))

    def take(self) -> float:
        """Seconds timed since the last call (device timings once their events completed)."""
        still = []
        for start, end in self._pending:
            if end.query():
                self.seconds += start.elapsed_time(end) / 1e3
            else:
                still.append((start, end))
        self._pending = still
        seconds, self.seconds = self.seconds, 0.0
        return seconds


class _TimedAllGather:
    """FSDP's all-gather, timed and counted (``torch.distributed.fsdp`` Comm interface)."""

    def __init__(self, probe: ShardedProbe) -> None:
        self._probe = probe

    def allocate(self, size: Sequence[int | torch.SymInt], *, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
        """A buffer for the gathered parameters, as FSDP's default allocates it."""
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor, group: dist.ProcessGroup,
                 async_op: bool = False) -> Any:
        token = self._probe.timer.start(output_tensor.device)
        work = dist.all_gather_single(output_tensor, input_tensor, group=group, async_op=async_op)
        self._probe.timer.stop(token)
        self._probe.count(output_tensor)
        return work


class _TimedReduceScatter(_TimedAllGather):
    """FSDP's reduce-scatter, timed and counted; on sampled steps, the norm of this rank's gradient."""

    def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor,  # type: ignore[override]
                 group: dist.ProcessGroup, op: Any = dist.ReduceOp.SUM, async_op: bool = False) -> Any:
        probe = self._probe
        probe.group = group
        if probe.armed:
            if op == dist.ReduceOp.SUM:  # the input was divided by FSDP's undisclosed pre-factor
                probe.local_ok = False
            probe.local.append(torch.dot(input_tensor, input_tensor).float())
        token = probe.timer.start(output_tensor.device)
        work = dist.reduce_scatter_single(output_tensor, input_tensor, op=op, group=group, async_op=async_op)
        probe.timer.stop(token)
        probe.count(input_tensor)
        return work


class ShardedProbe:
    """Communication time, bytes and sampled gradient norms of one FSDP2 model."""

    #: norm samples take a collective: the plugin must sample every rank at the same steps
    agreed_sampling = True

    def __init__(self, model: torch.nn.Module, counters: CommCounters) -> None:
        self.counters = counters
        self.timer = _Timer()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.group: dist.ProcessGroup | None = None  # the reduce-scatter's, seen at the first backward
        self.armed = False
        self.local_ok = True
        self.local: list[torch.Tensor] = []
        self._shards: dict[int, torch.Tensor] = {}
        self._handles: list[Any] = []
        gather, scatter = _TimedAllGather(self), _TimedReduceScatter(self)
        modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
        if not modules:
            raise TypeError("ShardedProbe: the model has no fully_shard module")
        for m in modules:
            try:
                m.set_custom_all_gather(gather)  # type: ignore[arg-type]
                m.set_custom_reduce_scatter(scatter)  # type: ignore[arg-type]
            except ValueError as e:  # several parameter groups in one module (per-parameter meshes)
                logger.warning("FSDP module %s keeps its own collectives (not timed): %s", type(m).__name__, e)

    def count(self, tensor: torch.Tensor) -> None:
        """Count a collective's payload: the gradient a rank reduces, the parameters it gathers."""
        n = tensor.numel() * tensor.element_size()
        self.counters.bytes_sent += n
        self.counters.bytes_uncompressed += n
        self.counters.calls += 1

    def arm(self) -> None:
        """Take the gradient norms in the coming backward pass (every rank at the same step)."""
        if self.armed:
            return
        self.armed, self.local_ok = True, True
        self.local, self._shards = [], {}
        self._handles = [p.register_post_accumulate_grad_hook(self._on_shard) for p in self.params]

    def _on_shard(self, p: torch.Tensor) -> None:
        g = p.grad
        if g is None:
            return
        local = g.to_local() if hasattr(g, "to_local") else g
        flat = local.reshape(-1)
        self._shards[id(p)] = torch.dot(flat, flat).float()  # last write wins: the accumulated gradient

    def disarm(self) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        """Stop measuring; sum the shards' norms across ranks; the step's (local, global) squared norms or None."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.armed = False
        complete = bool(self.local) and bool(self._shards) and self.local_ok
        shard_sq = torch.stack(list(self._shards.values())).sum() if self._shards else torch.zeros(())
        both = torch.stack([shard_sq, torch.tensor(float(complete))])
        if self.group is not None:
            dist.all_reduce(both, group=self.group)
        world = dist.get_world_size(self.group) if self.group is not None else 1
        local, self.local, self._shards = self.local, [], {}
        if int(both[1]) != world:
            return None
        return [torch.stack(local).sum()], [both[0]]

    def end_step(self) -> float:
        """Seconds this step spent in FSDP's collectives."""
        return self.timer.take()
