"""Properties of the online detector, its alert hysteresis and the degradation ETA."""

from __future__ import annotations

import math
import random

import pytest

from gputuned.tuner.forecast.alerts import AlertState
from gputuned.tuner.forecast.detector import DetectorConfig, OnlineDetector, score_of
from gputuned.tuner.forecast.eta import DegradationEta, EtaConfig, Limit


def run(times: list[float], values: list[float], **cfg: object) -> tuple[list[float], list[bool], int]:
    det = OnlineDetector(DetectorConfig(**cfg))  # type: ignore[arg-type]
    scores, alerts = [], []
    for t, v in zip(times, values, strict=True):
        j = det.update(t, v)
        scores.append(j.score)
        alerts.append(j.alert)
    return scores, alerts, det.alert.raised_count


def noise(n: int, seed: int, sigma: float = 1.0, level: float = 100.0) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, sigma) for _ in range(n)]


@pytest.mark.parametrize("seed", range(3))
def test_step_change_raises_exactly_one_alert_near_the_step(seed: int) -> None:
    x = noise(3000, seed)
    x = [v + (8.0 if i >= 1500 else 0.0) for i, v in enumerate(x)]
    _, alerts, raised = run([float(i) for i in range(3000)], x)
    assert raised == 1
    first = alerts.index(True)
    assert 1500 <= first <= 1505


def test_constant_series_never_alerts_and_scores_zero() -> None:
    scores, alerts, raised = run([float(i) for i in range(2000)], [42.0] * 2000)
    assert raised == 0 and not any(alerts) and max(scores) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_noise_with_irregular_sampling_and_gaps_stays_quiet(seed: int) -> None:
    rng = random.Random(seed)
    t, times = 0.0, []
    for i in range(5000):
        t += rng.lognormvariate(0.0, 0.5) * 10.0 + (3600.0 if i in (1000, 3000) else 0.0)
        times.append(t)
    _, _, raised = run(times, noise(5000, seed + 10))
    assert raised == 0


def test_alert_clears_with_hysteresis_after_a_transient() -> None:
    x = noise(2000, 5)
    for i in range(1000, 1040):
        x[i] += 10.0
    scores, alerts, raised = run([float(i) for i in range(2000)], x, clear_after=30)
    assert raised == 1
    assert alerts[1039] and not alerts[1999]
    cleared_at = next(i for i in range(1040, 2000) if not alerts[i])
    # held for clear_after quiet samples after the deviation ended, not dropped at once
    assert cleared_at >= 1040 + 30 - 1


def test_alert_state_holds_between_thresholds() -> None:
    a = AlertState(raise_at=0.5, raise_now=0.9, confirm=2, clear_at=0.2, clear_after=3)
    assert a.step(0, 0.6) is None and a.step(1, 0.6) == "raised"
    for t in range(2, 10):  # between clear_at and raise_at: hold
        assert a.step(t, 0.3) is None and a.active
    assert [a.step(t, 0.1) for t in range(10, 13)] == [None, None, "cleared"]
    assert a.step(13, 0.95) == "raised"  # an unmistakable spike needs no confirmation


@pytest.mark.parametrize("cut", [200, 777, 1499, 1500, 1503])
def test_streaming_score_of_a_row_does_not_depend_on_later_rows(cut: int) -> None:
    x = noise(1600, 9)
    x = [v + (6.0 if i >= 1500 else 0.0) for i, v in enumerate(x)]
    times = [float(i) for i in range(1600)]
    full_s, full_a, _ = run(times, x)
    part_s, part_a, _ = run(times[:cut], x[:cut])
    assert full_s[:cut] == part_s and full_a[:cut] == part_a


def test_scores_stay_within_unit_interval_on_wild_input() -> None:
    rng = random.Random(3)
    x = [rng.choice([0.0, 1e9, -1e9, rng.gauss(0, 1)]) for _ in range(2000)]
    scores, _, _ = run([float(i) for i in range(2000)], x)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert score_of(1.0, 2.0, 5.0) == 0.0 and math.isclose(score_of(5.0, 2.0, 5.0), 0.5)


def test_direction_down_ignores_a_rise() -> None:
    x = noise(2000, 4)
    x = [v + (10.0 if i >= 1000 else 0.0) for i, v in enumerate(x)]
    _, _, raised = run([float(i) for i in range(2000)], x, direction="down")
    assert raised == 0


