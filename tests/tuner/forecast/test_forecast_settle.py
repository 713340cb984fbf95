"""Intended changes in the forecaster: settle windows, the new level as baseline, faults still caught."""

from __future__ import annotations

import random

from gputuned.intent import Change
from gputuned.tuner.forecast.config import ForecastConfig
from gputuned.tuner.forecast.offload import OffloadedForecastService
from gputuned.tuner.forecast.service import ForecastService
from gputuned.tuner.forecast.settle import affects

T0 = 1.7e9
TPUT = "gputuned_trainer_samples_per_second"
POWER = "gputuned_gpu_power_watts"
CLOCK = "gputuned_gpu_sm_clock_hertz"
MEM = "gputuned_gpu_memory_used_bytes"
JOB = (("job", "j"), ("rank", "0"))


def gpu(i: int) -> tuple[tuple[str, str], ...]:
    return (("gpu", str(i)), ("uuid", f"GPU-{i}"))


def svc() -> ForecastService:
    return ForecastService(ForecastConfig(prophet=False))


def run(s: ForecastService, levels: list[tuple[float, float]], changes: dict[int, Change], seed: int = 0,
        n: int = 1500) -> list[tuple[float, str]]:
    """Tick ``n`` times at 2 s: throughput and GPU 0 power at the level in force; alerts raised."""
    rng = random.Random(seed)
    raised: list[tuple[float, str]] = []
    s.add_alert_hook(lambda a: raised.append((a.since - T0, a.series)))
    for k in range(n):
        now = T0 + 2.0 * k
        if k in changes:
            s.note_change(changes[k])
        tput, power = next(lv for start, lv in reversed(levels) if k >= start), 300.0
        if k >= 600 and changes:
            power = 200.0  # the tuner's lower limit, once applied
        s.observe(now, [(TPUT, JOB, tput * (1 + rng.gauss(0, 0.003))), (POWER, gpu(0), power + rng.gauss(0, 1.5))])
    return raised


def change(k: int, knob: str = "power_limit", g: int | None = 0, job: str | None = None) -> Change:
    return Change(T0 + 2.0 * k - 2.0, "tuner", knob, g, job, 300_000, 200_000)


def test_affected_series_by_knob() -> None:
    pl = change(1)
    assert affects(pl, (POWER, gpu(0))) and affects(pl, (CLOCK, gpu(0))) and affects(pl, (TPUT, JOB))
    assert not affects(pl, (POWER, gpu(1))) and not affects(pl, (MEM, gpu(0)))
    for knob in ("locked_sm_clocks", "locked_memory_clocks", "applications_clocks"):  # every GPU knob alike
        other = change(1, knob)
        assert all(affects(other, key) == affects(pl, key) for key in
                   ((POWER, gpu(0)), (CLOCK, gpu(0)), (TPUT, JOB), (MEM, gpu(0)), (POWER, gpu(1))))
    bs = change(1, "batch_size", None, "j")
    assert affects(bs, (MEM, gpu(3))) and affects(bs, (TPUT, JOB))
    assert not affects(bs, (TPUT, (("job", "other"), ("rank", "0")))) and not affects(bs, ("gputuned_peer_rtt_seconds", ()))


def test_an_intended_change_raises_nothing_and_its_level_becomes_the_baseline() -> None:
    # the tuner lowers the power limit: power -33 %, throughput -3 % (within its bound)
    without = run(svc(), [(0, 100.0), (600, 97.0)], {})
    assert any(series == TPUT for _, series in without), "the step itself must alert when nobody said it was meant"
    assert run(svc(), [(0, 100.0), (600, 97.0)], {600: change(600)}) == []


def test_a_batch_size_change_may_move_throughput_as_far_as_it_goes() -> None:
    s = svc()
    raised = run(s, [(0, 100.0), (600, 160.0)], {600: change(600, "batch_size", None, "j")})
    assert not any(series == TPUT for _, series in raised)


def test_a_fault_inside_a_settle_window_is_caught_on_its_first_sample() -> None:
    # throughput falls 15 % one tick after the tuner's move: beyond what the move may cost
    raised = run(svc(), [(0, 100.0), (601, 85.0)], {600: change(600)})
    tput = [t for t, series in raised if series == TPUT]
    assert tput and tput[0] <= 2.0 * 602, raised


