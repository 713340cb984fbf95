"""Perseus-style slack reclaiming: lower only GPUs with slack, never the critical path."""

from __future__ import annotations

from gputuned.tuner.decision.perseus import RankTiming, SlackConfig, plan_power_limits, slack


def step(work: dict[str, float], limits: dict[str, float]) -> list[RankTiming]:
    """Compute time grows as the power limit drops (exponent 0.5), as on a real GPU near its knee."""
    compute = {g: w * (300.0 / limits[g]) ** 0.5 for g, w in work.items()}
    crit = max(compute.values())
    return [RankTiming(i, g, c, crit - c) for i, (g, c) in enumerate(compute.items())]


def test_only_ranks_with_slack_are_slowed_and_step_time_holds() -> None:
    work = {"0": 1.00, "1": 0.80, "2": 0.97, "3": 0.60}
    limits = {g: 300.0 for g in work}
    bounds = {g: (100.0, 300.0) for g in work}
    before = max(t.compute_s for t in step(work, limits))
    for _ in range(40):
        limits = plan_power_limits(step(work, limits), limits, bounds, SlackConfig(min_slack=0.05, step_w=10.0))
        assert limits["0"] == 300.0  # the critical rank is never lowered
    after = max(t.compute_s for t in step(work, limits))
    assert after <= before * 1.0 + 1e-9
    assert limits["3"] < limits["1"] < 300.0  # more slack, lower limit
    assert limits["2"] == 300.0  # 3% slack: within the dead band, left alone
    assert all(s < 0.2 for s in slack(step(work, limits)).values())


def test_a_lowered_rank_that_became_critical_is_raised_back() -> None:
    limits = {"0": 200.0, "1": 300.0}
    timings = [RankTiming(0, "0", 1.2, 0.0), RankTiming(1, "1", 1.0, 0.2)]
    new = plan_power_limits(timings, limits, {"0": (100.0, 300.0), "1": (100.0, 300.0)})
    assert new["0"] > 200.0 and new["1"] < 300.0
