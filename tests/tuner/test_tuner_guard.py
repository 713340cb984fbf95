"""The safety guard: bounds, rate limits, rollback, alert freeze, kill switch, OOM ceiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gputuned.daemon.app.catalog import served_catalog
from gputuned.tuner.decision.guard import GuardConfig, SafetyGuard, set_paused
from gputuned.tuner.zeus.agent import SLOTS, GputunedPolicy
from gputuned.tuner.zeus.objectives import ZeusCost
from gputuned.tuner.zeus.run import TraceRun
from gputuned.tuner.zeus.traces import PACKAGED_TRACES, load_gpu


def make_guard(tmp_path: Path, alerts: list[str] | None = None) -> SafetyGuard:
    cfg = GuardConfig(
        bounds={"power_limit": (100.0, 300.0), "batch_size": (8, 4096)},
        min_interval_s={"power_limit": 5.0, "batch_size": 5.0},
        pause_file=tmp_path / "tuner.paused",
    )
    return SafetyGuard(cfg, alerts=lambda: alerts or [])


def test_guard_refuses_out_of_bounds_values(tmp_path: Path) -> None:
    guard = make_guard(tmp_path)
    assert guard.propose("power_limit", "0", 250.0, now=0.0).allowed
    assert guard.propose("power_limit", "0", 350.0, now=0.0).reason == "out_of_bounds"
    assert guard.propose("power_limit", "0", 50.0, now=0.0).reason == "out_of_bounds"
    assert guard.propose("power_limit", "0", float("nan"), now=0.0).reason == "out_of_bounds"
    assert guard.propose("fan_speed", "0", 1.0, now=0.0).reason == "unknown_knob"
    assert guard.interventions["out_of_bounds"] == 3


def test_guard_rate_limits_each_knob_separately(tmp_path: Path) -> None:
    guard = make_guard(tmp_path)
    guard.commit("power_limit", "0", 250.0, now=10.0)
    assert guard.propose("power_limit", "0", 200.0, now=12.0).reason == "rate_limit"
    assert guard.propose("power_limit", "1", 200.0, now=12.0).allowed  # another GPU
    assert guard.propose("batch_size", "0", 64, now=12.0).allowed  # another knob
    assert guard.propose("power_limit", "0", 200.0, now=15.5).allowed
    assert guard.interventions["rate_limit"] == 1


def test_guard_rolls_back_an_action_that_made_the_objective_worse(tmp_path: Path) -> None:
    guard = make_guard(tmp_path)
    guard.commit("power_limit", "0", 300.0, now=0.0)
    guard.commit("power_limit", "0", 150.0, now=10.0, baseline=1.00)
    assert guard.evaluate(1.30, now=11.0) == []  # not settled yet
    assert guard.evaluate(1.30, now=13.0) == [("power_limit", "0", 300.0)]
    assert guard.rollbacks == 1 and guard.interventions["rollback"] == 1
    # A change within noise is kept.
    guard.commit("power_limit", "0", 250.0, now=30.0, baseline=1.00)
    assert guard.evaluate(1.02, now=33.0, noise=0.01) == []
    assert guard.rollbacks == 1


def test_guard_rolls_back_every_knob_an_action_changed(tmp_path: Path) -> None:
    # a move of two knobs (or a batch size acknowledged a tick after the limit moved) is one
    # action: undoing only its last half left the batch halved each time a policy repeated it
    guard = make_guard(tmp_path)
    guard.commit("power_limit", "0", 300.0, now=0.0)
    guard.commit("batch_size", "0", 512, now=0.0)
    guard.commit("power_limit", "0", 250.0, now=10.0, baseline=1.00)
    guard.commit("batch_size", "0", 256, now=11.0, baseline=1.00)
    guard.commit("batch_size", "0", 128, now=11.5, baseline=1.10)  # changed twice: restored to the first value
    assert guard.evaluate(1.30, now=12.0) == []  # settling counts from the last change
    assert sorted(guard.evaluate(1.30, now=14.0)) == [("batch_size", "0", 512.0), ("power_limit", "0", 300.0)]
    assert guard.rollbacks == 1
    assert guard.evaluate(1.30, now=30.0) == []  # judged once
    guard.commit("power_limit", "0", 200.0, now=40.0, baseline=1.00)
    guard.commit("batch_size", "0", 256, now=60.0, baseline=1.20)  # long after: an action of its own
    assert guard.evaluate(1.30, now=63.0) == [("batch_size", "0", 512.0)]


def test_guard_freezes_on_thermal_alert_and_on_kill_switch(tmp_path: Path) -> None:
    alerts: list[str] = []
    guard = make_guard(tmp_path, alerts)
    assert guard.propose("power_limit", "0", 200.0, now=0.0).allowed
    alerts.append("thermal")
    assert guard.propose("power_limit", "0", 200.0, now=0.0).reason == "alert_thermal"
    alerts[:] = ["xid"]
    assert guard.propose("batch_size", "0", 64, now=0.0).reason == "alert_xid"
    alerts.clear()
    set_paused(tmp_path / "tuner.paused", True)
    assert guard.propose("power_limit", "0", 200.0, now=0.0).reason == "paused"
    set_paused(tmp_path / "tuner.paused", False)
    assert guard.propose("power_limit", "0", 200.0, now=0.0).allowed


def test_guard_samples_use_declared_families(tmp_path: Path) -> None:
    guard = make_guard(tmp_path)
    guard.propose("power_limit", "0", 999.0, now=0.0)
    guard.commit("power_limit", "0", 200.0, now=0.0)
    samples = guard.samples()
    names = {s[0] for s in samples}
    assert names <= set(served_catalog())
    assert ("gputuned_tuner_guard_interventions_total", (("reason", "out_of_bounds"),), 1.0) in samples
    assert ("gputuned_tuner_knob_value", (("knob", "power_limit"), ("gpu", "0")), 200.0) in samples


class RecordingRun(TraceRun):
    """A trace run that remembers every batch size it was asked to apply."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.asked: list[int] = []

    def set_config(self, batch_size: int, power_limit_w: int) -> None:
        self.asked.append(batch_size)
        super().set_config(batch_size, power_limit_w)


