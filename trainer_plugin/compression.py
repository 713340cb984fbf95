"""Gradient compression as DDP communication hooks, each counting bytes sent versus uncompressed.

Byte counts are the payload one rank contributes per bucket: ``numel * 4`` for a plain fp32
all-reduce, ``8 k`` for top-k (fp32 value plus int32 index), ``numel + 4`` for int8 (values plus
an fp32 scale), ``numel * 2`` for bf16 and the P and Q factors for PowerSGD. Top-k, int8 and
bf16 keep the part of the gradient they did not send (error feedback) and add it to the next
step's gradient; PowerSGD keeps its own error per bucket.

Under fp16 the buckets hold loss-scaled gradients. Residuals are kept unscaled (divided by the
loss scale in effect when they are folded, multiplied by the one in effect when they are added
back), so a change of scale does not make them wrong. A bucket that is not finite on some rank
reaches every rank not finite (top-k and int8 mark their payload so), the GradScaler skips the
step on every rank, and every rank leaves its residual (and PowerSGD its error and warm-start
factors) as it was before that step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd

logger = logging.getLogger(__name__)

HOOKS = ("none", "topk", "int8", "powersgd", "bf16")
Hook = Callable[[Any, dist.GradBucket], torch.futures.Future[torch.Tensor]]
#: The loss scale in effect for the backward pass in progress (1.0 without a GradScaler).
LossScale = Callable[[], float | torch.Tensor]


def _unit_scale() -> float:
    return 1.0


@dataclass
class CommCounters:
    """Running totals a hook updates; the plugin reads them every step."""

    bytes_sent: int = 0
    bytes_uncompressed: int = 0
    calls: int = 0

    def count(self, sent: int, uncompressed: int) -> None:
        """Add one bucket's payload."""
        self.bytes_sent += sent
        self.bytes_uncompressed += uncompressed
        self.calls += 1


Sizes = Callable[[list[torch.Tensor]], list[tuple[torch.Tensor, int]]]


def _flat_sizes(params: list[torch.Tensor]) -> list[tuple[torch.Tensor, int]]:
    """Each parameter's share of a flat bucket-sized state, in bucket order."""
    return [(p, p.numel()) for p in params]


class _Layout:
    """Per-bucket state laid out by parameter, so it follows DDP's bucket rebuild and a resume.

    DDP orders a bucket's parameters one way in its first iteration and another once it has
    rebuilt its buckets, and a resumed run starts from the first again. Before a hook uses a
    bucket's state, state laid out in another order is cut into per-parameter pieces and put
    back together in the bucket's order; checkpoints hold the pieces, keyed by parameter index.
    """

    def __init__(self, stores: dict[str, tuple[dict[int, torch.Tensor], Sizes]]) -> None:
        self.stores = stores
        self.index: dict[int, int] = {}  # id(parameter) -> its index in the model
        self.seen: dict[int, list[torch.Tensor]] = {}  # bucket -> the parameter order its state is in
        self.pending: dict[str, dict[int, torch.Tensor]] = {}
        self.loaded: list[str] = []

    def arrange(self, bucket: dist.GradBucket) -> None:
        """Lay the bucket's state out in its current parameter order (a no-op without a parameter index)."""
        if not self.index:
            return
        b, params = bucket.index(), bucket.parameters()
        before = self.seen.get(b)
        if before is not None and [id(p) for p in before] != [id(p) for p in params]:
            self.load(self.pieces())  # buckets were rebuilt: each claims its parameters' pieces again
        first = b not in self.seen
        self.seen[b] = params
        if not first:
            return
        for key in self.loaded:
            store, sizes = self.stores[key]
            pend = self.pending[key]
            owners = [self.index[id(p)] for p, _ in sizes(params)]
            if all(i in pend for i in owners):  # none (PowerSGD: no matrix here) gives an empty one, as PowerSGD has
                parts = [pend.pop(i).reshape(-1) for i in owners]
                buf = bucket.buffer()
                store[b] = torch.cat(parts).to(buf.device) if parts else buf.new_empty(0)

    def pieces(self) -> dict[str, dict[int, torch.Tensor]]:
        """Every store cut into per-parameter pieces (CPU copies), with pieces not yet claimed."""
        out = {key: {i: t.detach().to("cpu", copy=True) for i, t in self.pending.get(key, {}).items()}
               for key in self.stores}
        for key, (store, sizes) in self.stores.items():
            for b, flat in store.items():
                offset = 0
                for p, n in sizes(self.seen[b]):
                    out[key][self.index[id(p)]] = flat[offset:offset + n].detach().to("cpu", copy=True)
                    offset += n
        return out

    def load(self, pieces: dict[str, dict[int, torch.Tensor]]) -> None:
        """Take per-parameter pieces from :meth:`pieces`; buckets claim them as they next run."""
        for store, _ in self.stores.values():
            store.clear()
        self.seen.clear()
        self.pending = {key: {int(i): t for i, t in pieces.get(key, {}).items()} for key in self.stores}
        # only stores that held something are put back (PowerSGD before its start holds no P and Q)
        self.loaded = [key for key, found in self.pending.items() if found]


