"""The loop a practitioner would write by hand, the trainer's yardstick in the throughput scenario."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from gputuned.trainer_plugin.config import Config
from gputuned.trainer_plugin.process_group import init_distributed


class PlainLoop:
    """The loop a practitioner would write by hand: DDP, SGD, in-memory tensors, nothing else.

    Same model, data, optimizer and fp32 as the trainer, and the same sample stream shape:
    a fresh permutation per epoch cut into global batches, the last one partial.
    """

    def __init__(self, cfg: Config) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        from gputuned.trainer_plugin.data import load_digits
        from gputuned.trainer_plugin.models import build_model

        init_distributed()
        torch.manual_seed(cfg.train.seed)
        self.x, self.y, _, _ = load_digits(cfg.data.seed)
        self.model = DDP(build_model(cfg.model))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.bs = cfg.data.batch_size
        self.gen = torch.Generator().manual_seed(cfg.data.seed)
        self.perm = torch.randperm(len(self.y), generator=self.gen)
        self.start = 0

    def run(self, steps: int) -> int:
        """Train ``steps`` steps; return the (global) samples trained on."""
        n, seen = len(self.y), 0
        for _ in range(steps):
            if self.start >= n:
                self.perm, self.start = torch.randperm(n, generator=self.gen), 0
            idx = self.perm[self.start:self.start + self.bs][self.rank::self.world]
            loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            seen += min(self.bs, n - self.start)
            self.start += self.bs
        return seen
