"""Scripted distributed runs proving the trainer's properties; each rank writes a JSON result.

Run with ``torchrun --nproc-per-node 2 -m gputuned.trainer_plugin.scenarios NAME OUT.json [CONFIG]``;
tests and bench/ scripts read ``OUT.json.rank<r>``. Faults are injected through the trainer's
callbacks (a loss made infinite on one rank, a SIGKILL half-way through a checkpoint write).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from gputuned.trainer_plugin.config import Config, parse_config
from gputuned.trainer_plugin.plain_loop import PlainLoop
from gputuned.trainer_plugin.process_group import exit_distributed
from gputuned.trainer_plugin.trainer import Callbacks, Trainer

logger = logging.getLogger(__name__)

#: Settings of the example task used by every scenario unless a config file is given.
BASE: dict[str, Any] = {
    "train": {"epochs": 12, "log_every": 1000},
    "data": {"batch_size": 64},
    "optim": {"lr": 0.1, "lr_scaling": "none"},
    "plugin": {"enabled": False},
}


def _config(path: str | None, overrides: dict[str, Any]) -> Config:
    """BASE, updated table by table from the TOML file at path (if any), then overrides."""
    data = {k: dict(v) for k, v in BASE.items()}
    if path:
        with open(path, "rb") as f:
            for section, table in tomllib.load(f).items():
                data.setdefault(section, {}).update(table)
    return parse_config(data, overrides)


def compression(cfg_path: str | None) -> dict[str, Any]:
    """Train the example once per hook in one process group; accuracy and bytes per hook."""
    out: dict[str, Any] = {}
    for hook in ("none", "topk", "int8", "powersgd"):
        trainer = Trainer(_config(cfg_path, {"compression.hook": hook}))
        t0 = time.perf_counter()
        result = trainer.fit()
        c = trainer.plugin.counters
        out[hook] = {"accuracy": result.test_accuracy, "loss": result.test_loss, "steps": result.steps,
                     "seconds": time.perf_counter() - t0, "bytes_sent": c.bytes_sent,
                     "bytes_uncompressed": c.bytes_uncompressed}
        trainer.close()
    out["grad_check"] = _grad_check(cfg_path)
    return out


def _grad_check(cfg_path: str | None) -> dict[str, float]:
    """One step with DDP's own all-reduce: the plugin's squared gradient norms vs direct ones."""
    import copy

    from gputuned.trainer_plugin.data import ResizableBatchSampler

    trainer = Trainer(_config(cfg_path, {"train.max_steps": 1}))
    plugin = trainer.plugin
    plugin.norm_every = 1
    plugin._last_report = time.monotonic() + 3600  # keep this step's norms for inspection
    model = copy.deepcopy(trainer.model)
    chunk, _ = ResizableBatchSampler(len(trainer.y_train), trainer.cfg.data.batch_size, 0, 1,
                                     seed=trainer.cfg.data.seed).next_batch()
    expected = {}
    for name, idx in (("global", chunk), ("local", chunk[trainer.rank::trainer.world])):
        model.zero_grad()
        F.cross_entropy(model(trainer.x_train[idx]), trainer.y_train[idx]).backward()
        expected[name] = float(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    trainer.fit()
    local, glob, _, _ = plugin._interval.norms[0]
    measured = {"local": float(torch.stack(local).sum()),
                "global": float(torch.stack(glob).sum())}
    trainer.close()
    return {"expected_global_sq": expected["global"], "expected_local_sq": expected["local"],
            "global_sq": measured["global"], "local_sq": measured["local"]}


def overflow(cfg_path: str | None) -> dict[str, Any]:
    """fp16 with a loss scaler growing every 4 clean steps; rank 1's loss becomes inf at step 5."""
    seen: dict[str, Any] = {"scales": [], "param_sums": []}

    def on_loss(tr: Trainer, loss: torch.Tensor) -> torch.Tensor:
        if tr.step == 5 and tr.rank == 1:
            return loss * float("inf")
        return loss

    def on_step_end(tr: Trainer) -> None:
        seen["scales"].append(tr.scaler.get_scale())
        seen["param_sums"].append(float(sum(p.double().sum() for p in tr.model.parameters())))

    trainer = Trainer(_config(cfg_path, {"train.precision": "fp16", "train.max_steps": 10,
                                         "train.loss_scale_growth_interval": 4, "optim.momentum": 0.0}),
                      Callbacks(on_loss=on_loss, on_step_end=on_step_end))
    result = trainer.fit()
    trainer.close()
    return {**seen, "overflows": result.overflows, "precision": trainer.precision}


