"""The operator is in charge: a knob set by hand is pinned against the tuner, pins and the
pause show in status, and both outlive a daemon restart; release and restore end a pin."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from testkit import config

from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.node import build_sim_node
from gputuned.collectors.sim.trainer import connect
from gputuned.daemon.actuation.ledger import NotRecorded
from gputuned.daemon.actuation.pins import PinBook, PinFile
from gputuned.daemon.app.daemon import Daemon, setup_gpus
from gputuned.daemon.app.tuning import TuningComponent
from gputuned.daemon.commands.cli import main
from gputuned.daemon.commands.status import restore_offline
from gputuned.trainer_plugin.client import DaemonClient
from gputuned.tuner.decision.config import TuningConfig

INTERVAL_S = 0.4


class FastClock:
    """Real time, 20 times faster."""

    def __init__(self, speed: float = 20.0) -> None:
        self.t0, self.speed = time.monotonic(), speed

    def now(self) -> float:
        return (time.monotonic() - self.t0) * self.speed


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def _status(sock: Path) -> dict[str, Any]:
    code, out = _cli("status", "--json", "--socket", str(sock))
    assert code == 0, out
    return json.loads(out)


def _daemon(tmp_path: Path, backend: Any) -> Daemon:
    cfg = config(daemon={"interval_seconds": 0.1, "state_file": str(tmp_path / "state" / "state.json")},
                 control={"socket_path": str(tmp_path / "control.sock")}, collectors={"host": {"enabled": False}})
    return Daemon(cfg, gpus=setup_gpus(cfg, backend))


def test_a_pinned_power_limit_outlasts_ten_tuner_intervals_until_released(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sock = tmp_path / "control.sock"
    backend = build_sim_node("a100", 2, "imagenet-resnet50", None, FastClock(), seed=1)
    daemon = _daemon(tmp_path, backend)
    assert daemon.control is not None
    events: list[dict[str, Any]] = []
    tuning = TuningConfig(interval_s=INTERVAL_S, chooser="climber", tune_batch=False, tune_clocks=False)  # power moves only
    daemon.attach(tuner := TuningComponent(daemon.store, daemon.actuator, daemon.control, [0, 1], tuning,
                                           on_event=events.append))
    stop = threading.Event()
    try:
        daemon.start()
        reporter = connect(backend, str(sock), job_name="job", make_client=DaemonClient)
        threading.Thread(target=reporter.run, args=(stop, 0.05), daemon=True).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(e["kind"] == "action" for e in events):
            time.sleep(0.05)
        assert any(e["kind"] == "action" and e["knob"] == "power_limit" for e in events), "the tuner never moved"
        code, out = _cli("set", "--socket", str(sock), "--gpu", "0", "--power-limit-w", "330")
        assert code == 0 and "pinned" in out, out
        actions_before = sum(1 for e in events if e["kind"] == "action")
        seen = set()
        end = time.monotonic() + 10 * INTERVAL_S + 0.5
        while time.monotonic() < end:  # ten tuner intervals: GPU 0 stays where the operator put it
            seen.add(backend.devices[0].power_limit_mw)
            time.sleep(0.02)
        assert seen == {330_000}
        assert sum(1 for e in events if e["kind"] == "action") > actions_before, "the tuner went on with GPU 1"
        said = [r.getMessage() for r in caplog.records if "tuner pinned power_limit on 0" in r.getMessage()]
        assert len(said) == 1, said
        res = daemon.actuator.change(0, "power_limit", 300_000, origin="tuner")  # the actuator refuses it too
        assert res.code == "pinned" and daemon.actuator.counts()[1][("power_limit", "pinned")] >= 1
        st = _status(sock)
        assert [(p["target"], p["knob"], p["value"]) for p in st["actuation"]["pins"]] == [("gpu 0", "power_limit", 330_000)]
        last = {(c["target"], c["knob"]): c for c in st["actuation"]["last_changes"]}
        assert last[("gpu 0", "power_limit")]["origin"] == "operator"
        assert last[("gpu 0", "power_limit")]["new"] == 330_000

        code, out = _cli("set", "--socket", str(sock), "--gpu", "0", "--release", "power_limit")
        assert code == 0 and "released" in out, out
        assert _status(sock)["actuation"]["pins"] == []
        assert tuner.node is not None and not tuner.node.pinned("power_limit", "0")
        assert tuner.node.set_power_limit("0", 370.0)  # the tuner's change goes through again
        assert backend.devices[0].power_limit_mw == 370_000
    finally:
        stop.set()
        daemon.stop()
        sim_nvml.attach(None)


def test_pins_and_the_pause_show_in_status_and_outlive_a_restart_restore_clears_pins(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    backend = build_sim_node("a100", 2, "imagenet-resnet50", None, FastClock(), seed=1)
    default = backend.devices[1].power_limit_mw
    daemon = _daemon(tmp_path, backend)
    try:
        daemon.start()
        assert _cli("set", "--socket", str(sock), "--gpu", "1", "--power-limit-w", "300")[0] == 0
        code, out = _cli("tuner", "pause", "--socket", str(sock))
        assert code == 0 and "paused" in out, out
        st = _status(sock)
        assert st["tuner"]["paused"]["by"].startswith("uid ") and st["tuner"]["paused"]["since"] > 0
        assert Path(st["tuner"]["pause_file"]).parent == tmp_path / "state"
        assert [p["target"] for p in st["actuation"]["pins"]] == ["gpu 1"]
        code, out = _cli("status", "--socket", str(sock))
        assert "PAUSED" in out and "pinned: gpu 1 power_limit" in out, out
    finally:
        daemon.stop()
    assert backend.devices[1].power_limit_mw == default  # the stop put the original back; the pin stays
    assert (tmp_path / "state" / "tuner.pause").exists()
    # a clean stop leaves no state file (nothing differs from its originals); the pins have their own file
    assert not (tmp_path / "state" / "state.json").exists()
    assert [p["knob"] for p in json.loads((tmp_path / "state" / "pins.json").read_text())["pins"]] == ["power_limit"]
    code, lines = restore_offline(daemon.cfg, clear_pins=False)  # the unit's ExecStopPost keeps the pins
    assert code == 0 and lines[0].startswith("nothing to restore") and "pins stay" in lines[1], lines

    daemon = _daemon(tmp_path, backend)  # the next start: paused still, the pinned value applied again
    try:
        daemon.start()
        st = _status(sock)
        assert st["tuner"]["paused"] is not None
        assert [(p["target"], p["value"]) for p in st["actuation"]["pins"]] == [("gpu 1", 300_000)]
        assert backend.devices[1].power_limit_mw == 300_000
        code, out = _cli("restore", "--socket", str(sock))
        assert code == 0, out
        st = _status(sock)
        assert st["actuation"]["pins"] == []
        assert backend.devices[1].power_limit_mw == default
        last = {(c["target"], c["knob"]): c for c in st["actuation"]["last_changes"]}
        assert last[("gpu 1", "power_limit")]["origin"] == "restore"
        assert _cli("tuner", "resume", "--socket", str(sock))[0] == 0
        assert _status(sock)["tuner"]["paused"] is None
    finally:
        daemon.stop()
        sim_nvml.attach(None)
    assert not (tmp_path / "state" / "state.json").exists()
    assert not (tmp_path / "state" / "pins.json").exists()


def test_restore_without_a_daemon_clears_the_pins_and_offline_keeps_them(tmp_path: Path) -> None:
    backend = build_sim_node("a100", 1, "imagenet-resnet50", None, FastClock(), seed=1)
    daemon = _daemon(tmp_path, backend)
    book = PinBook(PinFile(tmp_path / "state" / "pins.json"), daemon.gpus.devices, threading.RLock())
    book.pin(0, "power_limit", 300_000, "uid 0")
    try:
        assert restore_offline(daemon.cfg, clear_pins=False)[0] == 0
        assert (tmp_path / "state" / "pins.json").exists()
        code, lines = restore_offline(daemon.cfg, clear_pins=True)
        assert code == 0 and any("released 1 pin" in line for line in lines), lines
        assert not (tmp_path / "state" / "pins.json").exists()
    finally:
        sim_nvml.attach(None)


@pytest.mark.parametrize("body", [b"{not json", b'{"version": 1, "pins": [{"knob": 3}]}', b'{"version": 9}'])
def test_a_damaged_pins_file_is_one_line_and_no_pins(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, body: bytes) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "pins.json").write_bytes(body)
    backend = build_sim_node("a100", 1, "imagenet-resnet50", None, FastClock(), seed=1)
    daemon = _daemon(tmp_path, backend)
    try:
        daemon.start()
        assert daemon.actuator.pins.lines() == []
        said = [r for r in caplog.records if "pins file" in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.ERROR, said
        daemon.actuator.pins.pin(0, "power_limit", 320_000, "uid 0")  # a new pin replaces the damaged file
        assert len(PinFile(state / "pins.json").load()) == 1
    finally:
        daemon.stop()
        sim_nvml.attach(None)


def test_pins_written_into_a_group_writable_directory_are_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    state.chmod(0o777)
    book = PinBook(PinFile(state / "pins.json"), [], threading.RLock())
    with pytest.raises(NotRecorded, match="group or world writable"):
        book.pin("job", "batch_size", 64, "uid 0")
    assert not (state / "pins.json").exists() and book.lines() == []


def test_an_old_configs_pause_file_is_one_warning_and_not_read(caplog: pytest.LogCaptureFixture) -> None:
    cfg = TuningConfig.model_validate({"interval_s": 5.0, "pause_file": "/run/gputuned/tuner.paused"})
    said = [r.getMessage() for r in caplog.records if "pause_file" in r.getMessage()]
    assert len(said) == 1 and "tuner.pause" in said[0] and caplog.records[0].levelno == logging.WARNING, said
    assert cfg.interval_s == 5.0 and not hasattr(cfg, "pause_file")
    with pytest.raises(ValueError, match="pause_fil"):  # any other unknown key is still an error
        TuningConfig.model_validate({"pause_fil": "x"})
