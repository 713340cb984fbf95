"""The daemon: wires GPUs, collectors, store, exporter and loop together from a Config.

Parts are built here and handed to each other by constructor; nothing reaches for a
global. Optional parts (control socket, actuation, forecasting, tuner) attach as
components with ``start()``, ``tick(now)`` and ``stop()``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from gputuned.collectors import registry
from gputuned.collectors.attribution import link
from gputuned.collectors.base import Collector
from gputuned.collectors.device import DriverMissingError, GPUDevice, GPUError
from gputuned.collectors.hardware import nvidia_hardware
from gputuned.collectors.nvml import open_gpus, open_nvml
from gputuned.collectors.registry import CollectorContext
from gputuned.daemon.actuation.actuator import Actuator
from gputuned.daemon.actuation.statefile import StateFile
from gputuned.daemon.app.catalog import served_catalog
from gputuned.daemon.app.config import Config
from gputuned.daemon.app.runtime import RuntimeAdmin
from gputuned.daemon.control.server import ControlServer
from gputuned.daemon.core.config import ConfigError
from gputuned.daemon.core.exporter import MetricsRenderer, MetricsServer
from gputuned.daemon.core.loop import CollectionLoop
from gputuned.daemon.core.notify import Notifier
from gputuned.daemon.core.store import Store

if TYPE_CHECKING:  # the simulator is imported only when the config chooses it
    from gputuned.collectors.sim.state import SimBackend

logger = logging.getLogger(__name__)


class Component(Protocol):
    """An optional part of the daemon driven by the loop."""

    name: str

    def start(self) -> None: ...

    def tick(self, now: float) -> None: ...

    def stop(self) -> None: ...


@dataclass
class GPUSetup:
    nvml: ModuleType | None
    kind: str  # "nvml", "sim" or "none"
    devices: list[GPUDevice] = field(default_factory=list)
    sim_backend: SimBackend | None = None
    driver_version: str = ""
    error: Exception | None = None  # why there is no NVML, when kind is "none"


def build_sim_backend(cfg: Config) -> SimBackend:
    """The simulated node the config asks for: scripted values, or the physics model."""
    from gputuned.collectors.sim.state import RealClock, scripted_from_spec

    sim = cfg.sim
    if sim.script is not None:  # scripted values: neither the physics model nor numpy
        spec = tomllib.loads(sim.script.read_text())
        return scripted_from_spec(spec, privileged=sim.privileged)
    from gputuned.collectors.sim.node import build_sim_node

    return build_sim_node(
        profile=sim.profile,
        gpus=sim.gpus,
        workload=sim.workload,
        scenario=sim.scenario,
        clock=RealClock(),
        seed=sim.seed,
    )


def _open_sim(cfg: Config, sim_backend: SimBackend | None) -> tuple[ModuleType, SimBackend]:
    """Attach the simulated node (given, or built from the config) and open its NVML module."""
    from gputuned.collectors.sim import nvml as sim_nvml

    if sim_backend is None:
        sim_backend = build_sim_backend(cfg)
        if cfg.sim.settings_file is not None:
            from gputuned.daemon.app.simnode import persist_settings

            persist_settings(sim_backend, cfg.sim.settings_file)
    sim_nvml.attach(sim_backend)
    nvml, _ = open_nvml("sim", sim_module=sim_nvml)
    return nvml, sim_backend


def setup_gpus(cfg: Config, sim_backend: SimBackend | None = None, *, root: Path | str = "/") -> GPUSetup:
    """Open NVML (real or simulated per config) and every GPU it reports.

    ``auto`` tries the real library first. When it cannot be opened, the simulated node stands
    in only on a host with no NVIDIA hardware under ``root``; on a GPU host the GPUs are served
    down with NVML's error and nothing is simulated. Only then is the simulator imported.
    """
    backend = cfg.gpu.backend
    sim_be: SimBackend | None = None
    try:
        if backend == "sim":
            nvml, sim_be = _open_sim(cfg, sim_backend)
        else:
            try:
                nvml, _ = open_nvml("nvml")
            except DriverMissingError as e:
                if backend != "auto":
                    raise
                if found := nvidia_hardware(root):
                    signs = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
                    raise DriverMissingError(f"{e}; NVIDIA hardware is present ({signs}): "
                                             "serving no simulated GPUs") from e
                logger.warning("no NVIDIA driver and no NVIDIA device on this host (%s): serving the SIMULATED GPU node", e)
                nvml, sim_be = _open_sim(cfg, sim_backend)
    except GPUError as e:
        logger.error("no GPUs: %s", e)
        return GPUSetup(None, "none", error=e)
    version = nvml.nvmlSystemGetDriverVersion()
    version = version.decode() if isinstance(version, bytes) else str(version)
    kind = "nvml" if sim_be is None else "sim"
    return GPUSetup(nvml, kind, list(open_gpus(nvml, cfg.gpu.call_timeout_seconds)), sim_be, version)


def collector_context(gpus: GPUSetup) -> CollectorContext:
    """What the collector factories get: the opened GPUs, and the simulated node's own sources."""
    simulated: dict[str, Callable[[], Collector]] = {}
    backend = gpus.sim_backend
    if hasattr(backend, "peer_rtt_s"):  # the simulated node models its network: no peer hosts to connect to
        from gputuned.collectors.sim.peers import SimPeerRTTCollector

        simulated["peers"] = lambda: SimPeerRTTCollector(backend)
    return CollectorContext(gpus.devices, gpus.driver_version, gpus.kind, gpus.error, simulated)