def batch_switch(cfg_path: str | None) -> dict[str, Any]:
    """A daemon's batch-size decision mid-epoch; the log of indices each rank trained on."""
    lrs: dict[int, float] = {}  # the LR each step ran with, read while its loss is formed

    def slow(tr: Trainer) -> None:
        if tr.epoch == 0:
            time.sleep(0.02)  # leave time for reports and the decision to travel within epoch 0

    def note_lr(tr: Trainer, loss: torch.Tensor) -> torch.Tensor:
        lrs[tr.step] = tr.optimizer.param_groups[0]["lr"]
        return loss

    trainer = Trainer(_config(cfg_path, {"train.epochs": 2, "plugin.sync_interval": 4}),
                      Callbacks(on_step_end=slow, on_loss=note_lr), record_batches=True)
    result = trainer.fit()
    trainer.close()
    return {"batch_log": result.batch_log, "applied": trainer.plugin.decisions_applied,
            "refused": trainer.plugin.decisions_refused, "lr_factor": trainer.plugin.lr_factor,
            "num_samples": len(trainer.y_train), "accuracy": result.test_accuracy,
            "lrs": [lrs[s] for s in sorted(lrs)]}


def data_bound(cfg_path: str | None) -> dict[str, Any]:
    """A loop spending 30 ms per step outside ``plugin.step()``, sent a stop signal mid-run.

    GPUTUNED_SIGNAL (TERM or INT) is sent by each rank in GPUTUNED_SIGNAL_RANKS (comma-separated)
    to itself at the first step from GPUTUNED_SIGNAL_AT_STEP on where a decision exchange has
    just started: the worst moment, as the stop vote then waits for the next exchange. The
    result says how long until the run had stopped with its checkpoint written (``fit`` returned).
    """
    sig = signal.Signals[f"SIG{os.environ.get('GPUTUNED_SIGNAL', 'TERM')}"]
    at = int(os.environ.get("GPUTUNED_SIGNAL_AT_STEP", "40"))
    ranks = {int(r) for r in os.environ.get("GPUTUNED_SIGNAL_RANKS", "0").split(",")}
    sent: list[float] = []

    def loop_work(tr: Trainer) -> None:
        time.sleep(0.03)
        if tr.step >= at and tr.plugin.syncing and not sent and tr.rank in ranks:
            sent.append(time.monotonic())
            os.kill(os.getpid(), sig)

    trainer = Trainer(_config(cfg_path, {}), Callbacks(on_step_end=loop_work))
    result = trainer.fit()
    finished = time.monotonic()
    trainer.close()
    saved = [step for step, _ in trainer.ckpt.list()] if trainer.ckpt is not None else []
    return {"steps": result.steps, "stopped_by_signal": result.stopped_early, "signalled": bool(sent),
            "latency_s": finished - sent[0] if sent else None, "checkpoints": saved}


def resume(cfg_path: str | None) -> dict[str, Any]:
    """Train with checkpoints, killing a rank with SIGKILL in the first attempt as the env says.

    GPUTUNED_KILL_AT_STEP=s: rank 0 dies half-way through writing checkpoint s.
    GPUTUNED_KILL_AFTER_STEP=s with GPUTUNED_KILL_RANK=r: rank r dies right after step s.
    The kill fires only in the first attempt (TORCHELASTIC_RESTART_COUNT 0), so torchrun's
    restart resumes from the last complete checkpoint.
    """
    kill_at = int(os.environ.get("GPUTUNED_KILL_AT_STEP", "-1"))
    kill_after = int(os.environ.get("GPUTUNED_KILL_AFTER_STEP", "-1"))
    kill_rank = int(os.environ.get("GPUTUNED_KILL_RANK", "0"))
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    def after_step(tr: Trainer) -> None:
        if tr.step == kill_after and tr.rank == kill_rank and attempt == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    def partial(step: int, tmp: Path, written: int) -> None:
        if step == kill_at and attempt == 0:
            logger.warning("fault injection: SIGKILL rank 0 with %s half written (%d bytes)", tmp, written)
            os.kill(os.getpid(), signal.SIGKILL)

    cfg = _config(cfg_path, {})
    trainer = Trainer(cfg, Callbacks(on_partial_checkpoint=partial, on_step_end=after_step))
    result = trainer.fit()
    trainer.close()
    return {"accuracy": result.test_accuracy, "loss": result.test_loss, "steps": result.steps,
            "attempt": attempt, "resumed_from": trainer.resumed_from,
            "checkpoints_written": trainer.ckpt.written if trainer.ckpt else 0}


