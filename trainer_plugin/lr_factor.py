"""The batch-size rule's learning-rate factor, applied on top of whatever LR the loop set for the step.

The loop (or its scheduler) sets each parameter group's ``lr`` for the coming step. Just before
``optimizer.step()`` the factor multiplies it; just after, the loop's own value is put back. So
the factor composes with any scheduler: a chainable one (CosineAnnealingLR, StepLR), which
computes the next LR from the current one, never sees the factor and cannot compound it; a
closed-form one (LambdaLR, OneCycleLR), which rewrites ``lr`` from its base every step, cannot
drop it. A new factor applies from the first optimizer step after it was agreed, the step that
runs with the new batch size; where the loop's loader still holds batches of the old size (a
DataLoader's prefetch), :meth:`OptimizerLrFactor.set` defers it by the steps those batches take. Outside ``optimizer.step()`` the groups hold the loop's LR; the
LR a step actually uses is that times :attr:`OptimizerLrFactor.factor`.
"""

from __future__ import annotations

from typing import Any

import torch


class OptimizerLrFactor:
    """Multiplies an optimizer's learning rates by ``factor`` for the duration of each step."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.factor = 1.0
        self.pending: tuple[float, int] | None = None  # a factor and the old-factor steps left before it
        self._saved: list[Any] | None = None  # the loop's LRs while a scaled step runs
        self._handles = (optimizer.register_step_pre_hook(self._before_step),
                         optimizer.register_step_post_hook(self._after_step))

    def set(self, factor: float, after_steps: int = 0) -> None:
        """Use ``factor`` from the optimizer step that follows ``after_steps`` more steps (0: the next)."""
        self.pending = (factor, after_steps) if after_steps > 0 else None
        if self.pending is None:
            self.factor = factor

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._restore()  # a step that raised never ran its post hook: start from the loop's LRs
        if self.pending is not None:
            new, left = self.pending
            if left > 0:
                self.pending = (new, left - 1)  # this step still runs a batch of the old size
            else:
                self.factor, self.pending = new, None
        factor = self.factor
        if factor == 1.0:
            return
        groups = optimizer.param_groups
        self._saved = [g["lr"] for g in groups]
        for g, lr in zip(groups, self._saved, strict=True):
            g["lr"] = lr * factor

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        """Put the loop's own LRs back (exactly the objects it had set) after a scaled step."""
        saved, self._saved = self._saved, None
        if saved is not None:
            for g, lr in zip(self.optimizer.param_groups, saved, strict=True):
                g["lr"] = lr

    def remove(self) -> None:
        """Stop scaling this optimizer's steps."""
        for handle in self._handles:
            handle.remove()
