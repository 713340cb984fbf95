"""Fault tests against a real `gputuned run` subprocess on a simulated node whose settings persist:
SIGKILL after actuation then `gputuned restore`, restore at the next start, SIGTERM, SIGHUP, and
kills at random points while the state file is being rewritten."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from runtime_kit import wait_for

from gputuned.daemon.record.child import DaemonProcess, run_gputuned, toml_dump
from gputuned.daemon.record.trials import crash_trial, writer_kill_trial


def _lower_everything(d: DaemonProcess, gpus: int) -> None:
    for gpu in range(gpus):
        r = d.admin("set", gpu=gpu, knob="power_limit", value=300_000 + 10_000 * gpu)
        assert r["ok"], r
        r = d.admin("set", gpu=gpu, knob="locked_sm_clocks", value=[900, 1200 + 15 * gpu])
        assert r["ok"], r
    r = d.admin("set", gpu=0, knob="locked_memory_clocks", value=[2619, 2619])
    assert r["ok"], r


@contextmanager
def _daemon(tmp_path: Path, **kwargs: Any) -> Iterator[DaemonProcess]:
    """A ``gputuned run`` child process, closed (killed if need be) when the block ends."""
    d = DaemonProcess(tmp_path, **kwargs)
    try:
        yield d
    finally:
        d.close()


@contextmanager
def _lowered_daemon(tmp_path: Path, gpus: int) -> Iterator[tuple[DaemonProcess, dict[str, dict[str, Any]]]]:
    """A ready daemon on ``gpus`` simulated GPUs with every setting lowered, and the settings from before."""
    with _daemon(tmp_path, gpus=gpus) as d:
        d.wait_ready()
        originals = d.sim_settings()
        _lower_everything(d, gpus)
        yield d, originals


def test_sigkill_after_lowering_then_restore_brings_every_gpu_back(tmp_path: Path) -> None:
    with _lowered_daemon(tmp_path, 4) as (d, originals):
        changed = d.sim_settings()
        assert all(changed[u]["power_limit_mw"] < originals[u]["power_limit_mw"] for u in originals)
        assert all(changed[u]["locked_sm_clocks_mhz"] is not None for u in originals)
        d.kill()
        assert d.sim_settings() == changed  # the (simulated) hardware kept what was set
        recorded = json.loads(d.state_path.read_text())
        assert {u: g["originals"]["power_limit"] for u, g in recorded["gpus"].items()} == {
            u: s["power_limit_mw"] for u, s in originals.items()
        }
        res = run_gputuned("restore", "--config", str(d.config_path))
        assert res.returncode == 0, res.stderr
        assert d.sim_settings() == originals
        assert not d.state_path.exists()
        again = run_gputuned("restore", "--config", str(d.config_path))
        assert again.returncode == 0 and "nothing to restore" in again.stdout


def test_start_after_crash_restores_before_serving(tmp_path: Path) -> None:
    with _lowered_daemon(tmp_path, 2) as (d, originals):
        assert d.admin("release")["ok"]  # unpinned changes (as the tuner's): pinned ones would be applied again
        d.kill()
        assert d.sim_settings() != originals
        assert not d.state_path.with_name("pins.json").exists()
    with _daemon(tmp_path, config=d.data) as d2:
        status = d2.wait_ready()
        assert d2.sim_settings() == originals
        assert not d2.state_path.exists()
        assert all(g["changed"] == [] for g in status["gpus"])
        assert "previous run did not restore" in d2.log()
        assert d2.stop() == 0


def test_sigterm_stops_and_restores(tmp_path: Path) -> None:
    with _lowered_daemon(tmp_path, 2) as (d, originals):
        assert d.sim_settings() != originals
        assert d.stop() == 0
        assert d.sim_settings() == originals
        assert not d.state_path.exists()
        assert not d.socket_path.exists()


def test_sighup_reloads_and_keeps_old_config_when_invalid(tmp_path: Path) -> None:
    with _daemon(tmp_path, gpus=1) as d:
        d.wait_ready()
        good = d.config_path.read_text()
        d.config_path.write_text(good + "\n[actuation]\nbogus_key = 1\n")
        d.signal(signal.SIGHUP)
        assert wait_for(lambda: "config reload failed" in d.log(), 10)
        assert "actuation.bogus_key: unknown key" in d.log()
        assert d.admin("status")["status"]["actuation"]["dry_run"] is False
        data = dict(d.data)
        data["actuation"] = {"dry_run": True}
        d.config_path.write_text(toml_dump(data))
        d.signal(signal.SIGHUP)
        assert wait_for(lambda: d.admin("status")["status"]["actuation"]["dry_run"] is True, 10)
        before = d.sim_settings()
        r = d.admin("set", gpu=0, knob="power_limit", value=300_000)
        assert r["ok"] and r["code"] == "dry_run"
        assert d.sim_settings() == before
        assert not d.state_path.exists()
        assert d.stop() == 0


@pytest.mark.parametrize("seed", range(4))
def test_kill_during_state_file_writes_never_truncates_and_restores(tmp_path: Path, seed: int) -> None:
    """A few of the bench's trials (bench/control_crash_trials.py runs 50+)."""
    out = crash_trial(tmp_path, seed)
    assert out["state_file"] in ("absent", "complete"), out
    assert out["restored"], out


def test_restore_with_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[actuation]\ndry_run = 3\n")
    res = run_gputuned("restore", "--config", str(cfg))
    assert res.returncode == 2
    assert "actuation.dry_run" in res.stderr


def test_killing_a_state_file_writer_at_random_moments_leaves_a_complete_file(tmp_path: Path) -> None:
    """The kill lands inside a write (temp file left behind) in some of these trials; the state
    file itself is complete every time. bench/control_crash_trials.py --writer-trials runs 500."""
    results = [writer_kill_trial(tmp_path / str(i), i) for i in range(12)]
    assert all(r["complete"] for r in results), results