def throughput(cfg_path: str | None) -> dict[str, Any]:
    """Samples/s of a hand-written DDP loop and of the trainer (plugin on) on the same samples.

    Two comparisons. Whole runs: rounds of one plain run and one trainer run of max_steps
    each (which goes first alternates), each counting the samples it trained on. Interleaved
    blocks: one trainer run whose step-end callback runs the plain loop for a block of steps
    after every block of trainer steps, so both see the same machine load within seconds;
    blocks are GPUTUNED_BENCH_BLOCK_STEPS steps (default 500, about a second here, so that a
    block carries its share of the plugin's exchanges and norm samples, which are spaced in
    time).
    """
    cfg = _config(cfg_path, {"train.eval_every_epoch": False, "train.epochs": 1000})
    steps = cfg.train.max_steps or 300
    plain: list[float] = []
    ours: list[float] = []
    report: dict[str, Any] = {}
    connected = False
    for r in range(int(os.environ.get("GPUTUNED_BENCH_ROUNDS", "3"))):
        for which in ("plain", "trainer") if r % 2 == 0 else ("trainer", "plain"):
            if which == "plain":
                loop = PlainLoop(cfg)
                dist.barrier()
                t0 = time.perf_counter()
                plain.append(loop.run(steps) / (time.perf_counter() - t0))
                continue
            trainer = Trainer(cfg)
            dist.barrier()
            t0 = time.perf_counter()
            trainer.fit()
            ours.append(trainer.samples_seen / (time.perf_counter() - t0))
            report = trainer.plugin.interval_stats()
            connected = connected or bool(trainer.plugin.client and trainer.plugin.client.connects_total)
            trainer.close()
    n_blocks = int(os.environ.get("GPUTUNED_BENCH_BLOCKS", "40"))
    block = int(os.environ.get("GPUTUNED_BENCH_BLOCK_STEPS", "500"))
    blocks = _interleaved(cfg, n_blocks, block)
    if os.environ.get("GPUTUNED_BENCH_AA"):
        blocks["aa_block_ratios"] = _plain_against_itself(cfg, n_blocks, block)
    return {"plain_samples_per_s": plain, "trainer_samples_per_s": ours, "steps": steps,
            "connected": connected, "last_stats": report, **blocks}


def _plain_against_itself(cfg: Config, blocks: int, block: int) -> list[float]:
    """The same block alternation with two identical plain loops: the measurement's own spread.

    Ratio of each block of the first loop to the block of the second right after it, as the
    trainer/plain pairs are formed; any departure from 1 is the machine, not a loop.
    """
    a, b = PlainLoop(cfg), PlainLoop(cfg)
    b.run(block)
    ratios = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        na = a.run(block)
        t1 = time.perf_counter()
        nb = b.run(block)
        ratios.append((na / (t1 - t0)) / (nb / (time.perf_counter() - t1)))
    return ratios


def _interleaved(cfg: Config, blocks: int, block: int) -> dict[str, Any]:
    """Alternate blocks of trainer and plain-loop steps in one run; samples/s of each block."""
    plain = PlainLoop(cfg)
    plain.run(block)  # warm-up, as the trainer's first block is dropped
    out: dict[str, Any] = {"block_steps": block, "plain_block_samples_per_s": [], "trainer_block_samples_per_s": [],
                           "plain_block_cpu_s": [], "trainer_block_cpu_s": []}
    mark = {"t": 0.0, "cpu": 0.0, "samples": 0}

    def on_step_end(tr: Trainer) -> None:
        if tr.step % block:
            return
        now, cpu = time.perf_counter(), time.process_time()  # process CPU: all threads, gloo's too
        if tr.step > block:  # the first block includes start-up
            out["trainer_block_samples_per_s"].append((tr.samples_seen - mark["samples"]) / (now - mark["t"]))
            out["trainer_block_cpu_s"].append(cpu - mark["cpu"])
        t0, c0 = time.perf_counter(), time.process_time()
        n = plain.run(block)
        out["plain_block_samples_per_s"].append(n / (time.perf_counter() - t0))
        out["plain_block_cpu_s"].append(time.process_time() - c0)
        mark.update(t=time.perf_counter(), cpu=time.process_time(), samples=tr.samples_seen)

    trainer = Trainer(cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": (blocks + 1) * block})}),
                      Callbacks(on_step_end=on_step_end))
    dist.barrier()
    trainer.fit()
    trainer.close()
    for key in ("plain_block_samples_per_s", "plain_block_cpu_s"):
        out[key] = out[key][1:]  # pair trainer block k with the plain block right after it
    return out


