"""A resumed fp16 run counts every loss-scale overflow of the run before its checkpoint, reported or not."""

from __future__ import annotations

from pathlib import Path

import torch

from gputuned.trainer_plugin.config import parse_config
from gputuned.trainer_plugin.trainer import Callbacks, Result, Trainer

INF_AT = (2, 6, 7)  # steps whose loss is made infinite: each one is a backoff of the loss scale


def _fit(ckpt: Path, max_steps: int) -> Result:
    """A single-process fp16 run of the digits example to ``max_steps``, resuming from ``ckpt``."""

    def inf_loss(trainer: Trainer, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("inf") if trainer.step in INF_AT else loss

    cfg = parse_config({}, {"plugin.enabled": False, "train.eval_every_epoch": False, "train.precision": "fp16",
                            "train.max_steps": max_steps, "checkpoint.dir": str(ckpt),
                            "checkpoint.asynchronous": False})
    trainer = Trainer(cfg, Callbacks(on_loss=inf_loss))
    try:
        return trainer.fit()
    finally:
        trainer.close()


def test_overflows_after_resume_count_every_overflow_before_the_checkpoint(tmp_path: Path) -> None:
    straight = _fit(tmp_path / "straight", 10)
    # the last overflows before the checkpoint at step 8 fall in an interval no report has folded yet
    first = _fit(tmp_path / "resumed", 8)
    resumed = _fit(tmp_path / "resumed", 10)
    assert first.overflows >= len(INF_AT) and resumed.steps == 10
    assert resumed.overflows == straight.overflows >= len(INF_AT)