def build_collectors(cfg: Config, gpus: GPUSetup) -> list[Collector]:
    """The enabled collectors of the registry, in tick order."""
    return registry.build_collectors(cfg.collectors.tables(), collector_context(gpus))


class Daemon:
    """One node's gputuned: collection loop, store, exporter and attached components."""

    def __init__(
        self,
        cfg: Config,
        *,
        gpus: GPUSetup | None = None,
        collectors: list[Collector] | None = None,
        serve: bool = True,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` gives each tick's wall time: a virtual clock runs the daemon faster than real time."""
        self.cfg = cfg
        self.gpus = gpus if gpus is not None else setup_gpus(cfg)
        self.store = Store(cfg.store.history_samples, cfg.store.forget_after_s)
        self.collectors = collectors if collectors is not None else build_collectors(cfg, self.gpus)
        self.loop = CollectionLoop(self.collectors, self.store, cfg.daemon.interval_seconds, wallclock=clock)
        self.renderer = MetricsRenderer(self.store, served_catalog(), dcgm=cfg.exporter.metric_names == "dcgm",
                                     dcgm_version=cfg.exporter.dcgm_version)
        self.server: MetricsServer | None = None
        if serve:
            self.server = MetricsServer.from_config(cfg.exporter, self.renderer)
            self.loop.on_tick_end(self.renderer.tick_ended)
        self.components: list[Component] = []
        self._thread: threading.Thread | None = None
        self.started_at = 0.0
        # Runtime parts: the control socket, actuation (the only way GPU settings and a job's
        # knobs change), sd_notify. Attached first, so they stop last: the actuator restores
        # after the tuner (attached later) has stopped, and before the control socket closes,
        # so a connected job gets its batch size back.
        self.notifier = notifier if notifier is not None else Notifier()
        self.control: ControlServer | None = None
        if cfg.control.enabled:
            self.control = ControlServer(cfg.control, self.store, admin=RuntimeAdmin(self))
            self.attach(self.control)
        # which rank runs on which GPU (NVML's process lists and the ranks' hellos), and pod labels
        self.processes = link(self.collectors, self.control.jobs.claims if self.control is not None else None)
        self.actuator = Actuator(self.gpus.devices, cfg.actuation, StateFile(cfg.daemon.state_file), self.store,
                                 jobs=self.control)
        self.attach(self.actuator)
        self.loop.add_hook(self._notify_tick)

    def attach(self, component: Component) -> None:
        self.components.append(component)
        self.loop.add_hook(component.tick)

    def describe(self) -> str:
        """One line saying what runs and where."""
        g = self.gpus
        if g.kind == "sim":
            why = "no NVIDIA driver or device on this host" if self.cfg.gpu.backend == "auto" else "backend sim"
            what = f"SIMULATED GPU node ({why}; no real GPU is monitored or tuned)"
        elif g.kind == "nvml":
            what = f"NVIDIA driver {g.driver_version}"
        else:
            what = f"no GPUs ({g.error})" if g.error is not None else "no GPUs"
        models = sorted({d.identity.model for d in g.devices})
        gpus = f"{len(g.devices)} x {', '.join(models)}" if g.devices else "0 GPUs"
        where = self.server.where if self.server else "(not serving)"
        return f"{what}: {gpus}; serving {where}"

    def start(self, *, background: bool = True) -> None:
        """Start components, then the HTTP server and the loop thread (first tick runs here).

        Without ``background`` only the components start: the caller runs each :meth:`tick`.
        """
        self.started_at = time.monotonic()
        for comp in self.components:
            try:
                comp.start()
            except OSError as e:  # e.g. the control socket cannot be bound: monitor on
                logger.error("%s not started: %s", comp.name, e)
                if comp is self.control:
                    self.components.remove(comp)
                    self.control = None
        if not background:
            return
        self.loop.tick()  # one full collection before serving: no empty first scrape
        if self.server:
            self.server.start()
        self._thread = threading.Thread(target=self._run_loop, name="gputuned-loop", daemon=True)
        self._thread.start()
        wd = self.notifier.watchdog_s
        if wd is not None and self.cfg.daemon.interval_seconds > wd / 2:
            logger.warning("collection interval %.3g s is more than half of WatchdogSec (%.3g s)", self.cfg.daemon.interval_seconds, wd)
        self.notifier.ready(self.status_line())

    def tick(self) -> None:
        """Run one collection tick on the caller's thread, at the clock's time (no loop thread)."""
        self.loop.tick()

    def status_line(self) -> str:
        """One line for systemd's STATUS=: what is collected, jobs, changed GPUs."""
        up = sum(1 for r in self.loop.runners if r.up)
        jobs = len(self.control.connected_jobs()) if self.control else 0
        changed = self.actuator.changed_gpus()
        return (f"{len(self.gpus.devices)} GPUs ({self.gpus.kind}), {up}/{len(self.loop.runners)} collectors up, "
                f"{jobs} jobs, {changed} GPUs tuned")

    def _notify_tick(self, now: float) -> None:
        self.notifier.watchdog()
        if self.notifier.enabled and self.notifier.is_ready:
            self.notifier.status(self.status_line())

    def reload(self, cfg: Config) -> None:
        """Apply a reloaded config: actuation and control settings now, the rest at restart."""
        self.notifier.reloading()
        for section in ("daemon", "exporter", "gpu", "sim", "collectors", "store"):
            if getattr(cfg, section) != getattr(self.cfg, section):
                logger.warning("config section [%s] changed: takes effect at the next restart", section)
        logging.getLogger().setLevel(cfg.daemon.log_level.upper())
        self.actuator.reload(cfg.actuation)
        if self.control is not None:
            self.control.reload(cfg.control)
        for comp in self.components:
            hook = getattr(comp, "reload_config", None)
            if hook is not None:
                hook(cfg)
        self.cfg = cfg
        logger.info("config reloaded")
        self.notifier.ready(self.status_line())

    def _run_loop(self) -> None:
        # The first tick already ran in start(); wait one period before the next.
        if not self.loop.stop_event.wait(self.cfg.daemon.interval_seconds):
            self.loop.run()

    def stop(self) -> None:
        self.notifier.stopping()
        self.loop.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for comp in reversed(self.components):
            try:
                comp.stop()
            except Exception:  # noqa: BLE001 - stopping must go on for the others
                logger.exception("stopping %s failed", comp.name)
        if self.server:
            self.server.stop()
        self.loop.close()
        if self.gpus.nvml is not None:
            try:
                self.gpus.nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                logger.debug("nvmlShutdown failed", exc_info=True)

    def run_until_signal(self, reload: Callable[[], Config] | None = None) -> None:
        """Block until SIGTERM or SIGINT, then stop cleanly (restoring GPUs); SIGHUP reloads."""
        stop = threading.Event()
        hup = threading.Event()

        def _on_signal(signum: int, _frame: object) -> None:
            logger.info("received %s, stopping", signal.Signals(signum).name)
            stop.set()

        def _on_hup(_signum: int, _frame: object) -> None:
            hup.set()

        old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, _on_hup if reload else signal.SIG_IGN)
        try:
            self.start()
            while not stop.wait(0.2):
                if hup.is_set():
                    hup.clear()
                    self._reload_from(reload)
        finally:
            self.stop()
            for s, h in old.items():
                signal.signal(s, h)

    def _reload_from(self, load: Callable[[], Config] | None) -> None:
        if load is None:
            return
        logger.info("received SIGHUP, reloading config")
        try:
            cfg = load()
        except ConfigError as e:
            logger.error("config reload failed, keeping the running config: %s", e)
            return
        self.reload(cfg)
