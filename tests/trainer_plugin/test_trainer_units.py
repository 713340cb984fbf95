"""Single-process pieces: sampler, prefetch, checkpoints, noise scale, config, plugin with a fake daemon."""

from __future__ import annotations

import logging
import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gputuned.daemon.commands.cli import main as cli_main
from gputuned.trainer_plugin.checkpoint import CheckpointManager
from gputuned.trainer_plugin.config import ConfigError, parse_config
from gputuned.trainer_plugin.data import Prefetcher, ResizableBatchSampler, load_digits
from gputuned.trainer_plugin.noise_scale import NoiseScaleEstimator, scaled_lr
from gputuned.trainer_plugin.plugin import TrainingPlugin
from gputuned.trainer_plugin.testing import FakeDaemon


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.lists(st.integers(1, 40), min_size=1, max_size=30), st.integers(30, 120))
def test_sampler_resizing_never_loses_or_repeats_a_sample(world, sizes, n):
    samplers = [ResizableBatchSampler(n, max(world, sizes[0]), r, world, seed=3) for r in range(world)]
    seen: list[int] = []
    step = 0
    while True:
        size = max(world, sizes[step % len(sizes)])
        parts = []
        for s in samplers:
            s.batch_size = size
            parts.append(s.next_batch())
        if parts[0] is None:
            break
        lens = [len(p[0]) for p in parts]
        assert max(lens) - min(lens) <= 1 and sum(lens) == parts[0][1]
        seen += [i for p in parts for i in p[0].tolist()]
        step += 1
    assert sorted(seen) == list(range(n))


@pytest.mark.parametrize("threaded", [True, False])
def test_prefetcher_rewind_keeps_epoch_exact_after_resize(threaded):
    x = torch.arange(100).float().unsqueeze(1)
    sampler = ResizableBatchSampler(100, 8, seed=1)
    pf = Prefetcher(sampler, (x,), torch.device("cpu"), depth=3, threaded=threaded)
    pf.start()
    seen = []
    for _ in range(3):
        parts, _n = pf.next()
        seen += parts[0].squeeze(1).long().tolist()
    time.sleep(0.05)  # let it prefetch ahead before the resize
    pf.rewind(batch_size=13)
    while (item := pf.next()) is not None:
        assert len(item[0][0]) in (13, 100 - 24 - 13 * 5)
        seen += item[0][0].squeeze(1).long().tolist()
    pf.stop()
    assert sorted(seen) == list(range(100))


def test_checkpoints_keep_last_k_and_skip_a_corrupt_one(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path, keep=2, asynchronous=True)
    for step in (10, 20, 30):
        mgr.save(step, {"w": torch.full((4,), float(step)), "step": step})
    mgr.wait()
    assert [s for s, _ in mgr.list()] == [20, 30]
    newest = mgr.path_for(30)
    data = bytearray(newest.read_bytes())
    data[-5] ^= 0xFF
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        step, state = mgr.latest()
    assert step == 20 and state["w"][0] == 20.0
    assert "checksum mismatch" in caplog.text
    newest.write_bytes(bytes(data[:40]))  # truncated
    assert mgr.latest()[0] == 20


def test_a_write_dying_half_way_leaves_only_the_previous_checkpoint(tmp_path):
    def boom(step, tmp, written):
        assert tmp.exists() and written > 0
        raise OSError("disk gone")

    mgr = CheckpointManager(tmp_path, keep=3, asynchronous=False)
    mgr.save(1, {"a": torch.ones(3)})
    mgr.on_partial_write = boom
    mgr.save(2, {"a": torch.zeros(3)})
    assert mgr.failed == 1 and [s for s, _ in mgr.list()] == [1]
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / ".ckpt-000000003.pt.1.tmp").write_bytes(b"partial")
    assert mgr.latest()[0] == 1 and mgr.clean_temporaries() == 1


