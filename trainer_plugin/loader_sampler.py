"""A resizable batch sampler for a ``torch.utils.data.DataLoader`` with worker processes.

A DataLoader pulls indices from its ``batch_sampler`` ahead of the loop: with ``num_workers=4``
and the default ``prefetch_factor=2``, eight batches are sampled before the loop gets the first
one, and one more each time it takes one. A resize therefore cannot act on "the next batch
sampled": those already sampled are on their way with the old size. :class:`LoaderBatchSampler`
instead

- makes a resize take effect at a known batch index of the epoch, the first batch not yet
  sampled (or a later index the ranks agreed on), which :meth:`~LoaderBatchSampler.resize`
  returns, so the loop knows from which batch the new size arrives;
- keeps two cursors: the samples sampled (where the next batch starts) and the samples the loop
  consumed (counted by :meth:`~LoaderBatchSampler.track` as batches arrive). Its state for a
  checkpoint is the consumed one, with the sizes of the batches sampled but not consumed kept
  as scheduled resizes, so a resumed run replays exactly the batches the interrupted one had
  not trained on;
- starts each new iterator (a new epoch, or a DataLoader iterator built again after a
  resume or an abandoned one) from the consumed cursor, so batches sampled and never delivered
  are sampled again, never lost.

Batches are global batches over one permutation shared by all ranks (seeded by seed and epoch),
and rank r takes positions r, r+W, ... of each, as :class:`~gputuned.trainer_plugin.data.ResizableBatchSampler`
does for in-memory data: ranks that resize at the same batch index see every sample once between them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import Sampler

from gputuned.trainer_plugin.data import ResizableBatchSampler


class LoaderBatchSampler(Sampler[list[int]]):
    """Per-rank index batches of resizable global batches, for ``DataLoader(batch_sampler=...)``."""

    def __init__(self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True) -> None:
        self.order = ResizableBatchSampler(num_samples, batch_size, rank, world_size, seed, shuffle)
        self.consumed_cursor = 0  # samples of this epoch the loop has received
        self.consumed_batches = 0  # batches of this epoch the loop has received
        self._yielded = 0  # batches of this epoch handed to the DataLoader
        self._inflight: deque[tuple[int, int]] = deque()  # (global size, size set) of batches not yet received
        self._resizes: list[tuple[int, int]] = []  # (batch index, size) not yet in effect, by index

    @property
    def batch_size(self) -> int:
        """The global batch size of the next batch sampled."""
        return self.order.batch_size

    @property
    def lookahead(self) -> int:
        """Batches sampled but not yet received by the loop (the DataLoader's prefetch)."""
        return self._yielded - self.consumed_batches

    def resize(self, batch_size: int, at_batch: int | None = None) -> int:
        """Use ``batch_size`` from batch ``at_batch`` of the epoch (default: the first not yet sampled); that index.

        Ranks of one job must resize at the same index: with identical DataLoaders the default
        is the same on every rank when they call at the same consumed batch; ``at_batch`` (for
        instance ``consumed_batches + lookahead``, agreed beforehand) makes it explicit.
        """
        if batch_size < self.order.world_size:
            raise ValueError(f"batch_size {batch_size} is smaller than world_size {self.order.world_size}")
        at = self._yielded if at_batch is None else at_batch
        if at < self._yielded:
            raise ValueError(f"batch {at} was already sampled (sampled up to {self._yielded})")
        self._resizes = sorted([*(r for r in self._resizes if r[0] != at), (at, batch_size)])
        return at

    def on_batch_size(self, global_batch: int, micro: int = 0, accumulation: int = 1) -> int:
        """A plugin's ``on_batch_size``: resize at the first batch not yet sampled; the optimizer
        steps the loop still runs on batches of the old size (the plugin defers its LR factor by them)."""
        return math.ceil((self.resize(global_batch) - self.consumed_batches) / max(accumulation, 1))

    def __iter__(self) -> Iterator[list[int]]:
        self._restart(self.state_dict())  # from what the loop received: undelivered batches are sampled again
        order = self.order
        while True:
            while self._resizes and self._resizes[0][0] <= self._yielded:
                order.batch_size = self._resizes.pop(0)[1]
            nxt = order.next_batch()
            if nxt is None:
                return
            idx, global_n = nxt
            self._inflight.append((global_n, order.batch_size))
            self._yielded += 1
            yield idx.tolist()

    def __len__(self) -> int:
        """Batches left in this epoch at the current size (resizes change it)."""
        return math.ceil(max(0, self.order.num_samples - self.consumed_cursor) / self.batch_size)

    def batch_received(self) -> int:
        """Note that the loop received the oldest batch sampled; that batch's global size."""
        global_n, _ = self._inflight.popleft()
        self.consumed_cursor += global_n
        self.consumed_batches += 1
        return global_n

    def track(self, loader: Iterable[Any]) -> Iterator[Any]:
        """Yield the loader's batches (it must use this sampler, in order), counting each as received."""
        for item in loader:
            self.batch_received()
            yield item

    def new_epoch(self) -> None:
        """Start the next epoch; resizes scheduled past the end of this one apply from its first batch."""
        size = self._resizes[-1][1] if self._resizes else self.batch_size
        self.order.new_epoch()
        self.order.batch_size = size
        self.consumed_cursor = self.consumed_batches = self._yielded = 0
        self._inflight.clear()
        self._resizes = []

    def state_dict(self) -> dict[str, Any]:
        """What the loop has received, and the sizes from there on (batches in flight are sampled again)."""
        sizes = [size for _, size in self._inflight] + [self.batch_size]
        resizes = [(self.consumed_batches + i, s) for i, s in enumerate(sizes) if i and s != sizes[i - 1]]
        return {"epoch": self.order.epoch, "cursor": self.consumed_cursor, "batches": self.consumed_batches,
                "batch_size": sizes[0], "resizes": [list(r) for r in [*resizes, *self._resizes]]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at a saved position: the next iterator starts at the first batch not received."""
        self.order.load_state_dict({"epoch": state["epoch"], "cursor": state["cursor"],
                                    "batch_size": state["batch_size"]})
        self._restart(state)

    def _restart(self, state: dict[str, Any]) -> None:
        self.order.cursor = self.consumed_cursor = int(state["cursor"])
        self.order.batch_size = int(state["batch_size"])
        self.consumed_batches = self._yielded = int(state["batches"])
        self._inflight.clear()
        self._resizes = [(int(at), int(size)) for at, size in state["resizes"]]
