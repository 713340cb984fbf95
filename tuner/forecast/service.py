"""The forecast service the daemon wires in: online detection in-process, Prophet in a worker.

Per tick the daemon calls :meth:`ForecastService.observe` with the tick's samples. That call
is cheap and never blocks: it runs each configured series' online detector and
degradation-ahead estimate (pure Python), folds the sample into a bounded downsampled
history, drains finished forecasts from the worker without waiting, and, when a refit is
due and none is in flight, hands the histories to the worker through a queue
(``put_nowait``: the queue's feeder thread does the writing). :meth:`samples` returns the
forecast, anomaly, alert and time-to-degradation series for the exporter;
:meth:`active_alerts` the alerts for the tuner's guard. Hooks added with
:meth:`add_alert_hook` run on every raised alert (e.g. to ask the trainer plugin for a
profile capture when a trainer series alerts).
"""

from __future__ import annotations

import bisect
import logging
import math
import queue
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gputuned.collectors.families import Labels, Sample, describe_labels
from gputuned.intent import Change
from gputuned.tuner.forecast.alerts import Alert, AlertHook, call_hooks
from gputuned.tuner.forecast.band import BandRule, forecast_at, z_of
from gputuned.tuner.forecast.child import close_queues, spawn_child, stop_child
from gputuned.tuner.forecast.config import ForecastConfig, SeriesSpec
from gputuned.tuner.forecast.detector import OnlineDetector
from gputuned.tuner.forecast.eta import DegradationEta
from gputuned.tuner.forecast.families import (
    ALERT_ACTIVE,
    ALERTS_RAISED,
    ANOMALY_SCORE,
    ETA,
    FIT_SECONDS,
    FITS,
    FORECAST_VALUE,
    WORKER_UP,
)
from gputuned.tuner.forecast.hardware import FAMILIES as HW_FAMILIES
from gputuned.tuner.forecast.hardware import HardwareAlert, HardwareWatch, gpu_labels
from gputuned.tuner.forecast.level import KIND as LEVEL_KIND
from gputuned.tuner.forecast.level import LevelWatch
from gputuned.tuner.forecast.settle import SettleWindows
from gputuned.tuner.forecast.worker import InlineWorker, worker_main

logger = logging.getLogger(__name__)


SeriesKey = tuple[str, Labels]
_WHAT = {"anomaly": "deviates from its baseline", "degradation": "heads for its limit",
         "forecast": "stays outside its forecast's 2-sigma band"}


@dataclass
class _Track:
    spec: SeriesSpec
    detector: OnlineDetector
    eta: DegradationEta | None
    history: deque[tuple[float, float]]
    bucket_start: float = math.nan
    bucket_sum: float = 0.0
    bucket_n: int = 0
    score: float = 0.0
    last_t: float = 0.0
    forecast: dict[str, list[float]] = field(default_factory=dict)
    band: BandRule | None = None
    rank: bool = False  # a trainer rank's series: bounded by max_rank_series, forgotten after rank_forget_after_s


def _is_rank(labels: Labels) -> bool:
    """Whether a series belongs to a trainer rank (its labels name one)."""
    return any(name == "rank" for name, _ in labels)


