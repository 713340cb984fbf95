"""The seasonal likelihood beside the detector's baseline: wrong for the time, quiet on noise."""

from __future__ import annotations

import math
import random

import pytest

from gputuned.tuner.forecast.detector import DetectorConfig, OnlineDetector
from gputuned.tuner.forecast.likelihood import DAY_S, WEEK_S, SeasonalLikelihood

STEP_S = 300.0  # 5-minute samples, 288 a day
PER_DAY = int(DAY_S / STEP_S)


def raises(values: list[float], **cfg: object) -> list[int]:
    """Rows where the detector's alert rises, samples every STEP_S from t=0."""
    det = OnlineDetector(DetectorConfig(**cfg))  # type: ignore[arg-type]
    out, before = [], False
    for i, v in enumerate(values):
        alert = det.update(STEP_S * i, v).alert
        if alert and not before:
            out.append(i)
        before = alert
    return out


def daily(days: int, seed: int, sigma: float = 2.0) -> list[float]:
    """A daily swing of +-20 around 40 (lowest at midnight), with noise."""
    rng = random.Random(seed)
    return [40.0 - 20.0 * math.cos(2 * math.pi * i / PER_DAY) + rng.gauss(0.0, sigma) for i in range(days * PER_DAY)]


@pytest.mark.parametrize("seed", range(3))
def test_a_missing_daily_peak_is_caught_by_the_season_and_missed_by_the_baseline(seed: int) -> None:
    x = daily(14, seed)
    day = 10
    for i in range(day * PER_DAY, (day + 1) * PER_DAY):
        x[i] = 20.0 + random.Random(i).gauss(0.0, 2.0)  # the night's level all day: seen every night
    window = range(day * PER_DAY, (day + 1) * PER_DAY)
    assert not [i for i in raises(x, seasons=()) if i in window]
    caught = [i for i in raises(x) if i in window]
    assert caught and caught[0] <= day * PER_DAY + 12 * 12  # by noon, the missing peak's time


@pytest.mark.parametrize("seed", range(3))
def test_the_seasons_add_no_alert_to_a_repeating_noisy_cycle(seed: int) -> None:
    x = daily(28, seed)
    assert raises(x) == raises(x, seasons=())


@pytest.mark.parametrize("seed", range(3))
def test_stationary_noise_stays_quiet_over_weeks(seed: int) -> None:
    rng = random.Random(seed)
    assert raises([100.0 + rng.gauss(0.0, 1.0) for _ in range(42 * PER_DAY)]) == []


def test_a_slot_scores_only_after_its_earlier_visits() -> None:
    season = SeasonalLikelihood(DAY_S, 24, 3)
    rng = random.Random(1)
    x = [100.0 + rng.gauss(0.0, 1.0) if i < 5 * PER_DAY else 104.0 for i in range(5 * PER_DAY + 12)]
    scores = [season.update(STEP_S * i, v, 100.0, 1.0, STEP_S) for i, v in enumerate(x)]
    assert max(scores[: 4 * PER_DAY]) == 0.0  # three visits of each slot, then one period of scoring
    assert scores[-1] > 0.5 and all(0.0 <= s <= 1.0 for s in scores)
    assert not math.isnan(sum(season.usual))


def test_a_weekday_that_looks_like_a_sunday_is_caught_by_the_weekly_stage() -> None:
    rng = random.Random(7)
    # days 0-4 of each week swing up to 60 in the daytime, days 5-6 stay at the night's 20
    x = [20.0 + (20.0 if (i // PER_DAY) % 7 < 5 else 0.0) * (1.0 - math.cos(2 * math.pi * i / PER_DAY))
         + rng.gauss(0.0, 1.0) for i in range(42 * PER_DAY)]
    day = 37  # the third day of the sixth week
    for i in range(day * PER_DAY, (day + 1) * PER_DAY):
        x[i] = x[i - 4 * PER_DAY]  # the last weekend's day, value for value
    window = range(day * PER_DAY, (day + 1) * PER_DAY)
    assert not [i for i in raises(x, seasons=()) if i in window]
    assert [i for i in raises(x, seasons=((WEEK_S, 168, 2),)) if i in window]
