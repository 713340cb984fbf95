"""OffloadedForecastService: detection in a child process, same alerts as inline, never blocking."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time

import pytest

from gputuned.tuner.forecast.alerts import Alert
from gputuned.tuner.forecast.config import ForecastConfig
from gputuned.tuner.forecast.offload import QUEUE_TICKS, OffloadedForecastService, open_service
from gputuned.tuner.forecast.service import ForecastService

GPU = (("gpu", "0"), ("uuid", "GPU-0"), ("model", "Sim"), ("pci_bus_id", "0000:01:00.0"))
POWER = "gputuned_gpu_power_watts"


def ticks() -> list[tuple[float, list]]:
    rng = random.Random(1)
    out = []
    for i in range(1400):
        power = 300.0 + rng.gauss(0, 2) - (40.0 if 1000 <= i < 1100 else 0.0)
        out.append((1000.0 + i, [(POWER, GPU, power), ("gputuned_host_cpu_percent", (), 5.0)]))
    return out


def test_child_raises_the_same_alert_as_inline_and_runs_hooks_on_the_tick_thread(caplog: pytest.LogCaptureFixture) -> None:
    cfg = ForecastConfig(prophet=False)
    inline = ForecastService(cfg)
    want: list[Alert] = []
    inline.add_alert_hook(want.append)
    for now, samples in ticks():
        inline.observe(now, samples)
    assert len(want) == 1

    svc = OffloadedForecastService(cfg, backlog=len(ticks()))  # the whole burst: nothing dropped
    got: list[Alert] = []
    svc.add_alert_hook(got.append)
    caplog.set_level(logging.INFO)
    svc.start()
    try:
        for now, samples in ticks():
            svc.observe(now, samples)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not (got and svc.samples()):
            svc.observe(2400.0, [])  # hooks run from observe, on the caller's thread
            time.sleep(0.05)
        assert svc.alive
    finally:
        svc.close()
    assert not svc.alive
    assert [(a.kind, a.series, a.since) for a in got] == [(a.kind, a.series, a.since) for a in want]
    names = {s[0] for s in svc.samples()}
    assert "gputuned_anomaly_score" in names and "gputuned_alerts_raised_total" in names
    assert "alert raised: anomaly" in caplog.text  # the child's log records reach the core's loggers


def test_open_service_follows_the_config() -> None:
    assert isinstance(open_service(ForecastConfig()), OffloadedForecastService)
    assert isinstance(open_service(ForecastConfig(detect_in_child=False)), ForecastService)
    OffloadedForecastService(ForecastConfig()).observe(0.0, [])  # not started: a no-op


def test_observe_never_waits_on_a_stopped_child_and_drops_what_it_cannot_queue() -> None:
    svc = OffloadedForecastService(ForecastConfig(prophet=False))
    svc.start()
    try:
        assert svc._proc is not None
        pid = svc._proc.pid
        os.kill(pid, signal.SIGSTOP)  # a child that never reads again
        try:
            done = threading.Event()

            def feed() -> None:
                for now, samples in ticks():  # more ticks than the queue holds
                    svc.observe(now, samples)
                done.set()

            threading.Thread(target=feed, daemon=True).start()
            assert done.wait(60), "observe blocked on a stopped child"
            assert svc.dropped >= len(ticks()) - QUEUE_TICKS - svc.batch_ticks
            assert svc.backlog == QUEUE_TICKS
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        svc.close()


def test_a_dead_child_is_restarted_and_its_stale_state_not_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gputuned.tuner.forecast.offload.RESTART_AFTER_S", 0.0)
    svc = OffloadedForecastService(ForecastConfig(prophet=False))
    svc.start()
    try:
        feed = iter(ticks())
        deadline = time.monotonic() + 30.0
        while not svc.samples() and time.monotonic() < deadline:
            svc.observe(*next(feed))
            time.sleep(0.01)
        assert svc.samples(), "the child never sent its state"
        first = svc._proc
        first.kill()
        first.join(10)
        svc.observe(*next(feed))
        assert svc.restarts == 1 and svc.samples() == [] and svc._proc is not first
        while not svc.samples() and time.monotonic() < deadline + 30.0:
            svc.observe(*next(feed))
            time.sleep(0.01)
        assert svc.alive and svc.samples(), "the restarted child serves again"
    finally:
        svc.close()
