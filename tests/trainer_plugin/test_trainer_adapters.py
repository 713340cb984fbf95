"""Framework adapters, run only where Lightning or transformers are installed (optional extras)."""

from __future__ import annotations

import pytest
import torch

from gputuned.trainer_plugin.adapters import hf_callback, lightning_callback
from gputuned.trainer_plugin.testing import FakeDaemon


def test_lightning_callback_reports_steps(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    sock = str(tmp_path / "c.sock")

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.lin(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
    with FakeDaemon(sock, report_interval_s=0.01) as daemon:
        cb = lightning_callback(job="pl", batch_size=8, socket_path=sock)
        trainer = pl.Trainer(max_epochs=2, callbacks=[cb], logger=False, enable_checkpointing=False,
                             accelerator="cpu", enable_progress_bar=False)
        trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=8))
        assert cb.plugin.step_count == 16
        assert daemon.wait_for(lambda d: d.of_type("report"), timeout=5)


def test_hf_callback_times_steps(tmp_path):
    transformers = pytest.importorskip("transformers")
    sock = str(tmp_path / "c.sock")
    with FakeDaemon(sock):
        cb = hf_callback(job="hf", batch_size=8, socket_path=sock)
        args, state, control = object(), transformers.TrainerState(), transformers.TrainerControl()
        cb.on_train_begin(args, state, control)
        for _ in range(3):
            cb.on_step_begin(args, state, control)
            cb.on_step_end(args, state, control)
        cb.on_log(args, state, control, logs={"loss": 0.5})
        assert cb.plugin.step_count == 3
        cb.on_train_end(args, state, control)