def test_noise_scale_estimate_matches_a_synthetic_gradient():
    gen = torch.Generator().manual_seed(0)
    d, sigma = 200, 2.0
    g_true = torch.full((d,), 0.1)
    b, big = 8, 64
    est = NoiseScaleEstimator(beta=0.99)
    for _ in range(3000):
        samples = g_true + sigma * torch.randn(big, d, generator=gen)
        small = samples[:b].mean(0)
        est.update(float(small @ small), b, float(samples.mean(0) @ samples.mean(0)), big)
    expected = d * sigma**2 / float(g_true @ g_true)  # tr(Sigma) / |G|^2 = 2000
    assert est.noise_scale == pytest.approx(expected, rel=0.25)
    assert est.efficiency(64, 64) == 1.0 and est.efficiency(128, 64) < 1.0
    assert 1.0 < est.adascale_gain(128, 64) <= 2.0


def test_lr_scaling_rules():
    assert scaled_lr("linear", 0.1, 512, 256) == pytest.approx(0.2)
    assert scaled_lr("sqrt", 0.1, 1024, 256) == pytest.approx(0.2)
    assert scaled_lr("none", 0.1, 1024, 256) == 0.1
    assert scaled_lr("adascale", 0.1, 512, 256) == pytest.approx(0.2)  # no estimate yet: linear
    with pytest.raises(ValueError, match="lr_scaling"):
        scaled_lr("cubic", 0.1, 1, 1)


@pytest.mark.parametrize(("overrides", "key"), [
    ({"compression.hook": "zip"}, "compression.hook"),
    ({"train.precision": "fp8"}, "train.precision"),
    ({"train.precison": "fp16"}, "train.precison: unknown key"),
    ({"data.batch_size": 0}, "data.batch_size"),
])
def test_bad_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config({}, overrides)


