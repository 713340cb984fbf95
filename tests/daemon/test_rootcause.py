"""Root cause on trainer alerts: who is asked, when the cooldown holds, and what the summary says."""

from __future__ import annotations

from typing import Any

import pytest

from gputuned.daemon.app.rootcause import CAUSE, SHARE, RootCause
from gputuned.intent import Change
from gputuned.trainer_plugin.rootcause import PARTS, analyse, rank_timing
from gputuned.tuner.forecast.alerts import Alert


class ScriptedControl:
    """The ControlServer calls the root-cause part uses, answering as a job's leader would."""

    def __init__(self, jobs: set[str]) -> None:
        self.jobs_up = jobs
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.profile_results: dict[str, dict[str, Any]] = {}

    def send_decision(self, job: str, payload: dict[str, Any]) -> str:
        if job not in self.jobs_up:
            raise LookupError(f"no leader of job {job!r} is connected")
        self.sent.append((job, payload))
        return f"d-{len(self.sent)}"


def _alert(series: str, job: str | None, since: float) -> Alert:
    labels = (("job", job), ("rank", "0")) if job else (("gpu", "0"),)
    return Alert("anomaly", series, labels, since, 0.9, "dropped 50%")


def _ranks(busy: list[float], period: float, data: float = 0.0, comm: float = 0.001) -> list[dict[str, Any]]:
    """Lock-stepped ranks: each waits in the all-reduce for the slowest, then the transfer itself."""
    slowest = max(busy)
    return [rank_timing(r, 10, 10 * period, 10 * (period - data), 10 * data, 10 * (slowest - b + comm), "cpu", r)
            for r, b in enumerate(busy)]


