"""Adapters wrapping the plugin for PyTorch Lightning and Hugging Face Trainer (imported lazily).

    trainer = lightning.Trainer(callbacks=[lightning_callback(job="my-run", batch_size=256)])
    hf_trainer = transformers.Trainer(..., callbacks=[hf_callback(job="my-run", batch_size=256)])

Both time each optimizer step, record the loss and report to the daemon. Batch-size decisions
reach ``on_batch_size`` (pass one to act on them; frameworks own their data loaders).
"""

from __future__ import annotations

import logging
from typing import Any

from gputuned.trainer_plugin.plugin import TrainingPlugin

logger = logging.getLogger(__name__)


def lightning_callback(**plugin_kwargs: Any) -> Any:
    """A ``lightning.pytorch.Callback`` driving a TrainingPlugin (needs lightning installed)."""
    try:
        from lightning.pytorch import Callback
    except ImportError:  # the older package name
        from pytorch_lightning import Callback

    class GputunedCallback(Callback):
        """Times Lightning's training batches and reports them through the plugin."""

        def __init__(self) -> None:
            self.plugin: TrainingPlugin | None = None

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.plugin = TrainingPlugin(**plugin_kwargs)

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if self.plugin is not None:
                self.plugin.step()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if self.plugin is None:
                return
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            self.plugin.record(loss=loss)
            self.plugin.end_step()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            if self.plugin is not None:
                self.plugin.close()

    return GputunedCallback()


def hf_callback(**plugin_kwargs: Any) -> Any:
    """A ``transformers.TrainerCallback`` driving a TrainingPlugin (needs transformers installed)."""
    from transformers import TrainerCallback

    class GputunedHFCallback(TrainerCallback):
        """Times Hugging Face Trainer steps and reports them through the plugin."""

        def __init__(self) -> None:
            self.plugin: TrainingPlugin | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.plugin = TrainingPlugin(**plugin_kwargs)

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.plugin is not None:
                self.plugin.step()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.plugin is not None:
                self.plugin.end_step()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if self.plugin is not None and logs and "loss" in logs:
                self.plugin.record(loss=float(logs["loss"]))

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.plugin is not None:
                self.plugin.close()

    return GputunedHFCallback()