def test_after_oom_the_policy_never_proposes_that_batch_size_or_larger() -> None:
    trace = load_gpu(PACKAGED_TRACES, "a40")["cifar100"]
    guard = SafetyGuard(GuardConfig(min_interval_s={}, pause_file=None))
    # A chooser that always asks for the largest size it can see.
    policy = GputunedPolicy(lambda obs: 2 * SLOTS, guard=guard, rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    objective = ZeusCost(0.5)
    first = RecordingRun(trace, rng, oom_above=1024)
    policy.run_recurrence(first, objective, None)
    assert guard.oom_ceiling == 2048 and guard.interventions["oom"] == 1
    assert first.asked.count(2048) == 1  # the one attempt that ran out of memory
    for _ in range(6):
        run = RecordingRun(trace, rng, oom_above=1024)
        policy.run_recurrence(run, objective, None)
        assert run.done
        assert max(run.asked, default=0) <= 1024


def test_guard_refusal_leaves_run_on_its_current_configuration(tmp_path: Path) -> None:
    trace = load_gpu(PACKAGED_TRACES, "a40")["imagenet"]
    guard = make_guard(tmp_path)
    set_paused(tmp_path / "tuner.paused", True)
    policy = GputunedPolicy(lambda obs: 0, guard=guard, rng=np.random.default_rng(0))
    run = RecordingRun(trace, np.random.default_rng(1))
    policy.run_recurrence(run, ZeusCost(0.5), None)
    assert run.done and run.asked == []
    assert (run.batch_size, run.power_limit_w) == (trace.default_batch_size, trace.max_power_w)
    assert guard.interventions["paused"] > 0


@pytest.mark.parametrize("value", [-1.0, 2.0])
def test_zeus_cost_rejects_bad_eta(value: float) -> None:
    with pytest.raises(ValueError, match="eta_knob"):
        ZeusCost(value)
