"""How ranks agree on decisions: one small asynchronous all-reduce, and the batch-size checks.

At agreed steps each rank contributes a row: rank 0 its decision (kind, value), LR factor and
the number of steps until the next exchange, every rank whether it wants to stop. Non-leaders
send zeros for the leader's fields, so the sum carries rank 0's values plus how many ranks
want to stop; every rank therefore also agrees on when the next exchange starts. The all-reduce
is started at the end of one step and finished at the end of the next, so no rank blocks on it
(a blocking one cost about 5 ms per exchange on a loaded 2-core machine) and every rank still
applies the result at the same step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.distributed as dist


class Agreed(NamedTuple):
    """What every rank gets from one exchange."""

    kind: int
    value: int
    lr_factor: float
    interval: int  # steps from this exchange's start to the next one's
    stop: bool  # some rank asked to stop
    decision: dict[str, Any] | None  # the leader's decision message (None elsewhere)


class DecisionExchange:
    """One decision exchange in flight at a time, started and finished at step ends."""

    def __init__(self, distributed: bool, leader: bool, device: torch.device) -> None:
        self.distributed = distributed
        self.leader = leader
        self.device = device
        self._work: Any = None
        self._msg: torch.Tensor | None = None
        self._decision: dict[str, Any] | None = None

    @property
    def pending(self) -> bool:
        """True while an exchange was started and not finished."""
        return self._msg is not None

    def start(self, kind: int, value: int, lr_factor: float, interval: int, stop: bool,
              decision: dict[str, Any] | None) -> None:
        """Contribute this rank's row (the leader's fields only count on the leader)."""
        row = [float(kind), float(value), lr_factor, float(interval)] if self.leader else [0.0] * 4
        self._msg = torch.tensor([*row, 1.0 if stop else 0.0], dtype=torch.float64, device=self.device)
        self._decision = decision
        self._work = dist.all_reduce(self._msg, async_op=True) if self.distributed else None

    def finish(self) -> Agreed:
        """Wait for the sum: the leader's decision, LR factor and next interval, and the stop vote."""
        work, msg, decision = self._work, self._msg, self._decision
        self._work = self._msg = self._decision = None
        assert msg is not None, "no exchange in flight"
        if work is not None:
            work.wait()
        kind, value, factor, interval, stop = msg.tolist()
        return Agreed(int(kind), int(value), float(factor), int(interval), stop > 0, decision)


def batch_size_problem(size: int, mode: str, batch_size: int, min_batch: int, max_batch: int,
                       world: int, accumulation: int) -> str | None:
    """Why a decided batch size cannot be applied (None when it can); ``mode`` global or micro."""
    if mode == "global":
        if not min_batch <= size <= max_batch:
            return f"batch_size {size} outside [{min_batch}, {max_batch}]"
        if size % (world * accumulation):
            return f"batch_size {size} not divisible by world_size x accumulation ({world * accumulation})"
    elif size < 1 or batch_size % (size * world):
        return f"micro batch_size {size} does not divide the global batch {batch_size} over {world} ranks"
    return None


def sync_device(distributed: bool) -> torch.device:
    """Where the decision exchange's all-reduce runs: the current GPU under NCCL, else the CPU."""
    if distributed and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
