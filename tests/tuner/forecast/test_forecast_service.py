"""ForecastService: the worker never blocks observe(); alerts, hooks, samples and config."""

from __future__ import annotations

import math
import random
import time

import pytest

from gputuned.daemon.app.catalog import served_catalog
from gputuned.tuner.forecast.alerts import Alert
from gputuned.tuner.forecast.config import ForecastConfig
from gputuned.tuner.forecast.service import ForecastService

GPU = (("gpu", "0"), ("uuid", "GPU-0"), ("model", "Sim"), ("pci_bus_id", "0000:01:00.0"))
TEMP = "gputuned_gpu_temperature_celsius"
POWER = "gputuned_gpu_power_watts"


def small_config(**kw: object) -> ForecastConfig:
    base: dict = dict(downsample_s=1.0, history_s=600.0, min_history_points=20, first_fit_after_s=40.0,
                      refit_period_s=1e6, horizons_s=(5.0, 30.0))
    base.update(kw)
    return ForecastConfig(**base)


def test_prophet_worker_never_blocks_observe_and_serves_forecasts() -> None:
    svc = ForecastService(small_config())
    svc.start()
    rng = random.Random(0)
    worst = 0.0
    in_flight: list[float] = []
    try:
        t0 = 1.7e9
        i = 0
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            samples = [(TEMP, GPU, 60.0 + rng.gauss(0, 0.5)), (POWER, GPU, 300.0 + rng.gauss(0, 3))]
            began = time.perf_counter()
            svc.observe(t0 + i, samples)
            took = time.perf_counter() - began
            if svc.refit_in_flight:
                in_flight.append(took)
                worst = max(worst, took)
            i += 1
            if i > 41:
                assert svc.refit_in_flight or svc.samples()
                time.sleep(0.01)
                if any(s[0] == "gputuned_forecast_value" for s in svc.samples()):
                    break
        values = [s for s in svc.samples() if s[0] == "gputuned_forecast_value"]
    finally:
        svc.close()
    # the worker imports prophet and fits for seconds: an observe that waited for it would
    # take that long; the bound leaves room for a loaded CI machine's scheduling hiccups
    assert in_flight, "no observe ran while a refit was in flight"
    assert worst < 0.5, f"observe took {worst * 1e3:.1f} ms while the worker fitted"
    assert sorted(in_flight)[len(in_flight) // 2] < 0.005
    assert values, "no forecast arrived within 60 s"
    temp = {dict(lb)["bound"]: v for _, lb, v in values if dict(lb)["series"] == TEMP and dict(lb)["horizon"] == "5"}
    assert temp["lower"] < temp["yhat"] < temp["upper"] and 55.0 < temp["yhat"] < 65.0


def test_step_raises_one_anomaly_alert_calls_hooks_and_shows_in_samples() -> None:
    svc = ForecastService(small_config())  # not started: online detection needs no worker
    seen: list[Alert] = []
    svc.add_alert_hook(seen.append)
    svc.add_alert_hook(lambda a: 1 / 0)  # a broken hook must not stop the others
    rng = random.Random(1)
    for i in range(1100):
        svc.observe(1000.0 + i, [(POWER, GPU, 300.0 + rng.gauss(0, 2) - (40.0 if i >= 1000 else 0.0))])
    assert [a.kind for a in seen] == ["anomaly"] and seen[0].series == POWER
    assert 1000.0 + 1000 <= seen[0].since <= 1000.0 + 1005
    assert svc.active_alerts()[0].kind == "anomaly"
    by = {(s[0], dict(s[1]).get("alert")): s[2] for s in svc.samples()}
    assert by[("gputuned_alert_active", "anomaly")] == 1.0
    for i in range(1100, 2000):  # the new level becomes normal: the alert clears, no second one
        svc.observe(1000.0 + i, [(POWER, GPU, 260.0 + rng.gauss(0, 2))])
    assert svc.active_alerts() == [] and len(seen) == 1
    by = {(s[0], dict(s[1]).get("alert")): s[2] for s in svc.samples()}
    assert by[("gputuned_alert_active", "anomaly")] == 0.0
    assert by[("gputuned_alerts_raised_total", "anomaly")] == 1.0
    assert by[("gputuned_forecast_worker_up", None)] == 0.0
    assert all(s[0] in served_catalog() for s in svc.samples())


def test_hardware_alerts_raise_and_clear() -> None:
    svc = ForecastService(small_config(hardware_hold_s=100.0, thermal_clear_s=10.0))
    thermal = "gputuned_gpu_clock_event_active"
    xid = "gputuned_gpu_xid_events_total"

    def tick(t: float, hot: bool, xids: float) -> None:
        svc.observe(t, [
            (thermal, (*GPU, ("reason", "sw_thermal_slowdown")), 1.0 if hot else 0.0),
            (thermal, (*GPU, ("reason", "sw_power_cap")), 1.0),
            (xid, (*GPU, ("xid", "79")), xids),
        ])

    tick(0, False, 0)
    assert svc.active_alerts() == []
    tick(1, True, 0)
    tick(2, True, 1)
    assert sorted(a.kind for a in svc.active_alerts()) == ["thermal", "xid"]
    for t in range(3, 20):
        tick(t, False, 1)
    assert [a.kind for a in svc.active_alerts()] == ["xid"]
    tick(200, False, 1)
    assert svc.active_alerts() == []


def test_memory_eta_served_in_seconds() -> None:
    svc = ForecastService(small_config())
    for i in range(3000):
        svc.observe(float(i), [
            ("gputuned_gpu_memory_used_bytes", GPU, 2e9 + 1e6 * i),
            ("gputuned_gpu_memory_total_bytes", GPU, 8e9),
        ])
    eta = [s[2] for s in svc.samples() if s[0] == "gputuned_degradation_eta_seconds"]
    # 0.98 * 8 GB - (2 GB + 3 GB) at 1 MB/s
    assert len(eta) == 1 and math.isclose(eta[0], 2840.0, rel_tol=0.05)


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"refit_every": 5}, "unknown key 'refit_every'"),
        ({"detector": {"tau": 3}}, "forecast.detector: unknown key 'tau'"),
        ({"downsample_s": -1}, "downsample_s must be positive"),
        ({"series": [{"family": "x", "direction": "sideways"}]}, "series[0].direction"),
        ({"detect_in_child": "maybe"}, "forecast.detect_in_child: expected bool, got 'maybe'"),
        ({"ecc_burst_window_s": "60"}, "forecast.ecc_burst_window_s: expected float, got '60'"),
        ({"worker_nice": 1.5}, "forecast.worker_nice: expected int, got 1.5"),
        ({"detector": {"warmup": True}}, "forecast.detector.warmup: expected int, got True"),
    ],
)
def test_config_errors_name_the_key(table: dict, needle: str) -> None:
    with pytest.raises(ValueError) as e:
        ForecastConfig.from_mapping(table)
    assert needle in str(e.value)


