"""The originals cannot be lost: a state file deleted, corrupted, zeroed or crafted while the daemon
runs is written again from memory and restores bring back the exact originals, touching no other
GPU; a damaged file falls back to its copy and never resets a GPU it does not list; originals from
a file are bounded; temp files are exclusive, unpredictable and never written through a link."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gputuned.collectors.nvml import NvmlGPU, open_gpus, open_nvml
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import ScriptedBackend
from gputuned.daemon.actuation import atomic
from gputuned.daemon.actuation.actuator import Actuator, restore_from_state
from gputuned.daemon.actuation.atomic import UnsafeDirectory
from gputuned.daemon.actuation.config import ActuationConfig
from gputuned.daemon.actuation.statefile import StateFile

SimNode = Callable[..., ScriptedBackend]
BENCH = Path(__file__).resolve().parents[2] / "bench" / "state_file_trials.py"


def _gpus(sim_node: SimNode, n: int = 4) -> tuple[ScriptedBackend, list[NvmlGPU]]:
    backend = sim_node({"profile": "h100", "gpus": n})
    nvml, _ = open_nvml("sim", sim_nvml)
    return backend, open_gpus(nvml)


def _settings(backend: ScriptedBackend) -> list[tuple[Any, ...]]:
    return [(d.power_limit_mw, d.locked_sm_clocks_mhz, d.locked_memory_clocks_mhz) for d in backend.devices]


def _node(sim_node: SimNode, tmp_path: Path, **cfg: Any) -> tuple[ScriptedBackend, list[NvmlGPU], Actuator]:
    """4 GPUs at non-default power limits (so a reset to the default shows), GPUs 1 and 2 changed."""
    backend, gpus = _gpus(sim_node)
    for i, d in enumerate(backend.devices):
        d.power_limit_mw = 600_000 + 10_000 * i
    act = Actuator(gpus, ActuationConfig(**cfg), StateFile(tmp_path / "state" / "state.json"))
    act.start()
    for gpu in (1, 2):
        assert act.set_power_limit(gpu, 350).ok and act.set_locked_sm_clocks(gpu, 900, 1200).ok
    return backend, gpus, act


def _crafted(gpus: list[NvmlGPU]) -> str:
    return json.dumps({"version": 1, "pid": 1, "updated": 0, "gpus": {
        g.identity.uuid: {"index": g.identity.index, "changed": ["power_limit", "locked_sm_clocks"],
                          "originals": {"power_limit": 200_000, "locked_sm_clocks": [345, 345]}, "targets": {}}
        for g in gpus}})


@pytest.mark.parametrize("how", ["deleted", "corrupted", "zeroed", "crafted"])
def test_a_damaged_file_is_written_again_on_the_next_tick_and_restore_uses_memory(
        sim_node: SimNode, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture) -> None:
    backend, gpus, act = _node(sim_node, tmp_path)
    original = [(600_000 + 10_000 * i, None, None) for i in range(4)]
    sf = act.state_file
    written = sf.path.read_bytes()
    for p in (sf.path, sf.previous):
        if how == "deleted":
            p.unlink()
        else:
            p.write_text({"corrupted": written.decode()[:40], "zeroed": "\0" * 100, "crafted": _crafted(gpus)}[how])
    act.tick(0.0)
    assert "writing it again from the records in memory" in caplog.text
    assert json.loads(sf.path.read_text())["gpus"] == json.loads(written)["gpus"]
    for p in (sf.path, sf.previous):  # damaged again right before the stop: the restore checks first
        p.write_text(_crafted(gpus))
    act.stop()
    assert _settings(backend) == original
    assert not sf.path.exists() and not sf.previous.exists()


def test_offline_restore_of_a_damaged_file_uses_its_copy(sim_node: SimNode, tmp_path: Path) -> None:
    backend, gpus, act = _node(sim_node, tmp_path)
    act.state_file.path.write_text('{"version": 1, "gpus": {"trunc')  # the daemon then dies
    report = restore_from_state(gpus, StateFile(act.state_file.path), cfg=act.cfg)
    assert report.ok and sorted(report.restored) == sorted(g.identity.uuid for g in gpus[1:3])
    assert _settings(backend) == [(600_000 + 10_000 * i, None, None) for i in range(4)]
    assert not act.state_file.exists()


def test_neither_file_readable_resets_no_gpu(sim_node: SimNode, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend, gpus, act = _node(sim_node, tmp_path)
    before = _settings(backend)
    for p in (act.state_file.path, act.state_file.previous):
        p.write_bytes(b"\0" * 64)
    caplog.set_level(logging.ERROR)
    report = restore_from_state(gpus, StateFile(act.state_file.path))
    assert _settings(backend) == before  # nobody's GPU reset to the driver's defaults
    assert not report.ok and "no GPU is reset" in report.failures[0]
    assert len([r for r in caplog.records if "no GPU is reset" in r.getMessage()]) == 1
    assert not act.state_file.exists() and (act.state_file.path.parent / "state.json.damaged").exists()


@pytest.mark.parametrize(("policy", "power", "locked"), [("leave", 350_000, (900, 1200)), ("default", 700_000, None)])
def test_crafted_originals_below_the_configured_bounds_are_refused(
        sim_node: SimNode, tmp_path: Path, policy: str, power: int, locked: Any) -> None:
    backend, gpus, act = _node(sim_node, tmp_path, power_limit_min_w=300, sm_clock_min_mhz=600,
                               restore_out_of_bounds=policy)
    act.state_file.path.write_text(_crafted(gpus[1:2]))  # the daemon dies; its file was replaced
    report = restore_from_state(gpus, StateFile(act.state_file.path), cfg=act.cfg)
    assert backend.devices[1].power_limit_mw == power and backend.devices[1].locked_sm_clocks_mhz == locked
    assert any("power_limit: recorded original 200000 refused (power limit 200 W outside 300-" in f
               for f in report.failures), report.failures
    assert any("locked_sm_clocks: recorded original [345, 345] refused" in f for f in report.failures)
    assert [d.power_limit_mw for d in backend.devices[::3]] == [600_000, 630_000]  # never listed: untouched
    assert not act.state_file.exists()  # settled: a retry would refuse them again


def test_originals_outside_the_gpus_constraints_are_refused_even_without_a_config(
        sim_node: SimNode, tmp_path: Path) -> None:
    backend, gpus, act = _node(sim_node, tmp_path)
    text = _crafted(gpus[1:2]).replace("200000", "5000000")
    act.state_file.path.write_text(text)
    report = restore_from_state(gpus, StateFile(act.state_file.path))
    assert backend.devices[1].power_limit_mw == 350_000
    assert any("5000 W outside" in f and "the GPU's constraints" in f for f in report.failures), report.failures


def test_an_unsafe_state_directory_is_refused_with_a_clear_line(sim_node: SimNode, tmp_path: Path) -> None:
    _, gpus = _gpus(sim_node, n=1)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    act = Actuator(gpus, ActuationConfig(), StateFile(shared / "state.json"))
    r = act.set_power_limit(0, 300)
    assert not r.ok and r.code == "state_file" and "group or world writable (mode 0777)" in r.reason
    if os.geteuid() == 0:
        other = tmp_path / "other"
        other.mkdir(mode=0o700)
        os.chown(other, 65534, 65534)
        with pytest.raises(UnsafeDirectory, match="owned by uid 65534"):
            StateFile(other / "state.json").save(act.snapshot())


def test_temp_files_are_exclusive_unpredictable_and_links_are_not_followed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sf = StateFile(tmp_path / "s" / "state.json")
    names = {atomic.temp_name(sf.path).name for _ in range(50)}
    assert len(names) == 50
    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = sf.path.parent / ".state.json.planted.tmp"
    sf.path.parent.mkdir(mode=0o700)
    planted.symlink_to(victim)
    monkeypatch.setattr(atomic, "temp_name", lambda path: planted)
    with pytest.raises(FileExistsError):
        atomic.replace_file(sf.path, b"{}")
    assert victim.read_text() == "precious"
    monkeypatch.undo()
    sf.save(sf.load())
    sf.path.unlink()
    sf.path.symlink_to(victim)  # a link in place of the file is not read: the copy is
    assert sf.load().empty() and victim.read_text() == "precious"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("state_file_trials", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_daemon_damaged_file_sigterm_and_restore_bring_back_exact_originals(tmp_path: Path) -> None:
    """A few of bench/state_file_trials.py's trials (the bench runs 20 of each)."""
    bench = _bench()
    uuids = bench._uuids(tmp_path / "probe")
    results = [bench.state_trial(tmp_path / f"{how}-{end}", how, end, 0, uuids)
               for how, end in (("deleted", "sigterm"), ("corrupted", "restore"), ("zeroed", "sigterm"),
                                ("crafted", "restore"))]
    assert all(r["ok"] for r in results), results
    assert all(r["stop_post"].startswith("nothing to restore") for r in results), results


def test_the_restore_command_offline_bounds_crafted_originals_by_the_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gputuned.daemon.app.config import load_config
    from gputuned.daemon.app.daemon import setup_gpus
    from gputuned.daemon.commands.cli import main

    script, state = tmp_path / "node.toml", tmp_path / "state" / "state.json"
    script.write_text('profile = "h100"\ngpus = 2\n')
    conf = tmp_path / "gputuned.toml"
    conf.write_text(f'[daemon]\nstate_file = "{state}"\n[gpu]\nbackend = "sim"\n[sim]\nscript = "{script}"\n'
                    '[actuation]\npower_limit_min_w = 300\nsm_clock_min_mhz = 600\n')
    devices = setup_gpus(load_config(conf)).devices
    state.parent.mkdir(mode=0o700)
    state.write_text(_crafted(devices[1:2]))  # a dead daemon's file, replaced by someone else
    main(["restore", "--offline", "--config", str(conf)])
    out, err = capsys.readouterr()
    assert "recorded original 200000 refused (power limit 200 W outside 300-" in out + err
