"""The optional parts a daemon attaches from its config: forecaster, tuner, the job.

Each is a :class:`~gputuned.daemon.app.daemon.Component`; :func:`attach_configured` attaches
them in the order they must start (after actuation and the control socket, which the
Daemon attaches itself, so they stop first and the actuator restores last).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gputuned.daemon.core.store import Store
from gputuned.intent import Change

if TYPE_CHECKING:
    from gputuned.collectors.sim.trainer import SimTrainerReporter
    from gputuned.daemon.app.daemon import Daemon
    from gputuned.daemon.app.rootcause import RootCause
    from gputuned.daemon.control.server import ControlServer
    from gputuned.tuner.forecast.offload import OffloadedForecastService
    from gputuned.tuner.forecast.service import ForecastService

logger = logging.getLogger(__name__)


class ForecastComponent:
    """Feeds every tick's samples and the knob changes applied since to the forecaster; publishes what it serves.

    :meth:`note_change` is the actuator's change hook: it may run on any thread (the tuner's
    tick, an operator's ``set`` on the control socket), so changes wait in a queue and reach
    the service on the tick thread, before the tick's samples.
    """

    name = "forecast"

    def __init__(
        self, store: Store, service: ForecastService | OffloadedForecastService, profiler: RootCause | None = None
    ) -> None:
        self.store = store
        self.service = service
        self.profiler = profiler
        self._changes: deque[Change] = deque()
        if profiler is not None:
            service.add_alert_hook(profiler)

    def note_change(self, change: Change) -> None:
        """Queue an applied knob change for the forecaster (thread-safe)."""
        self._changes.append(change)

    def start(self) -> None:
        self.service.start()

    def tick(self, now: float) -> None:
        while self._changes:
            self.service.note_change(self._changes.popleft())
        self.service.observe(now, self.store.latest())
        # served, never asked for a window: no ring per forecast series (there is one per tracked series)
        self.store.publish(self.name, now, self.service.samples(), history=False)

    def alert_kinds(self) -> list[str]:
        """Kinds of the active alerts (thermal, ecc, xid, series anomalies), for the guard."""
        return [a.kind for a in self.service.active_alerts()]

    def stop(self) -> None:
        self.service.close()


class SimJobComponent:
    """Runs the simulated node's training job as a client of the daemon's control socket.

    The job reports and takes decisions through the same protocol and client as the
    trainer plugin, so the daemon cannot tell it from a real job. It reports every second
    on its own thread; given the daemon's control ``server`` it is stepped instead: on a
    virtual clock the caller runs :meth:`step` before each tick and :meth:`settle` after
    it, and each waits for the server, so runs repeat exactly.
    """

    name = "sim-job"

    def __init__(self, backend: Any, socket_path: str, job_name: str, *, server: ControlServer | None = None) -> None:
        self.backend = backend
        self.socket_path = socket_path
        self.job_name = job_name
        self.server = server
        self.reporters: list[SimTrainerReporter] = []  # the leader (rank 0) first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._place(os.getpid())
        self.reporters = [self.connect(0)]
        if self.server is None:
            self._thread = threading.Thread(target=self.reporters[0].run, args=(self._stop,), name="gputuned-sim-job",
                                            daemon=True)
            self._thread.start()

    def connect(self, rank: int) -> SimTrainerReporter:
        """A reporter for ``rank`` of the job, connected through the trainer plugin's client."""
        from gputuned.collectors.sim.trainer import connect
        from gputuned.trainer_plugin.client import DaemonClient

        devices = getattr(self.backend, "devices", [])
        uuid = devices[rank % len(devices)].uuid if devices else ""
        return connect(self.backend, self.socket_path, self.job_name,
                       make_client=functools.partial(DaemonClient, cuda_uuid=uuid), rank=rank)

    def _place(self, pid: int | None) -> None:
        """The simulated ranks run in this process: NVML lists it on each GPU of the job (None: on none)."""
        job = getattr(self.backend, "job", None)
        for dev in getattr(self.backend, "devices", [])[: getattr(job, "gpus", 0)]:
            dev.process_pids = [] if pid is None else [pid]

    def tick(self, now: float) -> None:
        """The job paces itself (its thread, or the caller's :meth:`step`)."""

    def step(self, timeout_s: float = 2.0) -> None:
        """Stepped: every rank reports, then wait until the server has taken the reports."""
        server = self.server
        assert server is not None
        want = server.reports_total + len(self.reporters)
        for r in self.reporters:
            r.report()
        _wait(lambda: server.reports_total >= want, timeout_s)

    def settle(self, wait_s: float = 2.0) -> int:
        """Stepped: apply the decisions the server sent (waiting up to ``wait_s`` s) and wait for their answers."""
        server = self.server
        if server is None or not _unanswered(server):
            return 0
        n = self.reporters[0].apply_decisions(wait_s)
        if n:
            _wait(lambda: not _unanswered(server), wait_s)
        return n

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.settle(1.0)  # stepped: the tuner's last decision (its batch size restored) still reaches the job
        for r in self.reporters:
            r.client.close()
        self._place(None)


