"""A hung NVML call is one GPU: the others keep their ticks, the watchdog beats, status answers.

A real daemon on a scripted 4-GPU simulated node, 1 s ticks, a 0.5 s call timeout. The
simulated NVML blocks a device's calls while its ``hang_until`` lies ahead, as a stuck
driver call does: first every read on GPU 1, then a power-limit set on GPU 2 through the
actuator. Each hang lasts 5 s (``GPUTUNED_HANG_S`` sets another length, e.g. the 40 s of the
figure in docs/benchmarks.md).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import config

from gputuned.collectors import families as F
from gputuned.collectors.families import Labels
from gputuned.daemon.app.daemon import Daemon
from gputuned.daemon.commands.status import admin_request
from gputuned.daemon.core.notify import Notifier

HANG_S = float(os.environ.get("GPUTUNED_HANG_S", "5"))
TICK_S = 1.0
LATE_S = 0.6  # slack on a 1 s tick for a loaded 2-core test machine


class BeatCounter(Notifier):
    """A notifier that records when the loop beat the watchdog."""

    def __init__(self) -> None:
        super().__init__({})
        self.beats: list[float] = []

    def watchdog(self, now: float | None = None) -> None:
        self.beats.append(time.monotonic())


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    script = tmp_path / "node.toml"
    script.write_text('profile = "h100"\ngpus = 4\n')
    cfg = config(
        daemon={"state_file": str(tmp_path / "state.json"), "interval_seconds": TICK_S},
        gpu={"backend": "sim", "call_timeout_seconds": 0.5},
        control={"socket_path": str(tmp_path / "control.sock")},
        sim={"gpus": 4, "script": str(script)},
        collectors={"infiniband": {"enabled": False}},
    )
    d = Daemon(cfg, serve=False, notifier=BeatCounter())
    d.start()
    yield d
    for dev in _sim_devices(d):
        dev.hang_until = 0.0
    d.stop()


def _sim_devices(d: Daemon) -> list[Any]:
    assert d.gpus.sim_backend is not None
    return d.gpus.sim_backend.devices


def _labels(d: Daemon, gpu: int) -> Labels:
    return next(lab for lab in d.store.series(F.GPU_UP) if dict(lab)["gpu"] == str(gpu))


def _watch(d: Daemon, hung: int, seconds: float) -> list[tuple[float, bool, str | None]]:
    """Ask status every 0.25 s for ``seconds``: (its latency, the hung GPU's gpu_up, its down reason)."""
    out = []
    sock = d.cfg.control.socket_path
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        status = admin_request(sock, "status", timeout=5.0)["status"]
        latency = time.monotonic() - t0
        gpu = next(g for g in status["gpus"] if g["index"] == hung)
        out.append((latency, d.store.value(F.GPU_UP, _labels(d, hung)) == 1.0, gpu.get("down")))
        time.sleep(0.25)
    return out


def _assert_others_ticked(d: Daemon, hung: int, since: float, beats_before: int) -> None:
    beats = d.notifier.beats[beats_before:]  # type: ignore[attr-defined]
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    assert len(beats) >= HANG_S / TICK_S and max(gaps) < TICK_S + LATE_S, gaps
    for gpu in (g for g in range(4) if g != hung):
        ts, _ = d.store.window(F.GPU_POWER, _labels(d, gpu), time.time() - since, time.time())
        steps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
        assert len(ts) >= HANG_S / TICK_S and max(steps) < TICK_S + LATE_S, (gpu, steps)


def _assert_down_then_back(d: Daemon, seen: list[tuple[float, bool, str | None]], hung: int, what: str) -> None:
    assert max(lat for lat, _, _ in seen) < 1.0, [lat for lat, _, _ in seen]
    reasons = {r for _, up, r in seen if not up and r}
    assert any(f"gpu {hung}" in r and what in r and "has not returned" in r for r in reasons), reasons
    deadline = time.monotonic() + 3 * TICK_S
    while d.store.value(F.GPU_UP, _labels(d, hung)) != 1.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.store.value(F.GPU_UP, _labels(d, hung)) == 1.0
    assert d.actuator.describe()[hung].get("down") is None


def test_a_hung_read_downs_one_gpu_and_the_rest_keep_ticking(daemon: Daemon) -> None:
    since, beats = time.time(), len(daemon.notifier.beats)  # type: ignore[attr-defined]
    _sim_devices(daemon)[1].hang_until = time.monotonic() + HANG_S
    seen = _watch(daemon, 1, HANG_S + 0.5)
    _assert_others_ticked(daemon, 1, since, beats)
    assert not all(up for _, up, _ in seen)
    _assert_down_then_back(daemon, seen, 1, "")
    assert daemon.loop.runners[0].up  # the GPU collector itself stayed up


def test_a_hung_set_fails_in_bounded_time_and_downs_only_its_gpu(daemon: Daemon) -> None:
    dev = _sim_devices(daemon)[2]
    original_mw = dev.power_limit_mw
    dev.hang_calls = frozenset({"nvmlDeviceSetPowerManagementLimit"})
    dev.hang_until = time.monotonic() + HANG_S
    since, beats = time.time(), len(daemon.notifier.beats)  # type: ignore[attr-defined]
    results: list[tuple[Any, float]] = []

    def set_limit() -> None:
        t0 = time.monotonic()
        res = daemon.actuator.set_power_limit(2, 500)
        results.append((res, time.monotonic() - t0))

    setter = threading.Thread(target=set_limit)
    setter.start()
    seen = _watch(daemon, 2, HANG_S + 0.5)
    setter.join(1.0)
    (res, took), = results
    assert not res.ok and res.code == "nvml" and "has not returned" in res.reason, res
    assert took < 1.5, took  # the call timeout and a little, not the hang
    _assert_others_ticked(daemon, 2, since, beats)
    _assert_down_then_back(daemon, seen, 2, "set power limit")
    # NVML applied the set once it returned; its original was recorded first and comes back
    assert dev.power_limit_mw == 500_000
    report = daemon.actuator.restore_gpu(2)
    assert report.ok and dev.power_limit_mw == original_mw, report
