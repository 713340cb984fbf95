"""Joining torchrun's process group, this rank's place in it, and leaving it when a worker's work is done."""

from __future__ import annotations

import logging
import os
import sys

import torch
import torch.distributed as dist


def init_distributed() -> bool:
    """Initialise the process group from torchrun's environment (once); True if distributed."""
    if dist.is_initialized():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # torchrun keeps one TCP store across elastic restarts; a per-attempt prefix stops a restarted
    # worker from reading the dead attempt's gloo/NCCL addresses (seen as connectFullMesh failures).
    store, rank, world = next(dist.rendezvous("env://"))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend, store=dist.PrefixStore(f"gputuned/attempt{attempt}/", store),
                            rank=rank, world_size=world)
    return True


def topology() -> tuple[bool, int, int]:
    """Whether a process group is up, this rank and the world size (0 and 1 without a group)."""
    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def exit_distributed(code: int = 0) -> None:
    """End a torchrun worker whose work and output are complete, skipping teardown.

    Destroying a gloo process group (or the interpreter's teardown after it) now and then
    aborts a finished rank ("terminate called without an active exception", exit -6), which
    torchrun reports as a failed run. After a barrier every rank is done, so exit directly.
    """
    if dist.is_initialized():
        dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
