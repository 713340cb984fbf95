"""The throughput-level rule: a halving under +-40 % report noise alerts fast, noise and intended changes do not."""

from __future__ import annotations

import random

import pytest

from gputuned.intent import Change
from gputuned.tuner.forecast.config import ForecastConfig
from gputuned.tuner.forecast.level import KIND, LevelRule
from gputuned.tuner.forecast.service import ForecastService

T0 = 1.7e9
TPUT = "gputuned_trainer_samples_per_second"
JOB = (("job", "j"), ("rank", "0"))


def noisy(rng: random.Random, level: float) -> float:
    """A report of the trainer's samples/s: the level swung by up to +-40 %."""
    return level * rng.uniform(0.6, 1.4)


def drops(levels: list[tuple[int, float]], seed: int, n: int = 600,
          changes: dict[int, Change] | None = None) -> list[tuple[float, str]]:
    """Feed ``n`` 1 s reports at the level in force to a service; the level-rule transitions as (t - T0, what)."""
    s = ForecastService(ForecastConfig(prophet=False))
    raised: list[tuple[float, str]] = []
    s.add_alert_hook(lambda a: raised.append((a.since - T0, a.kind)) if a.kind == KIND else None)
    rng = random.Random(seed)
    for k in range(n):
        if changes and k in changes:
            s.note_change(changes[k])
        level = next(lv for start, lv in reversed(levels) if k >= start)
        s.observe(T0 + k, [(TPUT, JOB, noisy(rng, level))])
    return raised


@pytest.mark.parametrize("seed", range(5))
def test_a_halving_under_report_noise_alerts_within_30_s(seed):
    raised = drops([(0, 100.0), (300, 50.0)], seed)
    assert len(raised) == 1, raised
    assert 300 < raised[0][0] <= 330, raised


@pytest.mark.parametrize("seed", range(5))
def test_noise_alone_never_alerts(seed):
    assert drops([(0, 100.0)], seed, n=3600) == []


def test_a_level_an_operator_chose_is_the_new_reference():
    """A power limit set at 300 s halves throughput on purpose: once it settled, no alert."""
    change = Change(t=T0 + 300, origin="operator", knob="power_limit", gpu=0, job=None,
                    previous=400.0, new=200.0, settle_s=30.0)
    assert drops([(0, 100.0), (300, 50.0)], 1, changes={300: change}) == []


def test_a_fault_after_an_intended_change_is_still_caught():
    change = Change(t=T0 + 200, origin="tuner", knob="batch_size", gpu=None, job="j",
                    previous=64, new=128, settle_s=30.0)
    raised = drops([(0, 100.0), (200, 120.0), (400, 60.0)], 2, changes={200: change})
    assert [w for _, w in raised] == [KIND] and 400 < raised[0][0] <= 430, raised


def test_the_alert_is_served_and_clears_when_throughput_recovers():
    rule = LevelRule(ForecastConfig(level_window_s=10.0, level_reference_s=60.0, level_min_reference_s=30.0, level_drop=0.3))
    seen = [rule.step(float(t), 100.0 if t < 100 or t >= 150 else 40.0) for t in range(200)]
    assert seen.index("raised") in range(100, 110)
    assert seen.index("cleared") in range(150, 160)
    assert rule.reference == 100.0  # frozen at the level before the drop while active


def test_the_service_serves_the_alert_in_the_alerts_family():
    s = ForecastService(ForecastConfig(prophet=False))
    for k in range(200):
        s.observe(T0 + k, [(TPUT, JOB, 100.0 if k < 150 else 30.0)])
    assert KIND in [a.kind for a in s.active_alerts()]
    served = {lb: v for f, lb, v in s.samples() if f == "gputuned_alert_active"}
    assert served[(("alert", KIND), ("series", TPUT), *JOB)] == 1.0
    raised = {dict(lb)["alert"]: v for f, lb, v in s.samples() if f == "gputuned_alerts_raised_total"}
    assert raised[KIND] == 1.0


def test_level_drop_is_checked():
    with pytest.raises(ValueError, match="level_drop"):
        ForecastConfig.from_mapping({"level_drop": 1.5})
