"""Gradient compression as DDP communication hooks, each counting bytes sent versus uncompressed.

Byte counts are the payload one rank contributes per bucket: ``numel * 4`` for a plain fp32
all-reduce, ``8 k`` for top-k (fp32 value plus int32 index), ``numel + 4`` for int8 (values plus
an fp32 scale) and the P and Q factors for PowerSGD. Top-k and int8 keep the part of the
gradient they did not send (error feedback) and add it to the next step's gradient.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd

logger = logging.getLogger(__name__)

HOOKS = ("none", "topk", "int8", "powersgd")
Hook = Callable[[Any, dist.GradBucket], torch.futures.Future[torch.Tensor]]


@dataclass
class CommCounters:
    """Running totals a hook updates; the plugin reads them every step."""

    bytes_sent: int = 0
    bytes_uncompressed: int = 0
    calls: int = 0


@dataclass
class _ErrorFeedbackState:
    group: Any
    counters: CommCounters
    ratio: float = 0.05
    residuals: dict[int, torch.Tensor] = field(default_factory=dict)

    def add_residual(self, bucket: dist.GradBucket) -> torch.Tensor:
        buf = bucket.buffer()
        res = self.residuals.get(bucket.index())
        if res is None or res.shape != buf.shape:
            return buf.float().clone()
        return buf.float() + res


def _world(group: Any) -> int:
    return dist.get_world_size(group)


def _allreduce_hook(state: _ErrorFeedbackState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Plain averaging all-reduce (counted)."""
    n = bucket.buffer().numel() * bucket.buffer().element_size()
    state.counters.bytes_sent += n
    state.counters.bytes_uncompressed += n
    state.counters.calls += 1
    return default_hooks.allreduce_hook(state.group, bucket)


def _topk_hook(state: _ErrorFeedbackState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Send the k largest-magnitude entries (value, index); keep the rest as residual."""
    buf = bucket.buffer()
    g = state.add_residual(bucket)
    k = max(1, int(g.numel() * state.ratio))
    idx = g.abs().topk(k, sorted=False).indices
    vals = g[idx]
    g[idx] = 0.0
    state.residuals[bucket.index()] = g
    packed = torch.cat([vals, idx.to(torch.int32).view(torch.float32)])
    world = _world(state.group)
    gathered = [torch.empty_like(packed) for _ in range(world)]
    state.counters.bytes_sent += packed.numel() * 4
    state.counters.bytes_uncompressed += buf.numel() * 4
    state.counters.calls += 1
    fut = dist.all_gather(gathered, packed, group=state.group, async_op=True).get_future()

    def decode(_: torch.futures.Future[Any]) -> torch.Tensor:
        dense = torch.zeros(buf.numel(), dtype=torch.float32, device=buf.device)
        for part in gathered:
            dense.index_add_(0, part[k:].view(torch.int32).long(), part[:k])
        buf.copy_(dense.div_(world))
        return buf

    return fut.then(decode)


def _int8_hook(state: _ErrorFeedbackState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Send the gradient as int8 with one fp32 scale per bucket; keep the rounding error."""
    buf = bucket.buffer()
    g = state.add_residual(bucket)
    scale = g.abs().max().clamp_min(1e-30) / 127.0
    q = torch.round(g / scale).clamp_(-127, 127).to(torch.int8)
    state.residuals[bucket.index()] = g - q.float() * scale
    packed = torch.cat([q, scale.float().reshape(1).view(torch.int8)])
    world = _world(state.group)
    gathered = [torch.empty_like(packed) for _ in range(world)]
    state.counters.bytes_sent += packed.numel()
    state.counters.bytes_uncompressed += buf.numel() * 4
    state.counters.calls += 1
    fut = dist.all_gather(gathered, packed, group=state.group, async_op=True).get_future()
    n = buf.numel()

    def decode(_: torch.futures.Future[Any]) -> torch.Tensor:
        total = torch.zeros(n, dtype=torch.float32, device=buf.device)
        for part in gathered:
            total.add_(part[:n].float() * part[n:].clone().view(torch.float32))
        buf.copy_(total.div_(world))
        return buf

    return fut.then(decode)


@dataclass
class _PowerSGDCounted:
    inner: psgd.PowerSGDState
    counters: CommCounters


def _powersgd_bytes(bucket: dist.GradBucket, rank: int, min_rate: float) -> int:
    """Bytes PowerSGD sends for a bucket: P and Q for compressible matrices, the rest plain."""
    total = 0
    for grad in bucket.gradients():
        if grad.ndim > 1:
            rows = grad.shape[0]
            cols = grad.numel() // rows
            r = min(rows, cols, rank)
            if (rows + cols) * r * min_rate < rows * cols:
                total += (rows + cols) * r * 4
                continue
        total += grad.numel() * 4
    return total


def _powersgd_hook(state: _PowerSGDCounted, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """PyTorch's PowerSGD hook, with bytes counted."""
    inner = state.inner
    plain = bucket.buffer().numel() * 4
    if inner.iter < inner.start_powerSGD_iter:
        sent = plain
    else:
        sent = _powersgd_bytes(bucket, inner.matrix_approximation_rank, inner.min_compression_rate)
    state.counters.bytes_sent += sent
    state.counters.bytes_uncompressed += plain
    state.counters.calls += 1
    return psgd.powerSGD_hook(inner, bucket)


def make_hook(name: str, counters: CommCounters, group: Any = None, topk_ratio: float = 0.05,
              powersgd_rank: int = 2, powersgd_start_iter: int = 10) -> tuple[Hook, Any]:
    """Return (hook, state) for a compression scheme named in HOOKS."""
    if name == "none":
        return _allreduce_hook, _ErrorFeedbackState(group, counters)
    if name == "topk":
        if not 0.0 < topk_ratio <= 1.0:
            raise ValueError(f"compression.topk_ratio: {topk_ratio} not in (0, 1]")
        return _topk_hook, _ErrorFeedbackState(group, counters, ratio=topk_ratio)
    if name == "int8":
        return _int8_hook, _ErrorFeedbackState(group, counters)
    if name == "powersgd":
        inner = psgd.PowerSGDState(process_group=group, matrix_approximation_rank=powersgd_rank,
                                   start_powerSGD_iter=max(2, powersgd_start_iter), min_compression_rate=2,
                                   use_error_feedback=True, warm_start=True, random_seed=0)
        return _powersgd_hook, _PowerSGDCounted(inner, counters)
    raise ValueError(f"compression.hook: unknown {name!r} (expected one of {', '.join(HOOKS)})")