def test_train_command_fails_before_training_naming_the_key(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[compression]\nhook = "gzip"\n[train]\nepochs = 1\n')
    assert cli_main(["train", str(cfg)]) == 2
    assert "compression.hook" in capsys.readouterr().err
    cfg.write_text("[train\n")
    assert cli_main(["train", str(cfg)]) == 2


def test_digits_data_is_shipped_and_split():
    x_tr, y_tr, x_te, y_te = load_digits()
    assert x_tr.shape == (1438, 64) and x_te.shape == (359, 64)
    assert float(x_tr.max()) == 1.0 and set(y_te.tolist()) == set(range(10))


def _steps(plugin: TrainingPlugin, model: torch.nn.Module, until, timeout: float = 10.0) -> int:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    deadline = time.monotonic() + timeout
    n = 0
    while not until() and time.monotonic() < deadline:
        with plugin.step(samples=32):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            plugin.record(loss=loss)
        time.sleep(0.002)
        n += 1
    return n


def test_plugin_applies_good_decisions_refuses_bad_ones_and_profiles(tmp_path, caplog):
    sock = str(tmp_path / "c.sock")
    applied = []
    script = [
        (1, b'{"v":1,"type":"decision","seq":1,"id":"x","batch_size":"many"}'),
        (1, {"id": "too-big", "batch_size": 100000}),
        (2, {"id": "d-1", "batch_size": 64}),
        (3, {"id": "p-1", "profile_steps": 3}),
    ]
    model = torch.nn.Linear(8, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with FakeDaemon(sock, script=script, report_interval_s=0.02) as daemon:
        plugin = TrainingPlugin(job="unit", batch_size=32, socket_path=sock, optimizer=opt, lr_scaling="sqrt",
                                max_batch_size=1024, sync_interval=2,
                                on_batch_size=lambda g, m, a: applied.append((g, m, a)))
        assert plugin.client.wait_connected(5)
        with caplog.at_level(logging.WARNING):
            _steps(plugin, model, lambda: len(daemon.of_type("profile_result")) >= 1)
        plugin.close()
        acks = {a["id"]: a for a in daemon.of_type("ack")}
        reports = daemon.of_type("report")
    assert applied == [(64, 64, 1)]
    # the factor rides on the loop's own LR during each optimizer step; the group keeps the loop's value
    assert plugin.lr_factor == pytest.approx(math.sqrt(2)) and opt.param_groups[0]["lr"] == 0.1
    assert acks["d-1"]["ok"] and acks["d-1"]["applied_step"] % 2 == 0
    assert acks["too-big"]["ok"] is False and "outside" in acks["too-big"]["error"]
    assert acks["p-1"]["ok"]
    summary = daemon.of_type("profile_result")[0]["summary"]
    assert summary["top_ops"] and summary["suggestions"] and 0 <= summary["data_loader_share"] <= 1
    assert "malformed" in caplog.text
    stats = reports[-1]["stats"]
    assert stats["batch_size"] == 64 and stats["loss"] > 0 and stats["step_time_s"] > 0
    assert stats["samples_total"] >= 32 * 3


def test_plugin_runs_untouched_without_a_daemon(tmp_path):
    plugin = TrainingPlugin(job="nodaemon", batch_size=32, socket_path=str(tmp_path / "absent.sock"))
    model = torch.nn.Linear(8, 4)
    t0 = time.perf_counter()
    n = _steps(plugin, model, lambda: False, timeout=0.3)
    assert n > 10 and time.perf_counter() - t0 < 2
    assert plugin.step_count == n and not plugin.client.connected
    plugin.close()


def test_plugin_overhead_per_step_is_small_with_a_connected_daemon(tmp_path):
    sock = str(tmp_path / "o.sock")
    with FakeDaemon(sock, report_interval_s=0.05):
        plugin = TrainingPlugin(job="ovh", batch_size=32, socket_path=sock)
        assert plugin.client.wait_connected(5)
        loss = torch.tensor(1.0)
        times = []
        for _ in range(3000):
            t = time.perf_counter()
            with plugin.step():
                plugin.record(loss=loss)
            times.append(time.perf_counter() - t)
        plugin.close()
    times.sort()
    assert times[len(times) // 2] < 200e-6  # bench/trainer_bench.py reports the figure itself


def test_micro_batch_mode_keeps_the_global_batch_and_changes_accumulation(tmp_path):
    sock = str(tmp_path / "m.sock")
    applied = []
    script = [(1, {"id": "odd", "batch_size": 48}), (1, {"id": "m-1", "batch_size": 16})]
    with FakeDaemon(sock, script=script, report_interval_s=0.02) as daemon:
        plugin = TrainingPlugin(job="micro", batch_size=64, socket_path=sock, batch_mode="micro",
                                sync_interval=1, on_batch_size=lambda g, m, a: applied.append((g, m, a)))
        assert plugin.client.wait_connected(5)
        _steps(plugin, torch.nn.Linear(8, 4), lambda: len(daemon.of_type("ack")) >= 2)
        plugin.close()
        acks = {a["id"]: a for a in daemon.of_type("ack")}
    assert daemon.hellos[0]["batch_mode"] == "micro"
    assert acks["odd"]["ok"] is False and acks["m-1"]["ok"] is True
    assert applied == [(64, 16, 4)] and plugin.batch_size == 64 and plugin.lr_factor == 1.0


def test_shipped_example_config_is_valid():
    from pathlib import Path

    from gputuned.trainer_plugin.config import load_config

    cfg = load_config(Path(__file__).parents[2] / "examples" / "digits.toml")
    assert cfg.data.dataset == "digits" and cfg.compression.hook == "none" and cfg.train.epochs == 12


def _single_process_trainer(**overrides):
    from gputuned.trainer_plugin.trainer import Trainer

    base = {"plugin.enabled": False, "train.eval_every_epoch": False, "train.epochs": 2,
            "data.batch_size": 64, "optim.lr": 0.1}
    return Trainer(parse_config({}, {**base, **overrides}))


def test_accumulation_takes_the_same_step_as_the_whole_batch():
    whole = _single_process_trainer(**{"train.max_steps": 3})
    split = _single_process_trainer(**{"train.max_steps": 3, "train.accumulation_steps": 4})
    whole.fit()
    split.fit()
    for a, b in zip(whole.model.parameters(), split.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert split.samples_seen == whole.samples_seen == 3 * 64


def test_learning_rate_warms_up_then_follows_the_cosine_over_samples():
    tr = _single_process_trainer(**{"optim.warmup_steps": 4, "train.max_steps": 30})
    lrs = []
    tr.cb.on_step_end = lambda t: lrs.append(t.optimizer.param_groups[0]["lr"])
    tr.fit()
    first_epoch_steps = len(tr.y_train) // 64
    # the lr set after step k serves step k+1: warm-up (k / 4) counts k - 1 finished steps, and the
    # cosine the k * 64 samples seen (in the first epoch every batch is whole)
    for k, lr in enumerate(lrs[:first_epoch_steps], start=1):
        warm = k / 4 if k - 1 < 4 else 1.0
        assert lr == pytest.approx(0.1 * warm * 0.5 * (1 + math.cos(math.pi * k * 64 / tr.total_samples)))
    assert lrs[-1] < lrs[4] < 0.1


def exchange_starts(monkeypatch, plugin: TrainingPlugin) -> list[int]:
    """The steps at which the plugin starts a decision exchange, recorded as it runs."""
    started: list[int] = []
    start = plugin._exchange.start
    monkeypatch.setattr(plugin._exchange, "start", lambda *a: (started.append(plugin.step_count), start(*a))[1])
    return started


@pytest.mark.parametrize("step_s, exchanges, samples", [(0.002, (4, 5), (8, 11)), (0.5, (990, 1000), (1985, 2000))])
def test_exchanges_and_norm_samples_are_spaced_in_time_not_steps(monkeypatch, step_s, exchanges, samples):
    """2000 steps of step_s on a scripted clock: one exchange per second, one norm sample per 0.5 s,
    at most one of each per step (the first exchange comes after 10 steps, before any step time)."""
    import gputuned.trainer_plugin.plugin as plugin_module

    clock = [0.0]
    monkeypatch.setattr(plugin_module.time, "perf_counter", lambda: clock[0])
    plugin = TrainingPlugin(job="spacing", batch_size=32, connect=False)
    started, sampled = exchange_starts(monkeypatch, plugin), []
    for _ in range(2000):
        with plugin.step():
            sampled.append(plugin._measure)
            clock[0] += step_s
    assert exchanges[0] <= len(started) <= exchanges[1]
    assert samples[0] <= sum(sampled) <= samples[1]
    assert started[0] == 10 and len(set(started)) == len(started)


def test_a_fixed_sync_interval_and_norm_every_override_the_periods(monkeypatch):
    plugin = TrainingPlugin(job="fixed", batch_size=32, connect=False, sync_interval=7, norm_every=3)
    started, sampled = exchange_starts(monkeypatch, plugin), []
    for _ in range(30):
        with plugin.step():
            sampled.append(plugin._measure)
    assert [i for i, m in enumerate(sampled) if m] == list(range(0, 30, 3))
    assert started == [7, 14, 21, 28]


@pytest.mark.parametrize("key", ["sync_period_s", "norm_period_s"])
def test_a_period_that_is_not_positive_is_refused_naming_it(key):
    with pytest.raises(ValueError, match=key):
        TrainingPlugin(job="bad", batch_size=32, connect=False, **{key: 0.0})
    with pytest.raises(ConfigError, match=f"plugin.{key}"):
        parse_config({}, {f"plugin.{key}": -1})


def test_throughput_counts_the_wall_time_between_steps_and_step_time_only_the_steps(monkeypatch):
    """Steps of 10 ms with 10 ms paused between them (a stopped rank, the loop's own work): half the samples/s."""
    import gputuned.trainer_plugin.plugin as plugin_module

    clock = [100.0]
    monkeypatch.setattr(plugin_module.time, "perf_counter", lambda: clock[0])
    plugin = TrainingPlugin(job="wall", batch_size=32, connect=False)
    for _ in range(50):
        with plugin.step():
            clock[0] += 0.01
        clock[0] += 0.01
    stats = plugin.interval_stats()
    assert stats["samples_per_s"] == pytest.approx(32 / 0.02)
    assert stats["step_time_s"] == pytest.approx(0.01)
    plugin._report()  # the next interval starts at the report, not at its first step
    clock[0] += 0.5
    with plugin.step():
        clock[0] += 0.01
    assert plugin.interval_stats()["samples_per_s"] == pytest.approx(32 / 0.51)