def test_config_from_mapping_builds_nested_parts() -> None:
    cfg = ForecastConfig.from_mapping({
        "refit_period_s": 1800, "horizons_s": [60, 600], "detector": {"z_half": 6.0},
        "series": [{"family": TEMP, "direction": "up", "limit": {"direction": "up", "kind": "absolute", "value": 83}}],
    })
    assert cfg.horizons_s == (60.0, 600.0) and cfg.detector.z_half == 6.0
    assert cfg.series[0].limit is not None and cfg.series[0].limit.value == 83.0


def test_series_silent_for_long_are_forgotten() -> None:
    svc = ForecastService(small_config(forget_after_s=100.0))
    rank1 = (("job", "a"), ("rank", "1"))
    for i in range(50):
        svc.observe(float(i), [(POWER, GPU, 300.0), ("gputuned_trainer_samples_per_second", rank1, 10.0)])
    for i in range(50, 300):
        svc.observe(float(i), [(POWER, GPU, 300.0)])
    series = {dict(s[1])["series"] for s in svc.samples() if s[0] == "gputuned_anomaly_score"}
    assert series == {POWER}


def test_the_series_tracked_are_bounded_whatever_peers_report(caplog: pytest.LogCaptureFixture) -> None:
    svc = ForecastService(small_config(max_series=20))
    for i in range(30):  # a rank flood: 300 new trainer series over 30 ticks
        ranks = [(("job", f"flood-{i}"), ("rank", str(r))) for r in range(10)]
        svc.observe(float(i), [("gputuned_trainer_samples_per_second", lab, 10.0) for lab in ranks])
    tracked = {s[1] for s in svc.samples() if s[0] == "gputuned_anomaly_score"}
    assert len(tracked) == 20
    assert len([r for r in caplog.records if "forecast.max_series" in r.getMessage()]) == 1  # once a minute


def test_corrected_ecc_storm_raises_ecc_but_a_trickle_does_not() -> None:
    svc = ForecastService(small_config(hardware_hold_s=100.0))
    ecc = "gputuned_gpu_ecc_errors_total"

    def tick(t: float, corrected: float) -> None:
        svc.observe(t, [(ecc, (*GPU, ("type", "corrected")), corrected), (ecc, (*GPU, ("type", "uncorrected")), 0.0)])

    for t in range(0, 3600, 5):  # one corrected error a minute: normal wear, no alert
        tick(t, t // 60)
    assert svc.active_alerts() == []
    base = 3600 // 60
    for k, t in enumerate(range(3600, 3660, 5)):  # then 2 per second
        tick(t, base + 10 * k)
    alerts = svc.active_alerts()
    assert [a.kind for a in alerts] == ["ecc"] and "corrected ECC errors" in alerts[0].message
    assert alerts[0].message.startswith("ecc on gpu ") and "{" not in alerts[0].message  # read as a person would
    assert alerts[0].since <= 3610