@dataclass
class _ErrorFeedbackState:
    group: Any
    counters: CommCounters
    ratio: float = 0.05
    loss_scale: LossScale = _unit_scale
    residuals: dict[int, torch.Tensor] = field(default_factory=dict)
    layout: _Layout = field(init=False)

    def __post_init__(self) -> None:
        self.layout = _Layout({"residuals": (self.residuals, _flat_sizes)})

    def add_residual(self, bucket: dist.GradBucket) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        """(bucket plus residual in the bucket's scaled units, the scale, the residual as it was)."""
        self.layout.arrange(bucket)
        buf = bucket.buffer()
        scale = self.loss_scale()
        res = self.residuals.get(bucket.index())
        if res is None or res.shape != buf.shape:
            return buf.float().clone(), scale, None
        return buf.float() + res * scale, scale, res

    def fold(self, index: int, unsent: torch.Tensor, scale: Any, before: torch.Tensor | None,
             reduced: torch.Tensor) -> None:
        """Keep what was not sent, unscaled; keep the residual as it was if the reduced bucket is not finite."""
        finite = torch.isfinite(reduced).all()  # a tensor: no host sync on a GPU
        kept = before if before is not None else torch.zeros_like(unsent)
        self.residuals[index] = torch.where(finite, unsent / scale, kept)

    def state_dict(self) -> dict[str, Any]:
        """This rank's residuals (unscaled), per parameter."""
        return self.layout.pieces()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore residuals from :meth:`state_dict`."""
        self.layout.load(state)


def _world(group: Any) -> int:
    return dist.get_world_size(group)


def _marked(payload: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The payload, all NaN when this rank's gradient is not finite (so every rank sees it)."""
    return torch.where(torch.isfinite(grad).all(), payload, torch.full_like(payload, float("nan")))


def _gather(state: _ErrorFeedbackState, packed: torch.Tensor) -> tuple[list[torch.Tensor], torch.futures.Future[Any]]:
    """Start an all-gather of every rank's packed payload."""
    gathered = [torch.empty_like(packed) for _ in range(_world(state.group))]
    return gathered, dist.all_gather(gathered, packed, group=state.group, async_op=True).get_future()