def _timed_run(cfg_path: str | None, on_loss: Any) -> dict[str, Any]:
    """Train connected to the daemon (plugin.socket, plugin.job) for GPUTUNED_RUN_S s of wall time from step 1.

    Every step of every rank waits GPUTUNED_DEVICE_MS (0) ms, as for a GPU's kernels: with it, the
    step rate is set by that wait rather than by a CPU other processes share.
    """
    run_s = float(os.environ.get("GPUTUNED_RUN_S", "40"))
    device_s = float(os.environ.get("GPUTUNED_DEVICE_MS", "0")) / 1000

    def device_then(tr: Trainer, loss: torch.Tensor) -> torch.Tensor:
        time.sleep(device_s)
        return on_loss(tr, loss)

    def on_step_end(tr: Trainer) -> None:
        if tr.step == 1:
            tr.stop_at = time.monotonic() + run_s
        if time.monotonic() > tr.stop_at:
            tr.plugin.request_stop()  # every rank stops at the same step

    trainer = Trainer(_config(cfg_path, {"train.epochs": 100000, "train.eval_every_epoch": False}),
                      Callbacks(on_loss=device_then, on_step_end=on_step_end))
    result = trainer.fit()
    trainer.close()
    return {"steps": result.steps, "profile": trainer.plugin.last_profile}


def straggler(cfg_path: str | None) -> dict[str, Any]:
    """Rank GPUTUNED_SLOW_RANK (1) is paused 0.3 s of every 0.6 s inside its steps, GPUTUNED_SLOW_AFTER_S (20) after step 1."""
    slow_rank = int(os.environ.get("GPUTUNED_SLOW_RANK", "1"))
    after = float(os.environ.get("GPUTUNED_SLOW_AFTER_S", "20"))
    state: dict[str, float] = {}

    def on_loss(tr: Trainer, loss: torch.Tensor) -> torch.Tensor:
        now = time.monotonic()
        start = state.setdefault("start", now + after)
        if tr.rank == slow_rank and now >= start and (now - start) % 0.6 < 0.3:
            state.setdefault("onset", time.time())
            time.sleep(0.3 - (now - start) % 0.6)  # a GPU that stalls half the time (clock, thermal, neighbour)
        return loss

    return {**_timed_run(cfg_path, on_loss), "onset": state.get("onset")}


def data_stall(cfg_path: str | None) -> dict[str, Any]:
    """Every rank's batches cost GPUTUNED_LOAD_MS (20) ms of CPU work to load: a CPU-bound data loader."""
    cost = float(os.environ.get("GPUTUNED_LOAD_MS", "20")) / 1000

    def on_loss(tr: Trainer, loss: torch.Tensor) -> torch.Tensor:
        if not hasattr(tr.prefetcher, "slow"):
            plain = tr.prefetcher.next

            def slow() -> Any:
                end = time.perf_counter() + cost
                while time.perf_counter() < end:  # decoding and augmenting on the CPU
                    pass
                return plain()
            tr.prefetcher.slow = tr.prefetcher.next = slow
        return loss

    return _timed_run(cfg_path, on_loss)


SCENARIOS = {"compression": compression, "overflow": overflow, "batch_switch": batch_switch, "resume": resume,
             "throughput": throughput, "data_bound": data_bound, "straggler": straggler, "data_stall": data_stall}


def main(argv: list[str] | None = None) -> int:
    """Run one scenario; write its result to OUT.rank<r>."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=os.environ.get("GPUTUNED_LOG", "WARNING"),
                        format="%(asctime)s rank" + os.environ.get("RANK", "0") + " %(name)s: %(message)s")
    torch.set_num_threads(1)
    name, out = args[0], args[1]
    cfg_path = args[2] if len(args) > 2 else None
    result = SCENARIOS[name](cfg_path)
    rank = dist.get_rank() if dist.is_initialized() else 0
    Path(f"{out}.rank{rank}").write_text(json.dumps(result))
    if dist.is_initialized():
        exit_distributed(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
