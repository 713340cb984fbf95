"""What a forecast changes: the band rule, the ETA on the forecast's path, the first fit, fitter none, fit CPU."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from gputuned.tuner.forecast import worker
from gputuned.tuner.forecast.band import BandRule, crossing_eta, forecast_at, z_of
from gputuned.tuner.forecast.config import ForecastConfig, SeriesSpec
from gputuned.tuner.forecast.eta import DegradationEta, EtaConfig, Limit
from gputuned.tuner.forecast.service import ForecastService
from gputuned.tuner.forecast.worker import InlineWorker, run_job

GPU = (("gpu", "0"), ("uuid", "GPU-0"), ("model", "Sim"), ("pci_bus_id", "0000:01:00.0"))
POWER = "gputuned_gpu_power_watts"


def inline_service(**kw: object) -> ForecastService:
    base: dict = dict(downsample_s=1.0, history_s=600.0, min_history_points=20, first_fit_after_s=5.0,
                      refit_period_s=1e6, horizons_s=(5.0, 30.0), fitter="linear",
                      series=(SeriesSpec(POWER, "both"),))
    base.update(kw)
    svc = ForecastService(ForecastConfig(**base))
    svc.start_inline(InlineWorker())
    return svc


def wobble(i: int) -> float:
    return 300.0 + (1.0 if i % 2 else -1.0) * (1 + i % 3)


def test_band_rule_raises_after_n_outside_in_a_row_and_clears_after_2n_inside() -> None:
    rule = BandRule(3, "both")
    fc = (100.0, 1.0)
    assert [rule.step(t, 103.0, fc) for t in range(2)] == [None, None]
    assert rule.step(2, 100.0, fc) is None  # one sample inside starts the count again
    assert [rule.step(t, 97.0, fc) for t in range(3, 6)] == [None, None, "raised"] and rule.since == 5
    assert [rule.step(t, 100.0, fc) for t in range(6, 11)] == [None] * 5
    assert rule.step(11, 100.0, None) == "cleared"  # no forecast counts as inside
    up = BandRule(1, "up")
    assert up.step(0, 90.0, fc) is None and up.step(1, 103.0, fc) == "raised"


def test_crossing_eta_reads_the_forecast_path() -> None:
    grid = {"t": [0.0, 60.0, 120.0, 180.0], "yhat": [80.0, 83.0, 86.0, 84.0], "lo": [0.0] * 4, "hi": [1.0] * 4}
    assert crossing_eta(grid, 0.0, 85.0, up=True) == 120.0
    assert crossing_eta(grid, 0.0, 90.0, up=True) == math.inf
    assert crossing_eta(grid, 30.0, 80.0, up=False) == math.inf
    yhat, sigma = forecast_at(grid, 30.0, z_of(0.8), 60.0) or (0.0, 0.0)
    assert yhat == pytest.approx(81.5) and sigma == pytest.approx(1.0 / (2 * z_of(0.8)))


def _rising(eta: DegradationEta, minutes: int) -> float:
    """A temperature rising 0.5 C a minute from 70 C (a morning warm-up), one sample a second."""
    for s in range(minutes * 60):
        eta.update(float(s), 70.0 + 0.5 * s / 60.0)
    return eta.eta_s


def test_eta_follows_the_forecast_where_the_series_keeps_to_its_band() -> None:
    cfg = EtaConfig(window=10, min_buckets=5)
    alone = DegradationEta(Limit("up", "absolute", 85.0), cfg)
    assert _rising(alone, 20) < 1800.0  # the local trend alone heads for 85 C
    # the forecast knows the rise levels off at 81 C: no crossing
    t = [float(m * 60) for m in range(200)]
    yhat = [min(70.0 + 0.5 * m, 81.0) for m in range(200)]
    grid = {"t": t, "yhat": yhat, "lo": [y - 1.0 for y in yhat], "hi": [y + 1.0 for y in yhat]}
    told = DegradationEta(Limit("up", "absolute", 85.0), cfg)
    told.set_forecast(grid, z_of(0.8))
    assert _rising(told, 20) == math.inf and told.from_forecast
    # a series that leaves the band (a fault the forecast does not know) is judged by its local trend
    away = DegradationEta(Limit("up", "absolute", 85.0), cfg)
    away.set_forecast({**grid, "yhat": [60.0] * 200, "lo": [59.0] * 200, "hi": [61.0] * 200}, z_of(0.8))
    assert _rising(away, 20) < 1800.0 and not away.from_forecast


def test_first_fit_comes_once_enough_history_is_held_not_a_refit_period_later() -> None:
    svc = inline_service()
    assert svc.config.first_fit_s == 20.0  # 20 points of 1 s: later than first_fit_after_s = 5
    fitted_at = None
    for i in range(60):
        svc.observe(1.7e9 + i, [(POWER, GPU, wobble(i))])
        if fitted_at is None and any(s[0] == "gputuned_forecast_value" for s in svc.samples()):
            fitted_at = i
    assert fitted_at is not None and fitted_at <= 25


def test_band_rule_alerts_in_the_service_only_when_configured() -> None:
    kinds: dict[tuple[int, float], list[str]] = {}
    for n, after in ((0, 50.0), (5, 50.0), (5, 1000.0)):
        svc = inline_service(band_samples=n, band_after_s=after)
        raised: list[str] = []
        svc.add_alert_hook(lambda a, raised=raised: raised.append(a.kind))
        for i in range(200):
            svc.observe(1.7e9 + i, [(POWER, GPU, wobble(i) + (40.0 if 100 <= i < 130 else 0.0))])
        kinds[n, after] = raised
    assert "forecast" not in kinds[0, 50.0]
    assert kinds[5, 50.0].count("forecast") == 1
    assert [k for k in kinds[5, 50.0] if k != "forecast"] == kinds[0, 50.0]  # the detector's own alerts unchanged
    assert "forecast" not in kinds[5, 1000.0]  # history shorter than band_after_s: no band rule yet


def test_fitter_none_is_the_detector_alone() -> None:
    cfg = ForecastConfig(fitter="none", series=(SeriesSpec(POWER, "both"),))
    assert ForecastConfig(prophet=False).fitter_name == "linear" and ForecastConfig().fitter_name == "prophet"
    assert ForecastConfig.from_mapping({"fitter": "none"}).fitter_name == "none"
    svc = ForecastService(cfg)
    svc.start()
    assert svc._proc is None  # no worker process
    raised: list[str] = []
    svc.add_alert_hook(lambda a: raised.append(a.kind))
    for i in range(400):
        svc.observe(1.7e9 + i, [(POWER, GPU, wobble(i) + (60.0 if i >= 300 else 0.0))])
    assert raised == ["anomaly"]
    svc.close()


def test_experiment_forecast_none_keeps_detection_on(tmp_path: Path) -> None:
    from gputuned.daemon.record.experiment import ExperimentSpec, daemon_config

    none = daemon_config(ExperimentSpec(forecast="none"), False, tmp_path, tmp_path)
    assert none.forecast.enabled and none.forecast.fitter_name == "none"
    off = daemon_config(ExperimentSpec(forecast=None), False, tmp_path, tmp_path)
    assert not off.forecast.enabled


def _busy_child_fit(t: list[float], y: list[float], grid: list[float], interval_width: float) -> dict:
    """A fitter whose work is done by a child process, as Prophet's is by CmdStan."""
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"],
                   check=True)
    return {"t": grid, "yhat": [0.0] * len(grid), "lo": [0.0] * len(grid), "hi": [0.0] * len(grid)}


def test_fit_cpu_counts_the_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(worker.FITTERS, "busy", _busy_child_fit)
    job = {"fitter": "busy", "series": {("a", ()): ([0.0, 1.0], [1.0, 2.0])}, "step_s": 1.0, "until": 5.0,
           "interval_width": 0.8}
    got: list = []
    stats = run_job(job, got.append)
    assert stats["child_seconds"] >= 0.25
    assert stats["fit_seconds"] >= stats["child_seconds"] and got[0][2]["fit_s"][0] == stats["fit_seconds"]