def _allreduce_hook(state: _ErrorFeedbackState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Plain averaging all-reduce (counted)."""
    n = bucket.buffer().numel() * bucket.buffer().element_size()
    state.counters.count(n, n)
    return default_hooks.allreduce_hook(state.group, bucket)


def _topk_hook(state: _ErrorFeedbackState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Send the k largest-magnitude entries (value, index); keep the rest as residual."""
    buf = bucket.buffer()
    g, scale, before = state.add_residual(bucket)
    k = max(1, int(g.numel() * state.ratio))
    idx = g.abs().topk(k, sorted=False).indices
    vals = _marked(g[idx], g)
    g[idx] = 0.0
    packed = torch.cat([vals, idx.to(torch.int32).view(torch.float32)])
    state.counters.count(packed.numel() * 4, buf.numel() * 4)
    gathered, fut = _gather(state, packed)
    world, index = len(gathered), bucket.index()

    def decode(_: torch.futures.Future[Any]) -> torch.Tensor:
        dense = torch.zeros(buf.numel(), dtype=torch.float32, device=buf.device)
        for part in gathered:
            dense.index_add_(0, part[k:].view(torch.int32).long(), part[:k])
        buf.copy_(dense.div_(world))
        state.fold(index, g, scale, before, buf)
        return buf

    return fut.then(decode)


def _int8_hook(state: _ErrorFeedbackState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Send the gradient as int8 with one fp32 scale per bucket; keep the rounding error."""
    buf = bucket.buffer()
    g, scale, before = state.add_residual(bucket)
    step = _marked(g.abs().max().clamp_min(1e-30) / 127.0, g)
    q = torch.round(torch.nan_to_num(g / step)).clamp_(-127, 127).to(torch.int8)
    unsent = g - q.float() * step
    packed = torch.cat([q, step.float().reshape(1).view(torch.int8)])
    state.counters.count(packed.numel(), buf.numel() * 4)
    gathered, fut = _gather(state, packed)
    world, index, n = len(gathered), bucket.index(), buf.numel()

    def decode(_: torch.futures.Future[Any]) -> torch.Tensor:
        total = torch.zeros(n, dtype=torch.float32, device=buf.device)
        for part in gathered:
            total.add_(part[:n].float() * part[n:].clone().view(torch.float32))
        buf.copy_(total.div_(world))
        state.fold(index, unsent, scale, before, buf)
        return buf

    return fut.then(decode)


def _bf16_hook(state: _ErrorFeedbackState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """All-reduce the bucket cast to bf16 (half the bytes); keep the rounding error."""
    buf = bucket.buffer()
    g, scale, before = state.add_residual(bucket)
    low = g.to(torch.bfloat16)
    unsent = g - low.float()
    state.counters.count(low.numel() * 2, buf.numel() * 4)
    fut = dist.all_reduce(low, group=state.group, async_op=True).get_future()
    world, index = _world(state.group), bucket.index()

    def decode(_: torch.futures.Future[Any]) -> torch.Tensor:
        buf.copy_(low.float().div_(world))
        state.fold(index, unsent, scale, before, buf)
        return buf

    return fut.then(decode)


@dataclass
class _PowerSGDCounted:
    inner: psgd.PowerSGDState
    counters: CommCounters
    loss_scale: LossScale = _unit_scale
    layout: _Layout = field(init=False)

    def __post_init__(self) -> None:
        inner = self.inner
        self.layout = _Layout({"error": (inner.error_dict, _flat_sizes),
                               "p": (inner.p_memory_dict, lambda ps: [(p, n * r) for p, n, _, r in self.compressed(ps)]),
                               "q": (inner.q_memory_dict, lambda ps: [(p, m * r) for p, _, m, r in self.compressed(ps)])})

    def compressed(self, params: list[torch.Tensor]) -> list[tuple[torch.Tensor, int, int, int]]:
        """(tensor, rows, columns, rank) of the tensors PowerSGD compresses, in the order of its P and Q memory."""
        by_shape: dict[tuple[int, int], list[tuple[torch.Tensor, int, int, int]]] = {}
        for p in params:
            n = p.shape[0]
            m = p.numel() // n
            r = min(n, m, self.inner.matrix_approximation_rank)
            if (n + m) * r * self.inner.min_compression_rate < n * m:
                by_shape.setdefault((n, m), []).append((p, n, m, r))
        return [t for group in by_shape.values() for t in group]

    def state_dict(self) -> dict[str, Any]:
        """Step counter, seed generator, this rank's error (unscaled) and the warm-start P and Q, per parameter."""
        return {"iter": self.inner.iter, "rng": self.inner.rng.get_state(), **self.layout.pieces()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.inner.iter = int(state["iter"])
        self.inner.rng.set_state(state["rng"])
        self.layout.load(state)

    def sent_bytes(self, bucket: dist.GradBucket) -> int:
        """Bytes PowerSGD sends for a bucket: P and Q for compressed matrices, the rest plain."""
        grads = bucket.gradients()
        squeezed = self.compressed(grads)
        plain = sum(g.numel() for g in grads) - sum(n * m for _, n, m, _ in squeezed)
        return 4 * (plain + sum((n + m) * r for _, n, m, r in squeezed))


def _powersgd_hook(state: _PowerSGDCounted, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """PyTorch's PowerSGD hook, bytes counted, its error kept unscaled and left as it was on a non-finite step."""
    inner = state.inner
    plain = bucket.buffer().numel() * 4
    if inner.iter < inner.start_powerSGD_iter:
        state.counters.count(plain, plain)
        return psgd.powerSGD_hook(inner, bucket)
    state.counters.count(state.sent_bytes(bucket), plain)
    state.layout.arrange(bucket)
    index, scale = bucket.index(), state.loss_scale()
    error = inner.error_dict.get(index)
    if error is not None:
        inner.error_dict[index] = error * scale  # a new tensor: ``error`` stays as it was
    q = inner.q_memory_dict.get(index)
    q = q.clone() if q is not None else None  # the hook updates Q in place

    def settle(fut: torch.futures.Future[torch.Tensor]) -> torch.Tensor:
        out = fut.value()
        # PowerSGD's own decompression synchronizes the device already: this check costs no extra wait
        if bool(torch.isfinite(out).all()):
            inner.error_dict[index] = inner.error_dict[index] / scale
            return out
        for memory, before in ((inner.error_dict, error), (inner.q_memory_dict, q)):
            if before is None:
                memory.pop(index, None)
            else:
                memory[index] = before
        if q is None:  # the first compressed step: draw fresh factors next time
            inner.p_memory_dict.pop(index, None)
        return out

    return psgd.powerSGD_hook(inner, bucket).then(settle)


#: State keys that differ from rank to rank (the rest is the same on every rank).
_PER_RANK = ("residuals", "error")


class CompressionState:
    """A handle on a hook's state: the trainer passes it to :func:`make_hook`, and checkpoints it."""

    def __init__(self, loss_scale: LossScale | None = None, params: Iterable[torch.Tensor] = ()) -> None:
        self.loss_scale = loss_scale or _unit_scale
        # the model's parameters, in order: checkpointed state is keyed by their index (none: nothing to save)
        self.params = {id(p): i for i, p in enumerate(params)}
        self.hook_state: _ErrorFeedbackState | _PowerSGDCounted | None = None

    def state_dict(self) -> dict[str, Any]:
        """This rank's compression state (CPU tensors); empty without a hook."""
        return self.hook_state.state_dict() if self.hook_state is not None and self.params else {}

    def load_from(self, per_rank: list[dict[str, Any]] | None, rank: int, world: int) -> None:
        """Restore this rank's part of a checkpoint's per-rank states (from :meth:`state_dict` on each rank).

        Saved at another world size, only the parts every rank shares (PowerSGD's counter, seed
        generator and factors) come back; residuals and errors start from zero.
        """
        if self.hook_state is None or not per_rank:
            return
        state = per_rank[rank] if len(per_rank) == world else {
            k: v for k, v in per_rank[0].items() if k not in _PER_RANK}
        if state:
            self.hook_state.load_state_dict(state)


def make_hook(name: str, counters: CommCounters, group: Any = None, topk_ratio: float = 0.05,
              powersgd_rank: int = 2, powersgd_start_iter: int = 10,
              comm: CompressionState | None = None) -> tuple[Hook, Any]:
    """Return (hook, state) for a compression scheme named in HOOKS; ``comm`` gets the state and gives the loss scale."""
    comm = comm or CompressionState()
    hook, state = _make(name, counters, group, topk_ratio, powersgd_rank, powersgd_start_iter, comm.loss_scale)
    state.layout.index = comm.params
    comm.hook_state = state
    return hook, state


def _make(name: str, counters: CommCounters, group: Any, topk_ratio: float, powersgd_rank: int,
          powersgd_start_iter: int, loss_scale: LossScale) -> tuple[Hook, Any]:
    if name == "powersgd":
        inner = psgd.PowerSGDState(process_group=group, matrix_approximation_rank=powersgd_rank,
                                   start_powerSGD_iter=max(2, powersgd_start_iter), min_compression_rate=2,
                                   use_error_feedback=True, warm_start=True, random_seed=0)
        return _powersgd_hook, _PowerSGDCounted(inner, counters, loss_scale)
    if name == "topk" and not 0.0 < topk_ratio <= 1.0:
        raise ValueError(f"compression.topk_ratio: {topk_ratio} not in (0, 1]")
    hooks = {"none": _allreduce_hook, "topk": _topk_hook, "int8": _int8_hook, "bf16": _bf16_hook}
    if name not in hooks:
        raise ValueError(f"compression.hook: unknown {name!r} (expected one of {', '.join(HOOKS)})")
    return hooks[name], _ErrorFeedbackState(group, counters, ratio=topk_ratio, loss_scale=loss_scale)