def test_straggler_wait_is_split_from_communication_and_names_the_rank_and_gpu() -> None:
    # rank 2 busy 300 ms per step, the others 6 ms; the all-reduce itself 1 ms
    out = analyse({"ranks": _ranks([0.006, 0.006, 0.300, 0.006], period=0.301), "context": {"compression": "none"}})
    assert sum(out["shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert out["cause"] == "straggler_wait" and out["straggler"]["rank"] == 2 and out["straggler"]["gpu"] == 2
    assert out["shares"]["straggler_wait"] == pytest.approx(0.294 / 0.301, abs=0.01)
    assert out["shares"]["communication"] == pytest.approx(0.001 / 0.301, abs=0.01)
    assert "rank 2 (GPU 2) is the straggler" in out["suggestions"][0]


def test_data_loader_stall_on_every_rank_is_the_data_loader_not_a_straggler() -> None:
    out = analyse({"ranks": _ranks([0.030, 0.031], period=0.032, data=0.024)})
    assert out["cause"] == "data_loader" and out["straggler"] is None
    assert out["shares"]["data_loader"] == pytest.approx(0.75, abs=0.05)
    assert sum(out["shares"].values()) == pytest.approx(1.0, abs=1e-3)


def test_waiting_for_a_rank_whose_loader_is_slower_is_the_data_loader_not_a_straggler() -> None:
    """Rank 1's loader threads got less CPU: it waits 300 ms for data, rank 0 200 ms and then 100 ms for rank 1."""
    ranks = [rank_timing(0, 10, 4.0, 2.0, 2.0, 1.1, "cpu", 0), rank_timing(1, 10, 4.0, 1.0, 3.0, 0.1, "cpu", 1)]
    out = analyse({"ranks": ranks})
    assert out["cause"] == "data_loader" and out["straggler"] is None, out["shares"]
    assert out["shares"]["data_loader"] == pytest.approx(0.75, abs=0.01)
    assert out["shares"]["straggler_wait"] == pytest.approx(0.0, abs=0.01)
    assert sum(out["shares"].values()) == pytest.approx(1.0, abs=1e-3)


def test_communication_names_the_trainers_compression_hooks_or_accumulation() -> None:
    ranks = _ranks([0.004, 0.004], period=0.010, comm=0.006)
    plain = analyse({"ranks": ranks, "context": {"compression": "none"}})
    assert plain["cause"] == "communication" and all(h in plain["suggestions"][0] for h in ("powersgd", "topk", "int8"))
    hooked = analyse({"ranks": ranks, "context": {"compression": "powersgd"}})
    assert "accumulation_steps" in hooked["suggestions"][0]


def test_a_slowdown_with_no_wait_after_a_tuner_move_is_named_as_the_tuners_move() -> None:
    move = Change(100.0, "tuner", "batch_size", None, "bert", 256, 64).to_dict()
    out = analyse({"ranks": _ranks([0.010, 0.010], period=0.011)}, move)
    assert out["cause"] == "tuner" and "the tuner changed batch_size on job bert from 256 to 64" in out["suggestions"][0]


def test_alert_asks_once_per_cooldown_but_a_tuner_caused_capture_spares_it(caplog) -> None:
    control = ScriptedControl({"bert"})
    rc = RootCause(control, steps=20, cooldown_s=600, tuner_window_s=60, tuner_gap_s=60)
    rc(_alert("gputuned_gpu_power_watts", None, 0.0))  # not a trainer series
    rc.on_change(Change(5.0, "tuner", "power_limit", 0, None, 700_000, 400_000))
    rc(_alert("gputuned_trainer_samples_per_second", "bert", 10.0))  # within the tuner move's window
    assert control.sent == [("bert", {"profile_steps": 20})] and rc.captures == {"tuner": 1}
    control.profile_results["d-1"] = {"ranks": _ranks([0.006, 0.006], period=0.007)}
    rc.tick(20.0)
    assert rc.latest["bert"]["cause"] == "tuner"
    rc(_alert("gputuned_trainer_samples_per_second", "bert", 200.0))  # a real fault later: the cooldown was not used
    assert len(control.sent) == 2 and rc.captures == {"tuner": 1, "alert": 1}
    control.profile_results["d-2"] = {"ranks": _ranks([0.006, 0.300], period=0.301)}
    with caplog.at_level("WARNING"):
        rc.tick(210.0)
    assert "straggler rank 1 (GPU 1)" in caplog.text
    rc(_alert("gputuned_trainer_step_time_seconds", "bert", 300.0))  # within the cooldown
    rc(_alert("gputuned_trainer_samples_per_second", "gone", 300.0))  # no such job: logged, no crash
    assert len(control.sent) == 2
    rc(_alert("gputuned_trainer_samples_per_second", "bert", 900.0))  # after the cooldown
    assert len(control.sent) == 3
    st = rc.status()["jobs"]["bert"]
    assert st["straggler"]["rank"] == 1 and st["cause_text"] == "straggler rank 1 (GPU 1)"
    samples = rc.samples()
    shares = {dict(lab)["part"]: v for name, lab, v in samples if name == SHARE}
    assert set(shares) == set(PARTS) and sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert [dict(lab) for name, lab, _ in samples if name == CAUSE] == [
        {"job": "bert", "cause": "straggler_wait", "rank": "1", "gpu": "1"}]


def test_an_unanswered_capture_is_forgotten_so_the_job_can_be_asked_again() -> None:
    control = ScriptedControl({"bert"})
    rc = RootCause(control, cooldown_s=0.0)
    rc(_alert("gputuned_trainer_samples_per_second", "bert", 0.0))
    rc(_alert("gputuned_trainer_samples_per_second", "bert", 1.0))  # one in flight per job
    assert len(control.sent) == 1
    rc.tick(500.0)
    rc(_alert("gputuned_trainer_samples_per_second", "bert", 500.0))
    assert len(control.sent) == 2


def test_a_capture_that_found_nothing_notable_does_not_hold_the_cooldown() -> None:
    """An alert on the shared CPU's noise asks a capture that finds no wait; the fault that starts later is captured."""
    control = ScriptedControl({"bert"})
    rc = RootCause(control, cooldown_s=600)
    rc(_alert("gputuned_trainer_communication_seconds", "bert", 0.0))
    control.profile_results["d-1"] = {"ranks": _ranks([0.006, 0.006], period=0.007)}
    rc.tick(10.0)
    assert rc.latest["bert"]["cause"] == "compute"
    rc(_alert("gputuned_trainer_samples_per_second", "bert", 30.0))  # the fault: asked at once
    assert len(control.sent) == 2
    rc(_alert("gputuned_trainer_step_time_seconds", "bert", 31.0))  # while that capture is in flight
    assert len(control.sent) == 2
    control.profile_results["d-2"] = {"ranks": _ranks([0.006, 0.300], period=0.301)}
    rc.tick(40.0)
    rc(_alert("gputuned_trainer_samples_per_second", "bert", 60.0))  # a found cause holds the cooldown
    assert len(control.sent) == 2 and rc.latest["bert"]["straggler"]["rank"] == 1


def test_an_alert_that_came_while_a_capture_was_in_flight_is_asked_when_that_one_found_nothing() -> None:
    control = ScriptedControl({"bert"})
    rc = RootCause(control, cooldown_s=600)
    rc(_alert("gputuned_trainer_communication_seconds", "bert", 0.0))
    rc(_alert("gputuned_trainer_samples_per_second", "bert", 2.0))  # the fault starts during the capture
    assert len(control.sent) == 1
    control.profile_results["d-1"] = {"ranks": _ranks([0.006, 0.006], period=0.007)}
    rc.tick(5.0)
    assert len(control.sent) == 2 and rc._pending["d-2"]["alert"].startswith("anomaly on gputuned_trainer_samples")