def test_eta_predicts_memory_reaching_capacity_and_alerts_under_horizon() -> None:
    eta = DegradationEta(Limit("up", "reference", 1.0, "total"), EtaConfig(bucket_s=60, horizon_s=1800))
    rng = random.Random(1)
    raised_at = None
    for i in range(0, 4000):  # 1 MB/s towards 8 GB from 4 GB: the limit is 4000 s away at t=0
        if eta.update(float(i), 4e9 + 1e6 * i + rng.gauss(0, 1e6), 8e9) == "raised":
            raised_at = i
    assert raised_at is not None and 2100 <= raised_at <= 2500
    assert eta.eta_s == pytest.approx(8e9 - 4e9 - 1e6 * 3970, rel=0.5, abs=120) or eta.eta_s < 120


def test_eta_is_infinite_without_a_trend() -> None:
    eta = DegradationEta(Limit("down", "baseline", 0.9), EtaConfig(bucket_s=10))
    rng = random.Random(2)
    for i in range(3000):
        eta.update(float(i), 1000.0 + rng.gauss(0, 5))
    assert math.isinf(eta.eta_s) and not eta.active


def test_eta_ignores_a_temperature_settling_below_its_limit() -> None:
    # after a load change the temperature climbs exponentially towards 75 C; a straight line
    # through the climb would cross the 85 C limit, the plateau does not
    eta = DegradationEta(Limit("up", "absolute", 85.0), EtaConfig(bucket_s=60, horizon_s=1800))
    rng = random.Random(4)
    transitions = []
    for i in range(0, 3600, 5):
        x = 75.0 - 30.0 * math.exp(-i / 900.0) + rng.gauss(0, 0.2)
        transitions.append(eta.update(float(i), x))
    assert "raised" not in transitions and math.isinf(eta.eta_s)


def test_a_repeating_daily_pattern_alarms_at_most_while_first_learned() -> None:
    # a noiseless square-ish daily cycle at 5 min (288 samples a day), 12 days
    day = [20.0] * 110 + [20.0 + 60.0 * (1 - 0.2 ** k) for k in range(1, 90)] + [32.0 - 12.0 * (1 - 0.2 ** k) for k in range(88)]
    x = (day * 12)[: 12 * 288]
    times = [300.0 * i for i in range(len(x))]
    _, alerts, _ = run(times, x)
    raises = [i for i in range(1, len(x)) if alerts[i] and not alerts[i - 1]]
    assert all(i < 2 * 288 for i in raises), f"alerts on days {sorted({i // 288 for i in raises})}"


def test_a_level_never_seen_still_alerts_after_a_daily_cycle_was_learned() -> None:
    x = [50.0 + 10.0 * math.sin(2 * math.pi * i / 288) + 0.3 * random.Random(i).gauss(0, 1) for i in range(6 * 288)]
    x += [75.0 + 0.3 * random.Random(i).gauss(0, 1) for i in range(100)]  # above every value seen
    _, alerts, raised = run([300.0 * i for i in range(len(x))], x)
    assert raised == 1 and alerts.index(True) >= 6 * 288


def test_a_value_within_the_recent_range_is_not_a_spike_but_one_beyond_it_is() -> None:
    rng = random.Random(3)
    base = [100.0 + (30.0 if (i // 50) % 2 else 0.0) + rng.gauss(0, 1) for i in range(2000)]  # two regimes
    _, quiet, _ = run([float(i) for i in range(2000)], base)
    spiked = base[:1990] + [200.0] + base[1991:]
    _, alerts, _ = run([float(i) for i in range(2000)], spiked)
    assert not any(quiet[300:])  # once both regimes are in the window (lagged 128 samples)
    assert alerts[1990] and alerts[300:1990] == quiet[300:1990]


def test_constant_series_with_a_step_alerts_once() -> None:
    x = [42.0] * 1000 + [43.0] * 1000
    _, alerts, raised = run([float(i) for i in range(2000)], x)
    assert raised == 1 and 1000 <= alerts.index(True) <= 1002


def test_detectors_share_one_bounded_cache_of_smoothing_factors_whatever_their_sampling_jitter() -> None:
    rng = random.Random(7)
    detectors = [OnlineDetector(DetectorConfig(direction=d)) for d in ("up", "down", "both") for _ in range(100)]
    for i in range(200):
        for det in detectors:
            det.update(i + rng.uniform(-0.3, 0.3), rng.gauss(10.0, 1.0))  # a loaded host's tick jitter
    caches = {id(det._cache) for det in detectors}
    assert len(caches) == 1  # the direction does not change the time constants
    assert len(detectors[0]._cache) <= 4097
    other = OnlineDetector(DetectorConfig(tau_long=DetectorConfig().tau_long * 2))
    assert other._cache is not detectors[0]._cache  # other time constants, other factors