def _unanswered(server: ControlServer) -> bool:
    """Whether a decision the server sent has no ack yet."""
    n = server.decisions
    return n.get("sent", 0) > n.get("acked", 0) + n.get("refused", 0) + n.get("undelivered", 0)


def _wait(cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0002)
    return True


class RealTrainerComponent:
    """Runs the shipped trainer (``gputuned train``) beside the daemon, its plugin connected.

    For the demo's ``--trainer real``: torchrun starts ``nproc`` processes on this machine
    (gloo on the CPU); rank 0's plugin reports to the daemon's socket and applies the tuner's
    batch-size decisions, which the trainer logs as they take effect. Its output goes to the
    daemon's stderr. Its checkpoints go to a run folder of its own (``run_dir``), never the one
    the config names, which ``gputuned train`` of the same config uses.
    """

    name = "trainer"

    def __init__(self, config_path: Path, socket_path: str, nproc: int = 2, job: str = "digits",
                 epochs: int = 3000, run_dir: Path = Path("runs/daemon-trainer")) -> None:
        if not config_path.is_file():
            raise ValueError(f"--trainer real: trainer config {config_path} not found")
        self.cmd = [sys.executable, "-m", "gputuned", "train", "--nproc", str(nproc), str(config_path),
                    "--set", f"plugin.socket={json.dumps(socket_path)}", "--set", f"plugin.job={json.dumps(job)}",
                    "--set", f"train.epochs={epochs}",
                    "--set", f"checkpoint.dir={json.dumps(str(run_dir / job / 'checkpoints'))}"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, start_new_session=True)
        logger.info("trainer started (pid %d): %s", self.proc.pid, " ".join(self.cmd))

    def tick(self, now: float) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            logger.info("trainer exited with %d", self.proc.returncode)
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the trainer checkpoints on SIGTERM
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def attach_configured(daemon: Daemon, *, trainer: str = "sim", trainer_config: Path | None = None,
                      stepped_job: bool = False) -> None:
    """Attach the forecaster, the simulated job and the tuner as the daemon's config asks.

    ``stepped_job``: the simulated job is stepped by the caller (:class:`SimJobComponent`).
    """
    cfg = daemon.cfg
    forecast: ForecastComponent | None = None
    if cfg.forecast.enabled:
        from gputuned.daemon.app.rootcause import RootCause
        from gputuned.tuner.forecast.offload import open_service

        profiler = RootCause(daemon.control, daemon.store) if daemon.control is not None else None
        forecast = ForecastComponent(daemon.store, open_service(cfg.forecast), profiler)
        daemon.actuator.add_change_hook(forecast.note_change)
        daemon.attach(forecast)
        if profiler is not None:  # asks for captures on trainer alerts; a tuner-caused one spares the cooldown
            daemon.actuator.add_change_hook(profiler.on_change)
            daemon.attach(profiler)
    backend = daemon.gpus.sim_backend
    if trainer == "real" and daemon.control is not None:
        daemon.attach(RealTrainerComponent(trainer_config or Path("examples/digits.toml"), str(cfg.control.socket_path)))
    elif trainer == "sim" and cfg.sim.job and daemon.control is not None and getattr(backend, "job", None) is not None:
        daemon.attach(SimJobComponent(backend, str(cfg.control.socket_path), cfg.sim.job_name,
                                      server=daemon.control if stepped_job else None))
    if tuner_enabled(daemon):
        from gputuned.daemon.app.tuning import TuningComponent

        # the CPU trainer draws nothing from the simulated GPUs: tune its batch only, unless the file says
        tcfg = cfg.tuner.tuning(tune_power=False, tune_clocks=False) if trainer == "real" else cfg.tuner.tuning()
        daemon.attach(TuningComponent(
            daemon.store, daemon.actuator, daemon.control, [d.identity.index for d in daemon.gpus.devices], tcfg,
            alerts=forecast.alert_kinds if forecast is not None else None,
            placement=(lambda: procs.latest) if (procs := daemon.processes) is not None else None,
        ))


def tuner_enabled(daemon: Daemon) -> bool:
    """``tuner.enabled``: true, false, or "auto" (on for a simulated node only)."""
    enabled = daemon.cfg.tuner.enabled
    if enabled == "auto":
        return daemon.gpus.kind == "sim"
    return bool(enabled)
