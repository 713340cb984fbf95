"""The plugin inside a user's loop: its LR factor on the user's schedule, resume, stop signals, a finished run."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import time

import pytest
import torch
import torch.nn.functional as F

from gputuned.trainer_plugin.checkpoint import DONE_NAME, CheckpointManager
from gputuned.trainer_plugin.config import parse_config
from gputuned.trainer_plugin.plugin import TrainingPlugin
from gputuned.trainer_plugin.testing import FakeDaemon
from gputuned.trainer_plugin.trainer import Callbacks, Trainer

BASE_LR, T_MAX, BASE_BATCH = 0.1, 100, 32


class Loop:
    """A user's loop: SGD, CosineAnnealingLR stepped every step, a batch of ``plugin.batch_size``."""

    def __init__(self, plugin_kwargs: dict) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(8, 4)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=BASE_LR)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=T_MAX)
        self.plugin = TrainingPlugin(job="compose", batch_size=BASE_BATCH, optimizer=self.opt, lr_scaling="linear",
                                     max_batch_size=128, sync_interval=1, **plugin_kwargs)
        self.step = 0
        self.batches: list[int] = []  # the batch each step ran with
        self.lrs: list[float] = []  # the LR each optimizer step used (read after the plugin's hook)
        self.opt.register_step_pre_hook(lambda opt, args, kwargs: self.lrs.append(opt.param_groups[0]["lr"]))

    def run(self, until: int, each=None, pause_s: float = 0.0) -> None:
        """Train up to step ``until``, calling ``each(step)`` before every step."""
        while self.step < until:
            if each is not None:
                each(self.step)
            b = self.plugin.batch_size
            g = torch.Generator().manual_seed(self.step)
            x, y = torch.randn(b, 8, generator=g), torch.randint(0, 4, (b,), generator=g)
            with self.plugin.step(samples=b):
                loss = F.cross_entropy(self.model(x), y)
                loss.backward()
                self.opt.step()
                self.opt.zero_grad()
                self.sched.step()
                self.plugin.record(loss=loss)
            self.batches.append(b)
            self.step += 1
            time.sleep(pause_s)  # lets a decision travel from the fake daemon within a few steps

    def state(self) -> dict:
        """What the user's checkpoint holds."""
        return copy.deepcopy({"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                              "sched": self.sched.state_dict(), "plugin": self.plugin.state_dict()})


def _cosine(step: int) -> float:
    return BASE_LR * 0.5 * (1 + math.cos(math.pi * step / T_MAX))


def _decide(daemon: FakeDaemon, ident: str, size: int) -> None:
    daemon.send({"id": ident, "batch_size": size})


def test_a_cosine_schedule_times_the_batch_factor_at_every_step_from_the_step_the_batch_changes(tmp_path):
    sock = str(tmp_path / "c.sock")
    with FakeDaemon(sock, report_interval_s=0.02) as daemon:
        loop = Loop({"socket_path": sock})
        assert loop.plugin.client.wait_connected(5)
        sent: set[str] = set()

        def script(step: int) -> None:
            """Up to 64 at step 15; back to 32 from step 40, once the first was applied."""
            if step == 15:
                _decide(daemon, "up", 64)
                sent.add("up")
            if step >= 40 and loop.plugin.decisions_applied == 1 and "down" not in sent:
                _decide(daemon, "down", 32)
                sent.add("down")

        loop.run(T_MAX, script, pause_s=0.004)
        loop.plugin.close()
    assert loop.plugin.decisions_applied == 2, daemon.of_type("ack")
    up, down = loop.batches.index(64), len(loop.batches) - loop.batches[::-1].index(64)
    assert 15 < up < down < T_MAX and set(loop.batches[up:down]) == {64}
    for step, (lr, batch) in enumerate(zip(loop.lrs, loop.batches, strict=True)):
        assert lr == pytest.approx(_cosine(step) * batch / BASE_BATCH, rel=1e-9), (step, lr, batch)
    # the schedule itself never saw the factor: at step 60 it holds its own 0.0345
    assert loop.lrs[60] == pytest.approx(_cosine(60) * loop.batches[60] / BASE_BATCH)
    assert _cosine(60) == pytest.approx(0.0345, abs=1e-4)


def test_resume_from_the_users_checkpoint_keeps_the_factor_and_is_bit_exact(tmp_path):
    sock = str(tmp_path / "r.sock")
    with FakeDaemon(sock, report_interval_s=0.02) as daemon:
        loop = Loop({"socket_path": sock})
        assert loop.plugin.client.wait_connected(5)
        loop.run(10)
        _decide(daemon, "up", 64)
        deadline = time.monotonic() + 10
        while loop.plugin.batch_size != 64 and time.monotonic() < deadline:
            loop.run(loop.step + 1, pause_s=0.004)
        assert loop.plugin.batch_size == 64 and loop.step < 60
        loop.run(60)
        saved = loop.state()
        loop.run(T_MAX)
        loop.plugin.close()
    resumed = Loop({"connect": False})
    resumed.model.load_state_dict(saved["model"])
    resumed.opt.load_state_dict(saved["opt"])
    resumed.sched.load_state_dict(saved["sched"])
    resumed.plugin.load_state_dict(saved["plugin"])
    resumed.step = 60
    resumed.run(T_MAX)
    assert resumed.plugin.lr_factor == 2.0 and resumed.batches == [64] * (T_MAX - 60)
    assert resumed.lrs == loop.lrs[60:]  # exactly, not approximately
    for a, b in zip(resumed.model.parameters(), loop.model.parameters(), strict=True):
        assert torch.equal(a, b)


def _trainer(ck, **overrides) -> Trainer:
    base = {"plugin.enabled": False, "train.eval_every_epoch": False, "train.epochs": 2,
            "data.batch_size": 64, "checkpoint.dir": str(ck), "checkpoint.every_steps": 4}
    return Trainer(parse_config({}, {**base, **overrides}))


def test_a_finished_run_leaves_a_last_checkpoint_and_a_done_marker_and_a_rerun_trains_nothing(tmp_path):
    ck = tmp_path / "ck"
    first = _trainer(ck, **{"train.max_steps": 6})
    assert first.fit().steps == 6
    assert [s for s, _ in CheckpointManager(ck).list()] == [4, 6]
    assert json.loads((ck / DONE_NAME).read_text())["step"] == 6
    again = _trainer(ck, **{"train.max_steps": 6})
    result = again.fit()
    assert result.steps == 6 and again.resumed_from == 6 and again.ckpt.written == 0
    longer = _trainer(ck, **{"train.max_steps": 9})
    assert longer.fit().steps == 9 and longer.resumed_from == 6
    assert CheckpointManager(ck).done_step() == 9
    # a whole run to its epochs' end: the last checkpoint is past the final epoch, so a rerun trains nothing
    whole = tmp_path / "whole"
    steps = _trainer(whole).fit().steps
    rerun = _trainer(whole)
    assert rerun.fit().steps == steps and rerun.ckpt.written == 0 and CheckpointManager(whole).done_step() == steps


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_or_sigint_stops_a_single_process_run_with_a_checkpoint_and_no_done_marker(tmp_path, sig):
    ck = tmp_path / "ck"
    before = signal.getsignal(sig)
    tr = _trainer(ck, **{"checkpoint.every_steps": 1000})
    tr.cb = Callbacks(on_step_end=lambda t: os.kill(os.getpid(), sig) if t.step == 3 else None)
    result = tr.fit()
    assert result.stopped_early and result.steps == 3
    assert [s for s, _ in CheckpointManager(ck).list()] == [3] and not (ck / DONE_NAME).exists()
    assert signal.getsignal(sig) == before  # the loop's handlers are given back after the run
