"""Root cause end to end: the real trainer (2 gloo ranks) against a real daemon, forecaster on, tuner off.

A rank paused 0.3 s of every 0.6 s must raise a throughput alert within 60 s and be named, with
its GPU, by the capture the alert asks for (the default cooldown: a capture an earlier alert asked
that found nothing does not hold it); a CPU-bound data loader must be named as such.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from testkit import config

from gputuned.daemon.app.components import attach_configured
from gputuned.daemon.app.daemon import Daemon
from gputuned.daemon.app.rootcause import RootCause
from gputuned.daemon.app.runtime import node_status
from gputuned.daemon.commands.rootcause_view import root_cause_lines
from gputuned.tuner.forecast.alerts import Alert
from gputuned.tuner.forecast.level import KIND

pytestmark = pytest.mark.slow
THROUGHPUT = "gputuned_trainer_samples_per_second"


def _daemon(tmp: Path, interval_s: float = 0.25) -> Daemon:
    """A daemon ticking and asking reports every ``interval_s``, forecaster on, tuner off."""
    cfg = config(
        daemon={"interval_seconds": interval_s, "state_file": str(tmp / "state.json")},
        control={"socket_path": str(tmp / "control.sock"), "report_interval_s": interval_s},
        sim={"gpus": 2, "job": False},
        forecast={"prophet": False, "detect_in_child": False},
        tuner={"enabled": False},
    )
    daemon = Daemon(cfg, serve=False)
    attach_configured(daemon, trainer="none")
    daemon.start()
    return daemon


def _trainer(name: str, tmp: Path, env: dict[str, str], batch_size: int = 64) -> tuple[subprocess.Popen[str], Path]:
    cfg = tmp / f"{name}.toml"
    cfg.write_text(f'[plugin]\nenabled = true\nsocket = "{tmp / "control.sock"}"\njob = "{name}"\n'
                   f'trace_dir = "{tmp / "traces"}"\n[data]\nbatch_size = {batch_size}\n')
    out = tmp / f"{name}.json"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "gputuned.trainer_plugin.scenarios", name, str(out), str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    return proc, out


def _root_cause(daemon: Daemon) -> RootCause:
    return next(c for c in daemon.components if isinstance(c, RootCause))


def _wait(cond: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    return None


def _finish(proc: subprocess.Popen[str], out: Path) -> dict[str, Any]:
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, text[-4000:]
    return json.loads(Path(f"{out}.rank0").read_text())


def test_a_straggling_rank_raises_a_throughput_alert_and_is_named_with_its_gpu(tmp_path):
    """Steps of 50 ms of device time (a sleep) and a small batch, so the shared CPU barely sets the pace:
    rank 1 pausing 0.3 s of every 0.6 s from 50 s on halves the job's samples/s, which must alert within 60 s.

    The daemon ticks and the ranks report every second, and the forecaster runs its shipped
    defaults: the throughput-level rule judges once it holds 30 s of reference and a 30 s window.
    """
    daemon = _daemon(tmp_path, 1.0)
    raised: list[Alert] = []
    next(c for c in daemon.components if c.name == "forecast").service.add_alert_hook(raised.append)
    env = {"GPUTUNED_SLOW_AFTER_S": "50", "GPUTUNED_RUN_S": "80", "GPUTUNED_DEVICE_MS": "50"}
    proc, out = _trainer("straggler", tmp_path, env, batch_size=16)
    seen: list[tuple[float, float | None]] = []  # the job's samples/s as the daemon held it, for a failure's message
    try:
        assert _wait(lambda: daemon.control.connected_jobs().get("straggler") == [0, 1], 90)
        rc = _root_cause(daemon)
        lab = (("job", "straggler"), ("rank", "0"))
        _wait(lambda: seen.append((time.time(), daemon.store.value(THROUGHPUT, lab))) or proc.poll() is not None, 240)
        summary = rc.latest.get("straggler")
        status = node_status(daemon)
    finally:
        result = _finish(proc, out)
        daemon.stop()
    onset = json.loads(Path(f"{out}.rank1").read_text())["onset"]
    trace = " ".join(f"{t - onset:.0f}s:{v:.0f}" for t, v in seen[::10] if v is not None)
    alerts = [a for a in raised if a.series == THROUGHPUT and a.since >= onset - 1]
    assert alerts, ([(a.series, a.since - onset) for a in raised], trace)
    assert alerts[0].since - onset <= 60, (alerts[0].since - onset, trace)
    assert not [a for a in raised if a.kind == KIND and a.since < onset - 1], trace  # the level rule: none before the fault
    assert summary is not None, result
    assert summary["t"] >= onset, summary
    assert summary["cause"] == "straggler_wait", summary
    assert summary["straggler"]["rank"] == 1 and summary["straggler"]["gpu"] == 1, summary
    assert sum(summary["shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert summary["shares"]["straggler_wait"] > 0.3, summary["shares"]
    assert "rank 1 (GPU 1) is the straggler" in summary["suggestions"][0]
    traces = [Path(p) for p in summary["traces"].values()]
    assert traces and all(p.is_file() and p.parent == tmp_path / "traces" for p in traces)
    lines = root_cause_lines(status)
    assert any("straggler rank 1 (GPU 1)" in line for line in lines), lines


def test_a_cpu_bound_data_loader_is_named_as_the_data_loader(tmp_path):
    """Steps of 20 ms of device time (a sleep) and a small batch, as on a GPU node, with 200 ms of loader CPU work per batch.

    A loader that holds the job back takes longer than the rest of the step. On the loaded 2-core
    dev machine the rest is long: each step's all-reduce waited 50-80 ms for gloo's threads to be
    scheduled (measured, rightly, as communication), so a 20-40 ms stall came to 31-48 % of the
    step and was once named communication.
    """
    daemon = _daemon(tmp_path)
    env = {"GPUTUNED_LOAD_MS": "200", "GPUTUNED_DEVICE_MS": "20", "GPUTUNED_RUN_S": "25"}
    proc, out = _trainer("data_stall", tmp_path, env, batch_size=16)
    try:
        assert _wait(lambda: daemon.control.connected_jobs().get("data_stall") == [0, 1], 60)
        rc = _root_cause(daemon)
        rc(Alert("anomaly", THROUGHPUT, (("job", "data_stall"), ("rank", "0")), time.time(), 0.9, "dropped"))
        _wait(lambda: rc.latest.get("data_stall") or proc.poll() is not None, 40)  # 20 steps of 0.3 s and more
        summary = _wait(lambda: rc.latest.get("data_stall"), 2)  # the daemon's next tick takes the answer
    finally:
        _finish(proc, out)
        daemon.stop()
    assert summary is not None
    assert summary["cause"] == "data_loader" and summary["straggler"] is None, summary
    assert summary["shares"]["data_loader"] > 0.5, summary["shares"]
    assert sum(summary["shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert "data loader stalls" in summary["suggestions"][0]
