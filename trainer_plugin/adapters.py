"""Adapters wrapping the plugin for PyTorch Lightning and Hugging Face Trainer (imported lazily).

    trainer = lightning.Trainer(callbacks=[lightning_callback(job="my-run", batch_size=256)],
                                reload_dataloaders_every_n_epochs=1)
    hf_trainer = transformers.Trainer(..., callbacks=[hf_callback(job="my-run", batch_size=256)])

Both time each optimizer step, record the loss and report to the daemon (install them with
``pip install 'gputuned[adapters]'``). Batch-size decisions:

- Lightning: applied by setting the LightningModule's ``batch_size`` attribute, which its
  ``train_dataloader()`` reads when Lightning reloads the loaders, i.e. from the next epoch with
  ``reload_dataloaders_every_n_epochs=1``. Without that setting or attribute the decision is
  refused with the reason (ack ok=false, logged). Pass ``on_batch_size`` to act differently.
- Hugging Face: refused with the reason: ``transformers.Trainer`` builds its DataLoader once per
  ``train()`` call and has no way to change ``per_device_train_batch_size`` mid-run.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from gputuned.trainer_plugin.plugin import TrainingPlugin

logger = logging.getLogger(__name__)

HF_BATCH_REFUSAL = ("transformers.Trainer builds its DataLoader once per train(); "
                    "per_device_train_batch_size cannot change mid-run")


def _lightning_callback_base() -> Any:
    try:
        module = importlib.import_module("lightning.pytorch")
    except ImportError:  # the older package name
        module = importlib.import_module("pytorch_lightning")
    return module.Callback


def lightning_callback(**plugin_kwargs: Any) -> Any:
    """A ``lightning.pytorch.Callback`` driving a TrainingPlugin (needs lightning installed)."""
    base = _lightning_callback_base()

    class GputunedCallback(base):  # type: ignore[misc, valid-type]
        """Times Lightning's training batches, reports them and applies batch-size decisions."""

        def __init__(self) -> None:
            self.plugin: TrainingPlugin | None = None
            self._module: Any = None
            self._trainer: Any = None

        def _vet(self, size: int) -> str | None:
            if not hasattr(self._module, "batch_size"):
                return "the LightningModule has no batch_size attribute for its train_dataloader() to read"
            if getattr(self._trainer, "reload_dataloaders_every_n_epochs", 0) < 1:
                return "Lightning reloads train_dataloader() only with reload_dataloaders_every_n_epochs >= 1"
            return None

        def _apply(self, global_batch: int, micro: int, accumulation: int) -> None:
            self._module.batch_size = micro
            logger.info("Lightning module batch_size now %d (takes effect when Lightning next reloads "
                        "the train dataloader)", micro)

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self._module, self._trainer = pl_module, trainer
            kwargs = dict(plugin_kwargs)
            if "on_batch_size" not in kwargs:
                kwargs.update(on_batch_size=self._apply, vet_batch_size=self._vet)
            self.plugin = TrainingPlugin(**kwargs)

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if self.plugin is not None:
                self.plugin.step(samples=_batch_len(batch))

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


def _batch_len(batch: Any) -> int | None:
    """Samples in a batch of tensors (first tensor's first dimension), or None if unknown."""
    first = batch[0] if isinstance(batch, list | tuple) and batch else batch
    if isinstance(first, dict) and first:
        first = next(iter(first.values()))
    shape = getattr(first, "shape", None)
    return int(shape[0]) if shape else None


def hf_callback(**plugin_kwargs: Any) -> Any:
    """A ``transformers.TrainerCallback`` driving a TrainingPlugin (needs transformers installed)."""
    from transformers import TrainerCallback

    class GputunedHFCallback(TrainerCallback):
        """Times Hugging Face Trainer steps and reports them; refuses batch-size decisions."""

        def __init__(self) -> None:
            self.plugin: TrainingPlugin | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            kwargs = dict(plugin_kwargs)
            kwargs.setdefault("vet_batch_size", lambda size: HF_BATCH_REFUSAL)
            self.plugin = TrainingPlugin(**kwargs)

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
