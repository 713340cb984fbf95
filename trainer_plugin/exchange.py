"""How ranks agree on decisions: one small asynchronous all-reduce, and the batch-size checks.

At agreed steps each rank contributes a row: rank 0 its decision (kind, value), LR factor and
the number of steps until the next exchange, every rank whether it wants to stop. Non-leaders
send zeros for the leader's fields, so the sum carries rank 0's values plus how many ranks
want to stop; every rank therefore also agrees on when the next exchange starts. The all-reduce
is started at the end of one step and finished at the end of the next, so no rank blocks on it
(a blocking one cost about 5 ms per exchange on a loaded 2-core machine) and every rank still
applies the result at the same step.

The same row carries this rank's mean compute and wait time per step since the previous
exchange, in two slots of its own (zeros elsewhere), so after the sum every rank knows every
rank's times: the job's critical path, which each node's daemon needs to slow only the GPUs
off it. Jobs of more than ``TIMED_RANKS_MAX`` ranks exchange no times.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

from gputuned import protocol

#: The largest job whose ranks exchange their step times (two float64 per rank in each exchange).
TIMED_RANKS_MAX = 4096


class Agreed(NamedTuple):
    """What every rank gets from one exchange."""

    kind: int
    value: int
    lr_factor: float
    interval: int  # steps from this exchange's start to the next one's
    stop: bool  # some rank asked to stop
    decision: dict[str, Any] | None  # the leader's decision message (None elsewhere)
    rank_times: dict[int, tuple[float, float]] = {}  # rank -> (compute_s, wait_s) per step; ranks with steps


class DecisionExchange:
    """One decision exchange in flight at a time, started and finished at step ends."""

    def __init__(self, distributed: bool, leader: bool, device: torch.device, rank: int = 0, world: int = 1) -> None:
        self.distributed = distributed
        self.leader = leader
        self.device = device
        self.rank = rank
        self.world = world if world <= TIMED_RANKS_MAX else 0  # 0: no step times exchanged
        self._work: Any = None
        self._msg: torch.Tensor | None = None
        self._decision: dict[str, Any] | None = None
        self._steps = 0  # steps since the last exchange started, and their compute and wait seconds
        self._compute_s = self._wait_s = 0.0
        self.rank_times: dict[int, tuple[float, float]] = {}  # every rank's, from the last exchange with steps

    def add_step(self, compute_s: float, wait_s: float) -> None:
        """Count one step's compute (in-step time less data and communication) and wait (communication)."""
        self._steps += 1
        self._compute_s += compute_s
        self._wait_s += wait_s

    @property
    def pending(self) -> bool:
        """True while an exchange was started and not finished."""
        return self._msg is not None

    def start(self, kind: int, value: int, lr_factor: float, interval: int, stop: bool,
              decision: dict[str, Any] | None) -> None:
        """Contribute this rank's row (the leader's fields only count on the leader)."""
        row = [float(kind), float(value), lr_factor, float(interval)] if self.leader else [0.0] * 4
        times = [0.0] * (2 * self.world)
        if self._steps and self.rank < self.world:
            times[2 * self.rank:2 * self.rank + 2] = [self._compute_s / self._steps, self._wait_s / self._steps]
        self._steps, self._compute_s, self._wait_s = 0, 0.0, 0.0
        self._msg = torch.tensor([*row, 1.0 if stop else 0.0, *times], dtype=torch.float64, device=self.device)
        self._decision = decision
        self._work = dist.all_reduce(self._msg, async_op=True) if self.distributed else None

    def finish(self) -> Agreed:
        """Wait for the sum: the leader's decision, LR factor and next interval, and the stop vote."""
        work, msg, decision = self._work, self._msg, self._decision
        self._work = self._msg = self._decision = None
        assert msg is not None, "no exchange in flight"
        if work is not None:
            work.wait()
        kind, value, factor, interval, stop, *times = msg.tolist()
        # a rank with steps: compute or wait (a fast rank's compute may read 0, all of its step waited)
        ranks = {r: (times[2 * r], times[2 * r + 1]) for r in range(len(times) // 2) if times[2 * r] + times[2 * r + 1] > 0}
        self.rank_times = ranks or self.rank_times
        return Agreed(int(kind), int(value), float(factor), int(interval), stop > 0, decision, ranks)

    def report_times(self, limit: int = protocol.MAX_RANK_TIMES) -> list[list[float | int]]:
        """A report's ``rank_times``: [rank, compute_s, wait_s] of this rank and the slowest others."""
        times, own = self.rank_times, self.rank
        slowest = sorted((r for r in times if r != own), key=lambda r: -times[r][0])[:max(0, limit - 1)]
        ranks = sorted([own, *slowest] if own in times else slowest)
        return [[r, round(times[r][0], 6), round(times[r][1], 6)] for r in ranks]


def agreed_run_id(distributed: bool) -> str:
    """An id for this run that every rank shares: the rendezvous id torchrun was given, else rank 0's
    pid and a random part (sent to every rank), so two runs never share a name by default."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none":
        return run_id
    ident = [f"{os.getpid()}-{secrets.token_hex(3)}"]
    if distributed:
        dist.broadcast_object_list(ident, src=0)
    return str(ident[0])


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
