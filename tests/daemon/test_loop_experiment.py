"""The whole loop on the simulated node: NVML writes, plugin decisions, restore, report.

``gputuned experiment`` runs the daemon users run (built from its config, its components
attached as ``gputuned run`` attaches them), ticked on the simulator's virtual clock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.node import build_sim_node
from gputuned.collectors.sim.state import VirtualClock
from gputuned.daemon.record.experiment import (
    ORIGIN,
    ExperimentSpec,
    build_daemon,
    daemon_config,
    run_experiment,
    run_once,
)
from gputuned.daemon.record.report import build_report, energy_per_sample, load_runs


class _Watched:
    """Records every write of a simulated device's settings (what NVML set calls change)."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, int, Any]] = []
        self.devices: list[Any] = []

    def __call__(self, backend: Any) -> None:
        log = self.writes
        self.devices = list(backend.devices)
        for dev in backend.devices:
            base = type(dev)

            def __setattr__(self: Any, name: str, value: Any, _base: Any = base) -> None:  # noqa: N807
                if name in ("power_limit_mw", "locked_sm_clocks_mhz"):
                    log.append((name, self.index, value))
                _base.__setattr__(self, name, value)

            dev.__class__ = type(f"Watched{base.__name__}", (base,), {"__setattr__": __setattr__})


LOOP_SPEC = ExperimentSpec(workload="imagenet-resnet50", objective="energy_slowdown", duration_s=600.0, gpus=2,
                           profile="a100", tick_s=2.0, interval_s=10.0, chooser="climber", seed=3, forecast=None)


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], _Watched]:
    out = tmp_path_factory.mktemp("exp")
    watched = _Watched()
    try:
        doc = run_experiment(LOOP_SPEC, out, backend_hook=watched)
    finally:
        sim_nvml.attach(None)
    return out, doc, watched