def test_a_costly_move_the_guard_rolls_back_raises_nothing() -> None:
    # the tuner's power step costs 17 % (far beyond its budget) and is rolled back one interval later
    back = Change(T0 + 1238.0, "tuner", "power_limit", 0, None, 200_000, 300_000)
    raised = run(svc(), [(0, 100.0), (600, 83.0), (620, 100.0)], {600: change(600), 620: back})
    assert not any(series == TPUT for _, series in raised), raised


def test_a_small_fault_while_the_tuner_moves_is_caught_within_a_tick() -> None:
    # 4 % lost one tick after a move that cost 3 %: judged against the move's level, not held
    raised = run(svc(), [(0, 100.0), (600, 97.0), (602, 93.1)], {600: change(600)})
    tput = [t for t, series in raised if series == TPUT]
    assert tput and tput[0] <= 2.0 * 603, raised


def test_a_change_does_not_coarsen_a_quiet_series() -> None:
    # a noise-free throughput (the simulated job's): after moves, a 0.04 % loss is still news,
    # as it is without any move (the step to a new level is not the series' resolution)
    def first_alert(moves: bool) -> float | None:
        s, raised = svc(), []
        s.add_alert_hook(lambda a: raised.append(a.since - T0) if a.series == TPUT else None)
        for k in range(400):
            if moves and k in (100, 110, 200):
                s.note_change(change(k, "locked_sm_clocks" if k == 110 else "power_limit"))
            level = 580.0 if k < 100 else 560.0 if k < 200 else 575.0
            s.observe(T0 + 2.0 * k, [(TPUT, JOB, level * (0.9996 if k >= 300 else 1.0))])
        return raised[0] if raised else None

    assert first_alert(False) is not None
    assert first_alert(True) == 600.0


def test_a_fault_after_the_change_settled_is_caught_against_the_new_level() -> None:
    raised = run(svc(), [(0, 100.0), (600, 97.0), (900, 88.0)], {600: change(600)})
    tput = [t for t, series in raised if series == TPUT]
    assert tput and 2.0 * 900 <= tput[0] <= 2.0 * 902, raised


def test_visited_levels_are_not_seen_before() -> None:
    # the tuner visits a lower power level and comes back; the same level later without a change alerts
    s = svc()
    changes = {600: change(600), 700: Change(T0 + 1398.0, "tuner", "power_limit", 0, None, 200_000, 300_000)}
    rng = random.Random(1)
    raised: list[float] = []
    s.add_alert_hook(lambda a: raised.append(a.since - T0) if a.series == POWER else None)
    for k in range(1200):
        if k in changes:
            s.note_change(changes[k])
        p = 200.0 if 600 <= k < 700 or k >= 1000 else 300.0
        s.observe(T0 + 2.0 * k, [(POWER, gpu(0), p + rng.gauss(0, 1.5))])
    assert raised and raised[0] >= 2000.0, raised


def test_offloaded_service_takes_changes_in_order_with_ticks() -> None:
    off = OffloadedForecastService(ForecastConfig(prophet=False), batch_ticks=1)
    off.start()
    try:
        for k in range(3):
            off.note_change(change(k))
            off.observe(T0 + 2.0 * k, [(TPUT, JOB, 100.0)])
        assert off.alive
    finally:
        off.close()


def test_a_report_straddling_the_move_does_not_leave_a_false_level() -> None:
    """A noise-free job's first report after a power step holds half of it (the report spans the
    move's tick): the next sample completes the move rather than reading as a 1.5 % loss; a
    fault on that sample (8 % more) is still judged."""
    def alerts(after: list[float]) -> list[float]:
        s, raised = svc(), []
        s.add_alert_hook(lambda a: raised.append(a.since - T0) if a.series == TPUT else None)
        for k in range(400):
            if k == 200:
                s.note_change(change(k))
            level = 580.0 if k < 200 else after[min(k - 200, len(after) - 1)]
            s.observe(T0 + 2.0 * k, [(TPUT, JOB, level)])
        return raised

    assert alerts([571.3, 562.6]) == []  # 1.5 % of the 3 % move on the straddled sample, then the rest
    assert alerts([580.0, 571.3]) == []  # a first report wholly before the move, then a 1.5 % move
    assert alerts([571.3, 520.0]) != []  # beyond what the move showed: judged, caught
