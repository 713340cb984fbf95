"""Pick the probe that measures a model's gradient exchange: DDP, FSDP2, compiled, or a lone process.

:func:`make_probe` looks through ``torch.compile``'s wrapper to the module it compiled (a
compiled DDP model is measured as DDP, a DDP model around a compiled module needs nothing
special: DDP's hooks and the gradients' post-accumulate hooks sit outside the compiled graph),
then picks :class:`~gputuned.trainer_plugin.ddp_probe.DDPProbe` or
:class:`~gputuned.trainer_plugin.ddp_probe.HookProbe` for DDP,
:class:`~gputuned.trainer_plugin.fsdp_probe.ShardedProbe` for a ``fully_shard`` model, and
:class:`LocalProbe` for a model trained by one process.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.distributed as dist

from gputuned.trainer_plugin.compression import CommCounters
from gputuned.trainer_plugin.ddp_probe import DDPProbe, HookProbe

if TYPE_CHECKING:
    from gputuned.trainer_plugin.fsdp_probe import ShardedProbe


class Probe(Protocol):
    """What the plugin asks of a probe at each step."""

    def arm(self) -> None:
        """Take the gradient norms in the coming backward pass."""

    def disarm(self) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        """Stop measuring; the step's (local, global) squared-norm parts, or None if incomplete."""

    def end_step(self) -> float:
        """The step's communication time in seconds (and count its bytes)."""


class LocalProbe:
    """Gradient norms of a model no other process shares gradients with (no communication)."""

    agreed_sampling = False

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._handles: list[Any] = []
        self._sq: dict[int, torch.Tensor] = {}

    def arm(self) -> None:
        """Take the gradient norms in the coming backward pass."""
        if not self._handles:
            self._sq = {}
            self._handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in self.params]

    def _on_grad(self, p: torch.Tensor) -> None:
        if p.grad is not None:
            flat = p.grad.reshape(-1)
            self._sq[id(p)] = torch.dot(flat, flat)

    def disarm(self) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        """Stop measuring; this process's gradient is both the local and the global one."""
        for h in self._handles:
            h.remove()
        self._handles = []
        parts, self._sq = list(self._sq.values()), {}
        return (parts, parts) if parts else None

    def end_step(self) -> float:
        """No communication."""
        return 0.0


def uncompiled(model: torch.nn.Module) -> torch.nn.Module:
    """The module ``torch.compile`` wrapped (the model itself when it is not compiled)."""
    # torch.compile's OptimizedModule keeps the original module as _orig_mod (no public accessor)
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def make_probe(model: torch.nn.Module, hook: str, counters: CommCounters, sample_every: int,
               **hook_kwargs: Any) -> DDPProbe | HookProbe | ShardedProbe | LocalProbe:
    """The probe for ``model``; ``hook`` names a DDP compression hook ("none": DDP's own all-reduce)."""
    model = uncompiled(model)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        if hook == "none":
            return DDPProbe(model, sample_every, counters)
        return HookProbe(model, hook, counters, **hook_kwargs)
    if hook != "none":
        raise ValueError(f"compression hook {hook!r} needs a DistributedDataParallel model")
    # a fully_shard model was built with torch.distributed.fsdp imported; not importing it here
    # otherwise spares every other loop seconds of imports
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is not None and any(isinstance(m, fsdp.FSDPModule) for m in model.modules()):
        from gputuned.trainer_plugin.fsdp_probe import ShardedProbe

        return ShardedProbe(model, counters)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise TypeError("instrument: with several ranks the model must be DistributedDataParallel or "
                        "fully_shard (no gradient exchange to measure otherwise)")
    return LocalProbe(model)