class ForecastService:
    """Online detection, degradation ETAs, hardware alerts and Prophet forecasts for the daemon."""

    def __init__(self, config: ForecastConfig | None = None, fitter: str | None = None) -> None:
        self.config = config or ForecastConfig()
        self._fitter = fitter or self.config.fitter_name
        self._specs = {s.family: s for s in self.config.series}
        self._refs = {s.limit.reference for s in self.config.series if s.limit and s.limit.kind == "reference"}
        self._wanted = frozenset(self._specs) | self._refs | HW_FAMILIES
        self._tracks: dict[SeriesKey, _Track] = {}
        self._untracked = 0  # new series refused past max_series or max_rank_series
        self._rank_tracks = 0  # tracks of trainer ranks' series
        self._untracked_logged = float("-inf")
        cfg = self.config
        self._hw = HardwareWatch(cfg.hardware_hold_s, cfg.thermal_clear_s, cfg.ecc_corrected_burst, cfg.ecc_burst_window_s)
        self._hooks: list[AlertHook] = []
        self._settle = SettleWindows()
        self._level = LevelWatch(cfg)
        self._raised: dict[str, int] = {}
        self._z_iw = z_of(self.config.interval_width)
        self._proc: Any = None
        self._jobs: Any = None
        self._results: Any = None
        self._job_id = 0
        self._in_flight = False
        self._first_seen = math.nan
        self._now = math.nan
        self._next_sweep = -math.inf
        self._next_fit = math.nan
        self._fits = 0
        self._fit_seconds = 0.0

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker process (spawned, so the core's threads and sockets stay its own)."""
        if not self.config.enabled or self._proc is not None or self._fitter == "none":
            return  # fitter none: the online detector alone, no worker
        self._proc, self._jobs, self._results = spawn_child(
            worker_main, "gputuned-forecast", self.config.worker_nice, daemon=True,
        )
        self._in_flight = False
        logger.info("forecast worker started (pid %s, fitter %s)", self._proc.pid, self._fitter)

    def start_inline(self, worker: InlineWorker) -> None:
        """Fit in this process with ``worker`` (a :class:`~.worker.InlineWorker`), for virtual-time runs."""
        if self.config.enabled and self._fitter != "none":
            self._proc = self._jobs = self._results = worker

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker: ask politely, then terminate."""
        proc, self._proc = self._proc, None
        if proc is None or isinstance(proc, InlineWorker):
            return
        stop_child(proc, self._jobs, timeout_s)
        close_queues(self._jobs, self._results)
        logger.info("forecast worker stopped")

    def add_alert_hook(self, hook: AlertHook) -> None:
        """Call ``hook(alert)`` on every raised alert (root-cause capture, notifications)."""
        self._hooks.append(hook)

    def note_change(self, change: Change) -> None:
        """An applied knob change: a settle window opens on the series it moves (see settle.py)."""
        n = self._settle.open(change, {key: tr.detector for key, tr in self._tracks.items()})
        logger.debug("%s change of %s (gpu %s, job %s): %d series settle for %.0f s",
                     change.origin, change.knob, change.gpu, change.job, n, change.settle_s)

    # --- per tick ------------------------------------------------------------------------
    def observe(self, now: float, samples: list[Sample]) -> None:
        """Fold in one tick (``now`` in unix seconds); never waits on the worker."""
        if not self.config.enabled:
            return
        self._now = now
        if math.isnan(self._first_seen):
            self._first_seen = now
            self._next_fit = now + self.config.first_fit_s
        wanted = self._wanted
        mine = [s for s in samples if s[0] in wanted]
        for transition, hw in self._hw.observe(now, [s for s in mine if s[0] in HW_FAMILIES]):
            self._on_transition(transition, self._hw_alert(hw))
        refs = {(f, gpu_labels(lb)): v for f, lb, v in mine if f in self._refs} if self._refs else {}
        specs = self._specs
        for family, labels, value in mine:
            spec = specs.get(family)
            if spec is not None:
                self._observe_one(now, spec, (family, labels), value, refs)
        self._drain()
        if now >= self._next_sweep:
            self._sweep(now)
        if self._proc is not None and not self._in_flight and now >= self._next_fit:
            self._submit(now)

    def _observe_one(self, now: float, spec: SeriesSpec, key: SeriesKey, value: float, refs: dict) -> None:
        tr = self._tracks.get(key)
        if tr is None:
            rank = _is_rank(key[1])
            if not self._admit(now, rank):
                return
            tr = self._tracks[key] = self._new_track(spec)
            tr.rank = rank
            self._rank_tracks += rank
        tr.last_t = now
        phase = self._settle.step(key, now, value, tr.detector)
        level = self._level.step(key, now, value, phase)  # the throughput-level rule (level.py)
        if level:
            self._on_transition(*level)
        if phase == "settling":  # an intended change's transition: neither judged nor learned
            return
        if phase == "rebased":
            self._new_level(tr)
        fc = self._forecast_at(tr, now)
        j = tr.detector.update(now, value, fc)
        tr.score = j.score
        if j.transition:
            self._on_transition(j.transition, self._series_alert("anomaly", key, tr.detector.alert.since, j.score))
        self._band_step(tr, key, now, value, fc)
        if tr.eta is not None:
            ref = refs.get((spec.limit.reference, gpu_labels(key[1]))) if spec.limit else None
            t = tr.eta.update(now, value, ref)
            if t:
                alert = self._series_alert("degradation", key, tr.eta.since, j.score)
                self._on_transition(t, alert)
        self._downsample(tr, now, value)

    def _new_level(self, tr: _Track) -> None:
        """An intended change settled: trend, history and forecast start again at the new level."""
        if tr.eta is not None and tr.spec.limit is not None and not tr.eta.active:
            tr.eta = DegradationEta(tr.spec.limit, self.config.eta)
        tr.history.clear()  # the next fit sees the new level only, not the levels visited on the way
        tr.forecast = {}
        tr.bucket_start, tr.bucket_sum, tr.bucket_n = math.nan, 0.0, 0

    def _admit(self, now: float, rank: bool) -> bool:
        """Whether a new series may be tracked: bounded whatever peers report, ranks apart from GPUs and host."""
        cfg = self.config
        if len(self._tracks) < cfg.max_series and (not rank or self._rank_tracks < cfg.max_rank_series):
            return True
        self._untracked += 1
        if now - self._untracked_logged >= 60.0:
            self._untracked_logged = now
            logger.warning("tracking %d series (%d of trainer ranks), the most allowed (forecast.max_series, "
                           "forecast.max_rank_series): %d new ones not tracked so far",
                           len(self._tracks), self._rank_tracks, self._untracked)
        return False

    def _sweep(self, now: float) -> None:
        """Forget series gone quiet (a departed rank's soon, others after forget_after_s) so state stays bounded."""
        cfg = self.config
        self._next_sweep = now + min(60.0, cfg.rank_forget_after_s)
        stale = [k for k, tr in self._tracks.items()
                 if now - tr.last_t > (cfg.rank_forget_after_s if tr.rank else cfg.forget_after_s)]
        for key in stale:
            self._rank_tracks -= self._tracks.pop(key).rank
            self._settle.forget(key)
            self._level.forget(key)
        if stale:
            logger.info("forgot %d series gone quiet (ranks' after %.0f s, others' after %.0f s)",
                        len(stale), cfg.rank_forget_after_s, cfg.forget_after_s)

    @property
    def tracked(self) -> tuple[int, int]:
        """(series tracked, of them trainer ranks' series)."""
        return len(self._tracks), self._rank_tracks

    def _new_track(self, spec: SeriesSpec) -> _Track:
        det_cfg = self.config.detector
        if det_cfg.direction != spec.direction:
            from dataclasses import replace

            det_cfg = replace(det_cfg, direction=spec.direction)
        eta = DegradationEta(spec.limit, self.config.eta) if spec.limit else None
        return _Track(spec, OnlineDetector(det_cfg), eta, deque(maxlen=self.config.history_points))

    def _downsample(self, tr: _Track, now: float, value: float) -> None:
        step = self.config.downsample_s
        if math.isnan(tr.bucket_start):
            tr.bucket_start = now - now % step
        if now >= tr.bucket_start + step and tr.bucket_n:
            tr.history.append((tr.bucket_start + 0.5 * step, tr.bucket_sum / tr.bucket_n))
            tr.bucket_start = now - now % step
            tr.bucket_sum, tr.bucket_n = 0.0, 0
        if math.isfinite(value):
            tr.bucket_sum += value
            tr.bucket_n += 1

    def _forecast_at(self, tr: _Track, t: float) -> tuple[float, float] | None:
        return forecast_at(tr.forecast, t, self._z_iw, self.config.downsample_s)

    def _band_step(self, tr: _Track, key: SeriesKey, now: float, value: float, fc: tuple[float, float] | None) -> None:
        """The band rule: outside the forecast's 2-sigma band for ``band_samples`` samples alerts."""
        if tr.band is None:
            if fc is None or not self.config.band_samples or not tr.history \
                    or now - tr.history[0][0] < self.config.band_after_s:
                return  # no forecast yet, or one fitted to too short a history to know the series' cycle
            tr.band = BandRule(self.config.band_samples, tr.spec.direction)
        t = tr.band.step(now, value, fc)
        if t:
            self._on_transition(t, self._series_alert("forecast", key, tr.band.since, tr.score))

    def _take_forecast(self, tr: _Track, grid: dict[str, list[float]]) -> None:
        """A new forecast: the detector, the band rule and the degradation ETA use it from now on."""
        tr.forecast = grid
        if tr.eta is not None:
            tr.eta.set_forecast(grid, self._z_iw)

    # --- worker traffic ------------------------------------------------------------------
    def _submit(self, now: float) -> None:
        cfg = self.config
        series = {
            key: ([p[0] for p in tr.history], [p[1] for p in tr.history])
            for key, tr in self._tracks.items()
            if tr.spec.prophet and len(tr.history) >= cfg.min_history_points
        }
        # before any series has enough history, look again at the next downsampled point
        self._next_fit = now + (cfg.refit_period_s if series else cfg.downsample_s)
        if not series:
            return
        self._job_id += 1
        job = {
            "id": self._job_id, "fitter": self._fitter, "series": series, "step_s": cfg.downsample_s,
            "until": now + cfg.refit_period_s + max(cfg.horizons_s) + cfg.downsample_s,
            "interval_width": cfg.interval_width,
        }
        self._jobs.put_nowait(job)
        self._in_flight = True
        logger.debug("forecast job %d sent: %d series", self._job_id, len(series))

    def _drain(self) -> None:
        if self._results is None:
            return
        while True:
            try:
                msg = self._results.get_nowait()
            except queue.Empty:
                break
            except (OSError, EOFError, ValueError):
                break
            kind = msg[0]
            if kind == "forecast":
                tr = self._tracks.get(msg[1])
                if tr is not None:
                    self._take_forecast(tr, msg[2])
            elif kind == "error":
                logger.warning("forecast of %s failed: %s", msg[1][0], msg[2])
            elif kind == "done":
                self._in_flight = False
                self._fits += 1
                self._fit_seconds = msg[2]["fit_seconds"]
                logger.info(
                    "forecast refit %d: %d series in %.1f s CPU", msg[1], msg[2]["series"], msg[2]["fit_seconds"]
                )
        if self._in_flight and self._proc is not None and not self._proc.is_alive():
            logger.warning("forecast worker died (exit %s); restarting", self._proc.exitcode)
            self._proc = None
            self.start()

    @property
    def refit_in_flight(self) -> bool:
        """True while the worker holds a job."""
        return self._in_flight

    # --- alerts --------------------------------------------------------------------------
    def _series_alert(self, kind: str, key: SeriesKey, since: float, score: float) -> Alert:
        what = _WHAT[kind]
        return Alert(kind, key[0], key[1], since, score, f"{key[0]} on {describe_labels(key[1])} {what}")

    def _hw_alert(self, hw: HardwareAlert) -> Alert:
        return Alert(hw.kind, "", hw.labels, hw.since, 1.0, f"{hw.kind} on {describe_labels(hw.labels)}: {hw.message}")

    def _on_transition(self, transition: str, alert: Alert) -> None:
        if transition == "raised":
            self._raised[alert.kind] = self._raised.get(alert.kind, 0) + 1
            logger.warning("alert raised: %s: %s", alert.kind, alert.message)
            call_hooks(self._hooks, alert)
        else:
            logger.info("alert cleared: %s: %s", alert.kind, alert.message)

    def active_alerts(self) -> list[Alert]:
        """Alerts now active: hardware (thermal, ecc, xid), anomaly and degradation per series."""
        out = [self._hw_alert(a) for a in self._hw.alerts.values() if a.active] + self._level.alerts()
        for key, tr in self._tracks.items():
            if tr.detector.alert.active:
                out.append(self._series_alert("anomaly", key, tr.detector.alert.since, tr.score))
            if tr.eta is not None and tr.eta.active:
                out.append(self._series_alert("degradation", key, tr.eta.since, tr.score))
            if tr.band is not None and tr.band.active:
                out.append(self._series_alert("forecast", key, tr.band.since, tr.score))
        return out

    # --- exporter ------------------------------------------------------------------------
    def samples(self) -> list[Sample]:
        """Current forecast, anomaly, alert, ETA and worker samples for the exporter."""
        now = self._now
        out: list[Sample] = []
        for (family, labels), tr in self._tracks.items():
            sl: Labels = (("series", family), *labels)
            out.append((ANOMALY_SCORE, sl, tr.score))
            out.append((ALERT_ACTIVE, (("alert", "anomaly"), *sl), 1.0 if tr.detector.alert.active else 0.0))
            if tr.eta is not None:
                out.append((ETA, sl, float(tr.eta.eta_s)))
                out.append((ALERT_ACTIVE, (("alert", "degradation"), *sl), 1.0 if tr.eta.active else 0.0))
            if tr.band is not None:
                out.append((ALERT_ACTIVE, (("alert", "forecast"), *sl), 1.0 if tr.band.active else 0.0))
            if tr.forecast and math.isfinite(now):
                for h in self.config.horizons_s:
                    f = tr.forecast
                    i = bisect.bisect_left(f["t"], now + h)
                    if i < len(f["t"]):
                        for bound, name in (("yhat", "yhat"), ("lower", "lo"), ("upper", "hi")):
                            out.append((FORECAST_VALUE, (*sl, ("horizon", f"{h:g}"), ("bound", bound)), f[name][i]))
        for a in self._hw.alerts.values():
            out.append((ALERT_ACTIVE, (("alert", a.kind), ("series", ""), *a.labels), 1.0 if a.active else 0.0))
        out += self._level.samples()
        for kind in ("anomaly", "degradation", "forecast", LEVEL_KIND, "thermal", "ecc", "xid"):
            out.append((ALERTS_RAISED, (("alert", kind),), float(self._raised.get(kind, 0))))
        alive = self._proc is not None and self._proc.is_alive()
        out.append((WORKER_UP, (), 1.0 if alive else 0.0))
        out.append((FITS, (), float(self._fits)))
        out.append((FIT_SECONDS, (), self._fit_seconds))
        return out
