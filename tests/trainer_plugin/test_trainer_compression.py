"""Compression hooks under fp16 and across a kill: two gloo ranks on the CPU under torchrun.

Run as a test file by pytest; run as a script by torchrun it is the worker
(``torchrun --nproc-per-node 2 tests/trainer_plugin/test_trainer_compression.py MODE OUT.json [TMP]``):

- ``overflow``: per hook (GPUTUNED_HOOKS, default topk int8 powersgd bf16), the same fp16 run of
  GPUTUNED_STEPS (40) steps with and without an inf in rank 1's loss at step 5; overflows, final
  loss scale and test accuracy of each.
- ``resume``: per hook (topk, powersgd), a run straight through and a run SIGKILLed on both ranks
  after step 15 and restarted by torchrun from its step-10 checkpoint; the final parameters of each.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from gputuned.trainer_plugin.config import parse_config
from gputuned.trainer_plugin.process_group import exit_distributed
from gputuned.trainer_plugin.trainer import Callbacks, Trainer

pytestmark = pytest.mark.slow

HOOKS = ("topk", "int8", "powersgd", "bf16")
INF_STEP, INF_RANK = 5, 1
RESUME_STEPS, CKPT_EVERY, KILL_AFTER = 30, 10, 15
BASE = {"train.epochs": 100, "train.eval_every_epoch": False, "train.log_every": 1000,
        "data.batch_size": 64, "optim.lr": 0.1, "optim.lr_scaling": "none", "plugin.enabled": False}


def _fp16_run(hook: str, steps: int, epochs: int, inject: bool) -> dict[str, Any]:
    """One fp16 run with a compression hook; an inf in one rank's loss at INF_STEP when ``inject``."""
    def on_loss(tr: Trainer, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("inf") if inject and tr.step == INF_STEP and tr.rank == INF_RANK else loss

    cfg = parse_config({}, {**BASE, "train.precision": "fp16", "train.max_steps": steps, "train.epochs": epochs, "compression.hook": hook,
                            "compression.powersgd_start_iter": 2})
    trainer = Trainer(cfg, Callbacks(on_loss=on_loss))
    t0 = time.perf_counter()
    result = trainer.fit()
    trainer.close()
    return {"overflows": result.overflows, "scale": trainer.scaler.get_scale(), "accuracy": result.test_accuracy,
            "loss": result.test_loss, "seconds": time.perf_counter() - t0}


def overflow(out: str, tmp: str) -> dict[str, Any]:
    """Each hook's fp16 run with and without the injected overflow."""
    steps, epochs = int(os.environ.get("GPUTUNED_STEPS", "40")), int(os.environ.get("GPUTUNED_EPOCHS", "100"))
    hooks = os.environ.get("GPUTUNED_HOOKS", " ".join(HOOKS)).split()
    return {hook: {"clean": _fp16_run(hook, steps, epochs, False), "inf": _fp16_run(hook, steps, epochs, True)}
            for hook in hooks}


def resume(out: str, tmp: str) -> dict[str, Any]:
    """Per hook, a run straight through and one killed after KILL_AFTER (skipped once its result is on disk)."""
    results: dict[str, Any] = {}
    rank = int(os.environ["RANK"])
    for hook in os.environ.get("GPUTUNED_HOOKS", "topk powersgd").split():
        for mode in ("whole", "killed"):
            done = Path(tmp) / f"{hook}-{mode}.rank{rank}.pt"
            if not done.exists():
                _resume_run(hook, mode, Path(tmp) / f"ck-{hook}-{mode}", done)
            results[f"{hook}-{mode}"] = str(done)
    return results


def _resume_run(hook: str, mode: str, ck: Path, done: Path) -> None:
    def kill(tr: Trainer) -> None:
        if mode == "killed" and tr.step == KILL_AFTER and tr.resumed_from is None:
            os.kill(os.getpid(), signal.SIGKILL)

    cfg = parse_config({}, {**BASE, "train.precision": "fp32", "train.max_steps": RESUME_STEPS,
                            "compression.hook": hook, "compression.powersgd_start_iter": 3,
                            "checkpoint.dir": str(ck), "checkpoint.every_steps": CKPT_EVERY,
                            "checkpoint.asynchronous": False})
    trainer = Trainer(cfg, Callbacks(on_step_end=kill))
    trainer.fit()
    trainer.close()
    torch.save({"params": [p.detach().clone() for p in trainer.model.parameters()],
                "resumed_from": trainer.resumed_from}, done)
    dist.barrier()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(mode: str, tmp: Path, restarts: int = 0, env: dict[str, str] | None = None) -> list[dict]:
    """Run this file's worker on 2 gloo ranks under torchrun; each rank's JSON result."""
    out = tmp / f"{mode}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(_free_port()), "--max-restarts", str(restarts), __file__, mode, str(out), str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(Path(f"{out}.rank{r}").read_text()) for r in (0, 1)]


def both(out: str, tmp: str) -> dict[str, Any]:
    """``overflow`` (its result kept on disk, so a restart skips it), then ``resume``: one torchrun for both tests."""
    kept = Path(tmp) / f"overflow.rank{os.environ['RANK']}.json"
    if not kept.exists():
        kept.write_text(json.dumps(overflow(out, tmp)))
        dist.barrier()
    return {"overflow": json.loads(kept.read_text()), "resume": resume(out, tmp)}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Both modes in one torchrun (starting torch on two ranks costs more than the training here)."""
    tmp = tmp_path_factory.mktemp("compression")
    return tmp, run_worker("both", tmp, restarts=2, env={"GPUTUNED_STEPS": "1000", "GPUTUNED_EPOCHS": "5"})


def test_one_overflow_under_fp16_costs_one_skipped_step_with_each_hook(results):
    """An inf in rank 1's loss at step 5: one backoff, not one per step; accuracy as without it."""
    r0, r1 = (r["overflow"] for r in results[1])
    for hook in HOOKS:
        clean, inf = r0[hook]["clean"], r0[hook]["inf"]
        assert clean["overflows"] == 0 and 1 <= inf["overflows"] <= 3, (hook, clean, inf)
        assert inf["scale"] >= clean["scale"] / 4, (hook, inf)  # backed off once, no collapse
        assert abs(inf["accuracy"] - clean["accuracy"]) <= 0.01, (hook, inf["accuracy"], clean["accuracy"])
        assert r1[hook]["inf"]["accuracy"] == inf["accuracy"]  # the replicas stayed identical


def test_kill_and_resume_with_topk_and_powersgd_is_bit_identical(results):
    """SIGKILL on both ranks after step 15, torchrun restarts, the step-10 checkpoint resumes."""
    tmp = results[0]
    for hook in ("topk", "powersgd"):
        for rank in (0, 1):
            whole = torch.load(tmp / f"{hook}-whole.rank{rank}.pt")
            killed = torch.load(tmp / f"{hook}-killed.rank{rank}.pt")
            assert whole["resumed_from"] is None and killed["resumed_from"] == CKPT_EVERY
            for a, b in zip(whole["params"], killed["params"], strict=True):
                assert torch.equal(a, b), hook


def main(argv: list[str]) -> int:
    """Worker entry point under torchrun: run MODE, write OUT.rank<r>."""
    torch.set_num_threads(1)
    mode, out = argv[0], argv[1]
    tmp = argv[2] if len(argv) > 2 else str(Path(out).parent)
    result = {"overflow": overflow, "resume": resume, "both": both}[mode](out, tmp)
    Path(f"{out}.rank{dist.get_rank()}").write_text(json.dumps(result))
    exit_distributed(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
