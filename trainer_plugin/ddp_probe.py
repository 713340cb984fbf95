"""Measure DDP's gradient exchange: gradient norms, exposed communication time, bytes.

:class:`HookProbe` wraps a compression comm hook (a Python hook anyway) and times it.
:class:`DDPProbe` is for no compression, where DDP keeps its built-in (C++) all-reduce.

A Python comm hook costs a Python call per bucket on the backward thread plus a Python
callback per bucket on the communication thread, each taking the GIL, and it loses DDP's
division fused into the copy into the bucket. On a CPU step of a few milliseconds that was
most of the trainer's gap to a plain DDP loop, so with no compression the plugin leaves the
all-reduce to DDP and measures around it instead:

- the local squared gradient norm (this rank's gradient, before the all-reduce) from
  post-accumulate-grad hooks, registered only on sampled steps;
- the global one (the averaged gradient) from an autograd final callback queued behind
  DDP's own finalize callback, so it runs after the reduced gradients are in place;
- exposed communication time from DDP's runtime statistics, which DDP records in C++ on
  sampled iterations (we set its sample rate to the plugin's).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from gputuned.trainer_plugin.compression import CommCounters, make_hook

logger = logging.getLogger(__name__)


def _queue_callback(fn: Any) -> None:
    torch.autograd.Variable._execution_engine.queue_callback(fn)


class DDPProbe:
    """Sampled gradient norms and communication timing of one DDP model, no comm hook needed."""

    def __init__(self, model: torch.nn.parallel.DistributedDataParallel, sample_every: int,
                 counters: CommCounters) -> None:
        self.model = model
        self.counters = counters
        self._comm_s = 0.0
        self._refresh = False
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.grad_bytes = sum(p.numel() * p.element_size() for p in self.params)
        self._handles: list[Any] = []
        self._local: dict[int, torch.Tensor] = {}
        self._global: list[torch.Tensor] = []
        self._queued = False
        self._last_iteration = -1
        self._sample_every = max(1, sample_every)
        self.every_step(False)

    def every_step(self, on: bool) -> None:
        """Time every step's exposed communication (during a capture), or only sampled ones again."""
        self._every = on
        try:
            self.model._set_ddp_runtime_logging_sample_rate(1 if on else self._sample_every)
        except (AttributeError, RuntimeError) as e:  # private API: timing is optional
            logger.debug("DDP runtime statistics unavailable: %s", e)

    def arm(self) -> None:
        """Measure the coming backward pass (call before it)."""
        if self._handles:
            return
        self._local, self._global = {}, []
        self._handles = [p.register_post_accumulate_grad_hook(self._on_local_grad) for p in self.params]

    def _on_local_grad(self, p: torch.Tensor) -> None:
        g = p.grad
        if g is None:
            return
        flat = g.reshape(-1)
        # last write wins: with accumulation this is the gradient summed over micro-batches
        self._local[id(p)] = torch.dot(flat, flat)
        if not self._queued:
            self._queued = True
            _queue_callback(self._requeue)

    def _requeue(self) -> None:
        # Final callbacks run in order and may append more; DDP appends its finalize (which
        # waits for the all-reduce) when the last bucket is ready, after this one was queued.
        # Queued from here, the next callback runs after DDP's.
        _queue_callback(self._on_reduced)

    def _on_reduced(self) -> None:
        self._queued = False
        self._global = [torch.dot(g.reshape(-1), g.reshape(-1)) for p in self.params
                        if (g := p.grad) is not None]

    def disarm(self) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        """Stop measuring; the step's (local, global) squared-norm parts, or None if incomplete."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._refresh = True
        local, glob = list(self._local.values()), self._global
        self._local, self._global = {}, []
        if not local or len(local) != len(glob):
            return None
        return local, glob

    def end_step(self) -> float:
        """Count this step's bytes; the latest sampled exposed communication time in seconds."""
        self.counters.bytes_sent += self.grad_bytes
        self.counters.bytes_uncompressed += self.grad_bytes
        self.counters.calls += 1
        if self._refresh or self._every:  # on sampled steps only: reading DDP's statistics costs a dict build
            self._refresh = False
            sampled = self._exposed_comm_s()
            if sampled is not None:
                self._comm_s = sampled
        return self._comm_s

    def _exposed_comm_s(self) -> float | None:
        """Seconds backward waited for the all-reduce in DDP's latest sampled iteration (None if no new one)."""
        try:
            data = self.model._get_ddp_logging_data()
        except (AttributeError, RuntimeError):
            return None
        it = int(data.get("iteration", -1))
        end_comm, end_compute = data.get("backward_comm_time_end"), data.get("backward_compute_time_end")
        if it == self._last_iteration or not end_comm or not end_compute:
            return None
        self._last_iteration = it
        return max(0, int(end_comm) - int(end_compute)) / 1e9


class HookProbe:
    """A compression comm hook wrapped to time each step's exposed communication and, armed, the norms."""

    def __init__(self, model: torch.nn.parallel.DistributedDataParallel, hook: str, counters: CommCounters,
                 **hook_kwargs: Any) -> None:
        self._inner, self._state = make_hook(hook, counters, **hook_kwargs)
        self._armed = False
        self._hooked = False
        self._last_hook = self._last_done = 0.0
        self._local: list[torch.Tensor] = []
        self._global: list[torch.Tensor] = []
        model.register_comm_hook(None, self._make_hook())

    def _make_hook(self) -> Any:
        # DDP checks the hook's annotations at runtime, and postponed (string) annotations
        # fail that check, so these closures are left unannotated.
        def timed(_, bucket):
            buf = bucket.buffer()
            self._last_hook = time.perf_counter()
            self._hooked = True
            measure = self._armed
            if measure:
                self._local.append(torch.dot(buf, buf))

            def done(f):
                out = f.value()
                self._last_done = time.perf_counter()
                if measure:
                    self._global.append(torch.dot(out, out))
                return out

            return self._inner(self._state, bucket).then(done)

        return timed

    def arm(self) -> None:
        """Take the gradient norms in the coming backward pass."""
        self._armed = True

    def disarm(self) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        """Stop measuring; the step's (local, global) squared-norm parts, or None if incomplete."""
        self._armed = False
        local, glob = self._local, self._global
        self._local, self._global = [], []
        return (local, glob) if local and len(local) == len(glob) else None

    def end_step(self) -> float:
        """Exposed communication of this step: from the last bucket handed over to its reduction."""
        comm = max(0.0, self._last_done - self._last_hook) if self._hooked else 0.0
        self._hooked = False
        return comm