def test_tuner_lowers_power_limits_through_nvml_and_restores_them(loop_run: tuple[Path, dict[str, Any], _Watched]) -> None:
    out, doc, watched = loop_run
    limits = [(i, v) for name, i, v in watched.writes if name == "power_limit_mw"]
    default = watched.devices[0].profile.power_limit_default_w * 1000
    assert any(v < default for _, v in limits), "the tuner never lowered a power limit through NVML"
    assert {i for i, v in limits if v < default} == {0, 1}  # every GPU of the job
    # restored on stop: the last write to each GPU is its original limit, the state file is gone
    for gpu in (0, 1):
        assert [v for i, v in limits if i == gpu][-1] == default
        assert watched.devices[gpu].power_limit_mw == default
    assert doc["restored"] is True
    assert not (out / "on" / "state.json").exists()
    events = [json.loads(line) for line in (out / "on" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "restored"
    assert any(e["kind"] == "action" and e["knob"] == "power_limit" for e in events)


def test_batch_size_decisions_reach_the_job_through_the_plugin_protocol(loop_run: tuple[Path, dict[str, Any], _Watched]) -> None:
    out, _doc, _ = loop_run
    on = json.loads((out / "on" / "summary.json").read_text())
    off = json.loads((out / "off" / "summary.json").read_text())
    assert on["decisions_applied"] >= 1 and off["decisions_applied"] == 0
    runs = {r.name: r for r in load_runs(out)}
    # the batch size the job reported back over the socket changed during the tuned run only
    (_, _, batch_on), = runs["on"].get("gputuned_trainer_batch_size", rank="0")
    (_, _, batch_off), = runs["off"].get("gputuned_trainer_batch_size", rank="0")
    assert len(set(batch_on.tolist())) > 1
    assert set(batch_off.tolist()) == {256.0}
    events = [json.loads(line) for line in (out / "on" / "events.jsonl").read_text().splitlines()]
    applied = [e for e in events if e["kind"] == "applied" and e["knob"] == "batch_size"]
    assert applied and all(e["value"] in batch_on.tolist() for e in applied)


def test_tuned_run_spends_less_energy_per_sample_within_the_budget(loop_run: tuple[Path, dict[str, Any], _Watched]) -> None:
    _, doc, _ = loop_run
    assert doc["energy_saving"] > 0.03
    assert doc["slowdown"] < 0.06
    assert doc["off"]["energy_j"] > 0 and doc["on"]["time_to_target_s"] > 0


def test_report_draws_the_runs_and_compares_them(loop_run: tuple[Path, dict[str, Any], _Watched], tmp_path: Path) -> None:
    out, doc, _ = loop_run
    html_path = tmp_path / "report.html"
    pngs = build_report(out, html_path)
    names = {p.stem for p in pngs}
    assert {"throughput", "power", "sm_clock", "batch_size", "energy_per_sample"} <= names
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == len(pngs)
    assert f"{doc['ratio']['energy_to_target_j']:.3f}" in page  # the summary table carries the measured ratio
    t, eps = energy_per_sample(load_runs(out)[0])
    assert len(t) > 10 and (eps > 0).all()


@pytest.mark.parametrize(("profile", "knob"), [("a100", "sm_clock"), ("p100", "power_limit")])
def test_perseus_slows_only_the_gpus_waiting_for_a_straggler(tmp_path: Path, profile: str, knob: str) -> None:
    """By SM-clock lock where the GPUs can be locked (A100); by power limit where NVML refuses a lock (P100)."""
    scenario = tmp_path / "straggler.toml"
    scenario.write_text('name = "slow-gpu-2"\ndescription = "GPU 2 computes 50% slower from the start"\n'
                        '[[event]]\nkind = "straggler"\nstart_s = 0\nramp_s = 1\nmagnitude = 0.5\ngpus = [2]\n')
    watched = _Watched()
    spec = ExperimentSpec(workload="imagenet-resnet50", objective="throughput", scenario=str(scenario), duration_s=400.0,
                          gpus=4, profile=profile, tick_s=2.0, interval_s=10.0, chooser="climber", seed=1,
                          forecast=None, all_ranks=True)
    try:
        doc = run_experiment(spec, tmp_path / "run", backend_hook=watched)
    finally:
        sim_nvml.attach(None)
    p = watched.devices[0].profile
    field, top = (("locked_sm_clocks_mhz", p.sm_clock_max_mhz) if knob == "sm_clock"
                  else ("power_limit_mw", p.power_limit_default_w * 1000))
    other = "power_limit_mw" if knob == "sm_clock" else "locked_sm_clocks_mhz"
    written = [(i, v if field == "power_limit_mw" else v[1]) for name, i, v in watched.writes if name == field and v]
    lowest = {g: min([v for i, v in written if i == g], default=top) for g in range(4)}
    assert lowest[2] == top  # the critical GPU is never slowed
    assert all(lowest[g] < top * 0.85 for g in (0, 1, 3))  # the ones waiting for it are
    assert all(v == top for name, _, v in watched.writes if name == other)  # by the one knob (restores aside)
    if knob == "sm_clock":
        assert all(v[0] == v[1] for name, _, v in watched.writes if name == field and v)  # [f, f] locks
    events = [json.loads(line) for line in (tmp_path / "run" / "on" / "events.jsonl").read_text().splitlines()]
    slowed = [e for e in events if e.get("reason") == "perseus_slack"]
    assert {e["target"] for e in slowed} == {"0", "1", "3"} and {e["knob"] for e in slowed} == {knob}
    assert doc["ratio"]["energy_j"] < 0.97 and doc["slowdown"] < 0.01  # less energy, the step no slower
    assert doc["restored"] is True


def test_the_experiment_ticks_the_daemon_users_run_on_the_virtual_clock(tmp_path: Path) -> None:
    spec = ExperimentSpec(duration_s=60.0, gpus=2, tick_s=2.0, interval_s=10.0, chooser="climber", forecast="linear")
    clock = VirtualClock()
    backend = build_sim_node(spec.profile, spec.gpus, spec.workload, None, clock, seed=0)
    events: list[dict[str, Any]] = []
    daemon = build_daemon(daemon_config(spec, True, tmp_path, tmp_path), backend, lambda: ORIGIN + clock.now(),
                          events.append)
    try:
        names = [c.name for c in daemon.components]  # the daemon's own parts first, then what its config attaches
        assert sorted(names[:2]) == ["actuation", "control"] and names[2:] == ["forecast", "rootcause", "sim-job", "tuner"]
        assert daemon.server is None  # no HTTP server
        daemon.start(background=False)
        assert daemon.loop.ticks == 0  # no first tick and no loop thread: the caller ticks
        job = next(c for c in daemon.components if c.name == "sim-job")
        assert job.reporters[0].client.wait_connected(10.0)
        for _ in range(3):
            clock.advance(spec.tick_s)
            job.step()
            daemon.tick()
            job.settle()
        _, sources = daemon.store.snapshot()
        assert {s for s, t, _ in sources if t == ORIGIN + 6.0} >= {"gpu", "trainer", "tuner", "daemon"}
        assert daemon.loop.ticks == 3
        assert any(e["kind"] == "job" for e in events)  # the tuner found the job that reported over the socket
    finally:
        daemon.stop()
        sim_nvml.attach(None)


def test_a_tuned_run_repeats_exactly(loop_run: tuple[Path, dict[str, Any], _Watched], tmp_path: Path) -> None:
    out, _doc, _ = loop_run
    try:
        again = run_once(LOOP_SPEC, True, tmp_path / "on")
    finally:
        sim_nvml.attach(None)
    first = json.loads((out / "on" / "summary.json").read_text())
    assert again == first
    assert first["tuner"]["actions"] and first["decisions_applied"] >= 1


def test_memory_clock_locks_go_through_the_experiment_and_are_restored(tmp_path: Path) -> None:
    """On a GDDR6 test profile with intermediate memory clocks the climber tries memory locks, [m, m], undone at stop."""
    profile = Path(__file__).resolve().parents[1] / "data" / "rtx_a6000_memory_clocks.toml"
    watched = _Watched()
    spec = ExperimentSpec(workload="librispeech-deepspeech2", objective="energy_slowdown", duration_s=2400.0, gpus=1,
                          profile=str(profile), tick_s=2.0, interval_s=20.0, chooser="climber", seed=0, forecast=None)
    try:
        doc = run_experiment(spec, tmp_path / "run", backend_hook=watched)
    finally:
        sim_nvml.attach(None)
    assert doc["tuner"]["actions"].get("memory_clock", 0) >= 1
    dev = watched.devices[0]
    assert dev.locked_memory_clocks_mhz is None and doc["restored"] is True  # the original (unlocked) is back
    events = [json.loads(line) for line in (tmp_path / "run" / "on" / "events.jsonl").read_text().splitlines()]
    moved = [e["value"] for e in events if e.get("knob") == "memory_clock" and e["kind"] == "action"]
    assert moved and all(v in dev.profile.memory_clocks_mhz or v == 0 for v in moved)
