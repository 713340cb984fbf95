"""One gloo rank under torchrun: the plugin on FSDP2, compiled and clipped models, against hand computations.

Usage: torchrun --nproc-per-node 2 sharded_worker.py OUT.json; writes OUT.json.rank<r>.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

from gputuned.trainer_plugin.config import Config
from gputuned.trainer_plugin.noise_scale import NoiseScaleEstimator
from gputuned.trainer_plugin.plugin import TrainingPlugin
from gputuned.trainer_plugin.trainer import Callbacks, Trainer

BATCH = 16  # global; each rank takes half
COMPILE_BACKEND = os.environ.get("GPUTUNED_TEST_COMPILE_BACKEND", "inductor")


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def _batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(BATCH // 2, 8, generator=g), torch.randint(0, 4, (BATCH // 2,), generator=g)


def _by_hand(ref: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """This rank's squared gradient norm and the averaged gradient's, from an unwrapped copy (left in its grads)."""
    ref.zero_grad()
    F.cross_entropy(ref(x), y).backward()
    local = 0.0
    for p in ref.parameters():
        local += float((p.grad.double() ** 2).sum())
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()
    return {"local_sq": local, "global_sq": float(sum((p.grad.double() ** 2).sum() for p in ref.parameters()))}


def _measure(model: torch.nn.Module, wrapped: torch.nn.Module, steps: int = 2) -> dict[str, Any]:
    """Train ``wrapped`` a few steps through the plugin; its view of the last step beside the hand one."""
    rank = dist.get_rank()
    ref = copy.deepcopy(model)
    plugin = TrainingPlugin(job="t", batch_size=BATCH, connect=False, norm_every=1, sync_interval=1000)
    plugin.instrument(wrapped)
    plugin._last_report = time.monotonic() + 3600  # no report (it would start a new interval) while compiling
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.05)
    x, y = _batch(rank)
    hands = []
    for _ in range(steps):
        opt.zero_grad()
        hands.append(_by_hand(ref, x, y))
        with plugin.step():
            F.cross_entropy(wrapped(x), y).backward()
        with torch.no_grad():  # keep the reference where the measured model goes
            for p in ref.parameters():
                p -= 0.05 * p.grad
        opt.step()
    local, glob, _, batch = plugin._interval.norms[-1]
    stats = plugin.interval_stats()  # folds every sampled step's norms into the noise scale
    mean = {k: sum(h[k] for h in hands) / steps for k in hands[0]}
    expected = NoiseScaleEstimator()
    expected.update(mean["local_sq"], BATCH / 2, mean["global_sq"], BATCH)
    return {**{f"expected_{k}": v for k, v in hands[-1].items()}, "local_sq": float(torch.stack(local).sum()),
            "global_sq": float(torch.stack(glob).sum()), "comm_time_s": stats.get("comm_time_s", 0.0),
            "bytes": plugin.counters.bytes_sent, "grad_norm": stats.get("grad_norm"), "batch": batch,
            "expected_grad_norm": mean["global_sq"] ** 0.5, "noise_scale": stats.get("grad_noise_scale"),
            "expected_noise_scale": expected.noise_scale, "probe": type(plugin._probe).__name__}


def _fsdp() -> dict[str, Any]:
    model = _tiny()
    sharded = copy.deepcopy(model)
    fully_shard(sharded[0])
    fully_shard(sharded)
    return _measure(model, sharded)


def _ddp_compiled() -> dict[str, Any]:
    model = _tiny()
    return _measure(model, DDP(torch.compile(copy.deepcopy(model), backend=COMPILE_BACKEND)))


def _compiled_ddp() -> dict[str, Any]:
    model = _tiny()
    return _measure(model, torch.compile(DDP(copy.deepcopy(model)), backend=COMPILE_BACKEND))


def _clipped() -> dict[str, Any]:
    """The trainer under fp16 with clipping: the plugin's norm is the unscaled, unclipped one."""
    seen: dict[str, Any] = {}

    def on_step_end(t: Trainer) -> None:
        if t.step == 1:
            seen["plugin_grad_norm"] = t.plugin.interval_stats()["grad_norm"]
            seen["clip_total_norm"] = float(t.grad_norm)

    cfg = Config.model_validate({"train": {"precision": "fp16", "max_grad_norm": 0.05, "max_steps": 2,
                                           "device": "cpu"},
                                 "plugin": {"enabled": False, "norm_every": 1}, "data": {"batch_size": 32},
                                 "optim": {"momentum": 0.0}})
    trainer = Trainer(cfg, Callbacks(on_step_end=on_step_end))

    def pre_step(opt: torch.optim.Optimizer, *_: Any) -> None:
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        seen.setdefault("applied_norms", []).append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))

    trainer.optimizer.register_step_pre_hook(pre_step)
    trainer.fit()
    seen["loss_scale"] = trainer.scaler.get_scale()
    trainer.close()
    return seen


def main() -> None:
    """Run every case on this rank and write its results."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    out = {"fsdp": _fsdp(), "ddp_compiled": _ddp_compiled(), "compiled_ddp": _compiled_ddp(),
           "clipped": _clipped()}
    with open(f"{sys.argv[1]}.rank{dist.get_rank()}", "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
