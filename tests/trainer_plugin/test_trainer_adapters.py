"""Framework adapters under the real Lightning Trainer and Hugging Face Trainer (extra: adapters).

Skipped where those packages are absent; ``make test`` installs them (``.[dev,adapters]``).
"""

from __future__ import annotations

import logging
import math
import time

import pytest
import torch

from gputuned.trainer_plugin.adapters import HF_BATCH_REFUSAL, hf_callback, lightning_callback
from gputuned.trainer_plugin.testing import FakeDaemon


def _data(n: int = 64) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())


def _paced(plugin, first: bool) -> None:
    """Training steps slow and connected enough for a scripted decision to land mid-run."""
    if first:
        assert plugin.client is not None and plugin.client.wait_connected(10)
    time.sleep(0.005)


def _plausible(report: dict) -> bool:
    s = report["stats"]
    return (0 < s["step_time_s"] < 5 and s["samples_per_s"] > 0 and math.isfinite(s["loss"]) and 0 < s["loss"] < 5
            and s["compute_time_s"] <= s["step_time_s"] + 1e-9)


def test_lightning_trainer_reports_and_applies_a_batch_size_from_the_next_epoch(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    sock = str(tmp_path / "c.sock")
    seen: list[tuple[int, int]] = []  # (epoch, batch length) as training_step saw them

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)
            self.batch_size = 8

        def train_dataloader(self):
            return torch.utils.data.DataLoader(_data(), batch_size=self.batch_size)

        def training_step(self, batch, _):
            x, y = batch
            _paced(cb.plugin, first=not seen)  # 40 ms an epoch: the decision lands well before the last one
            seen.append((self.current_epoch, len(x)))
            return torch.nn.functional.cross_entropy(self.lin(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    script = [(2, {"id": "bs-16", "batch_size": 16})]
    with FakeDaemon(sock, script=script, report_interval_s=0.01) as daemon:
        cb = lightning_callback(job="pl", batch_size=8, socket_path=sock, sync_interval=2)
        trainer = pl.Trainer(max_epochs=6, callbacks=[cb], logger=False, enable_checkpointing=False,
                             accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                             reload_dataloaders_every_n_epochs=1)
        trainer.fit(Tiny())
        assert daemon.wait_for(lambda d: d.of_type("ack"), timeout=5)
        ack = daemon.of_type("ack")[0]
        reports = daemon.of_type("report")
    assert ack["id"] == "bs-16" and ack["ok"] is True, ack
    # the decision lands mid-epoch; Lightning's reload at the next epoch start picks it up
    switch = next((e for e, n in seen if n == 16), None)
    assert switch is not None and 0 < switch < 6, seen
    assert all(n == 8 for e, n in seen if e < switch) and all(n == 16 for e, n in seen if e >= switch)
    assert cb.plugin.step_count == len(seen)
    assert reports and all(_plausible(r) for r in reports if r["steps"]), reports[:2]
    assert {r["stats"]["batch_size"] for r in reports} == {8, 16}


def test_lightning_decision_is_refused_with_the_reason_when_loaders_are_not_reloaded(tmp_path, caplog):
    pl = pytest.importorskip("lightning.pytorch")
    sock = str(tmp_path / "c.sock")

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)
            self.batch_size = 8

        def training_step(self, batch, i):
            _paced(cb.plugin, first=self.current_epoch == 0 and i == 0)
            return torch.nn.functional.cross_entropy(self.lin(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with FakeDaemon(sock, script=[(1, {"id": "bs-16", "batch_size": 16})], report_interval_s=0.01) as daemon:
        cb = lightning_callback(job="pl", batch_size=8, socket_path=sock, sync_interval=1)
        trainer = pl.Trainer(max_epochs=4, callbacks=[cb], logger=False, enable_checkpointing=False,
                             accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
        with caplog.at_level(logging.WARNING, logger="gputuned.trainer_plugin.plugin"):
            trainer.fit(Tiny(), torch.utils.data.DataLoader(_data(), batch_size=8))
        assert daemon.wait_for(lambda d: d.of_type("ack"), timeout=5)
        ack = daemon.of_type("ack")[0]
    assert ack["ok"] is False and "reload_dataloaders_every_n_epochs" in ack["error"]
    assert "refusing decision bs-16" in caplog.text
    assert cb.plugin.batch_size == 8 and cb.plugin.decisions_refused == 1


def test_hf_trainer_reports_steps_and_refuses_batch_size_with_the_reason(tmp_path, caplog):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    sock = str(tmp_path / "c.sock")
    calls: list[int] = []

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, x, labels=None):
            _paced(cb.plugin, first=not calls)
            calls.append(len(x))
            logits = self.lin(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    class Rows(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.data = _data()

        def __len__(self) -> int:
            return len(self.data)

        def __getitem__(self, i):
            x, y = self.data[i]
            return {"x": x, "labels": y}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=16, per_device_train_batch_size=8, logging_steps=1,
        learning_rate=0.1, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
        remove_unused_columns=False, dataloader_num_workers=0)
    with FakeDaemon(sock, script=[(1, {"id": "bs-16", "batch_size": 16})], report_interval_s=0.01) as daemon:
        cb = hf_callback(job="hf", batch_size=8, socket_path=sock, sync_interval=2)
        trainer = transformers.Trainer(model=Tiny(), args=args, train_dataset=Rows(), callbacks=[cb])
        with caplog.at_level(logging.WARNING, logger="gputuned.trainer_plugin.plugin"):
            trainer.train()
        assert daemon.wait_for(lambda d: d.of_type("ack"), timeout=5)
        ack = daemon.of_type("ack")[0]
        reports = daemon.of_type("report")
    assert cb.plugin.step_count == 16
    assert ack["ok"] is False and ack["error"] == HF_BATCH_REFUSAL
    assert "refusing decision bs-16" in caplog.text
    stepped = [r for r in reports if r["steps"] and "loss" in r["stats"]]
    assert stepped and all(_plausible(r) for r in stepped), reports[:2]
    assert all(r["stats"]["batch_size"] == 8 for r in reports)
