"""The tuner turns clocks: a lock taking over from the limit is rolled back whole when it costs
throughput, Perseus slows a GPU off the critical path by its clock, and the daemon's lock goes
through the actuator (recorded, emitted with its origin, restored on stop)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gputuned.collectors.nvml import open_gpus, open_nvml
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import ScriptedBackend
from gputuned.daemon.actuation.actuator import Actuator
from gputuned.daemon.actuation.config import ActuationConfig
from gputuned.daemon.actuation.statefile import StateFile
from gputuned.daemon.app.tuning import StoreNode
from gputuned.daemon.core.store import Store
from gputuned.tuner.decision.config import TuningConfig
from gputuned.tuner.decision.guard import GuardConfig, SafetyGuard
from gputuned.tuner.decision.kernel import Ack, DecisionKernel, GPULimits
from gputuned.tuner.decision.moves import STAY, move
from gputuned.tuner.decision.observe import Interval
from gputuned.tuner.decision.perseus import RankTiming

CLOCKS = tuple(range(1410, 209, -15))


@dataclass
class ClockNode:
    """Two GPUs whose job runs at the lowest locked clock; rank 1 computes 30% faster than rank 0."""

    locks: dict[str, int | None] = field(default_factory=lambda: {"0": None, "1": None})
    limits: dict[str, float] = field(default_factory=lambda: {"0": 300.0, "1": 300.0})
    origins: list[tuple[str, str]] = field(default_factory=list)
    perseus: bool = False

    def gpus(self) -> list[GPULimits]:
        return [GPULimits(k, 100.0, 400.0, CLOCKS) for k in ("0", "1")]

    def clock(self) -> float:
        return min(lock or 1410 for lock in self.locks.values()) / 1410

    def measure(self, now: float) -> Interval | None:
        speed = self.clock() ** 3  # a clock step costs much more throughput than it saves energy
        return Interval(300.0 * 10.0, 100.0 * speed * 10.0, 10.0, 100.0 * speed, 300.0, self.clock(), True, 64, 300.0)

    def set_power_limit(self, gpu: str, watts: float, origin: str = "tuner") -> bool:
        self.limits[gpu] = watts
        return True

    def set_sm_clock(self, gpu: str, mhz: int | None, origin: str = "tuner") -> bool:
        self.locks[gpu] = mhz
        self.origins.append((gpu, origin))
        return True

    def request_batch(self, size: int) -> str:
        raise LookupError("no job")

    def batch_ack(self, ident: str) -> Ack | None:
        return None

    def rank_timings(self) -> list[RankTiming]:
        return [RankTiming(0, "0", 1.0, 0.0), RankTiming(1, "1", 0.7, 0.3)] if self.perseus else []


def kernel(node: ClockNode) -> DecisionKernel:
    guard = SafetyGuard(GuardConfig(pause_file=None, settle_s=5.0))
    cfg = TuningConfig(interval_s=10.0)
    k = DecisionKernel(node, cfg, guard, b0=64, limit_w=300.0)
    assert k.observe(0.0).kind == "reference" and k.observe(10.0).kind == "choose"
    return k


def test_a_clock_step_that_costs_throughput_is_rolled_back() -> None:
    node = ClockNode()
    k = kernel(node)
    assert k.act(move(0, 0, -1), 10.0).dc == -1  # one clock step (5% of the range) under the top
    assert node.locks == {"0": 1350, "1": 1350} and node.limits == {"0": 400.0, "1": 400.0}  # the lock took over
    k.guard.evaluate(0.0, 30.0)  # that move judged (kept)
    k.act(move(0, 0, -1), 30.0)
    assert node.locks["0"] == 1290
    assert k.observe(50.0).kind == "rollback"  # 13% slower for no energy saved
    assert node.locks == {"0": 1350, "1": 1350} and k.lock_mhz == 1350
    assert k.guard.rollbacks == 1


def test_only_the_node_refusing_the_first_lock_ends_clock_moves(tmp_path: Path) -> None:
    """A first lock the guard refuses (the kill switch here) keeps clocks in play; one the GPUs refuse ends them."""
    paused = tmp_path / "paused"
    paused.write_text("")
    node = ClockNode()
    k = DecisionKernel(node, TuningConfig(interval_s=10.0), SafetyGuard(GuardConfig(pause_file=paused, settle_s=5.0)),
                       b0=64, limit_w=300.0)
    assert k.observe(0.0).kind == "reference" and k.observe(10.0).kind == "choose"
    assert k.act(move(0, 0, -1), 10.0).dc == 0 and k.clocks == CLOCKS  # refused by the guard
    paused.unlink()
    assert k.act(move(0, 0, -1), 20.0).dc == -1 and node.locks == {"0": 1350, "1": 1350}
    refusing = ClockNode()
    refusing.set_sm_clock = lambda gpu, mhz, origin="tuner": False  # type: ignore[method-assign]
    k = kernel(refusing)
    assert k.act(move(0, 0, -1), 10.0).dc == 0 and k.clocks == ()  # NVML answered NOT_SUPPORTED: power only


def test_a_lock_taking_over_from_the_limit_is_undone_whole() -> None:
    node = ClockNode()
    k = kernel(node)
    k.act(move(0, 0, -1), 10.0)
    node.locks = {"0": 1100, "1": 1100}  # the job slowed far more than the move meant
    assert k.observe(30.0).kind == "rollback"
    assert node.locks == {"0": None, "1": None} and node.limits == {"0": 300.0, "1": 300.0}


def test_perseus_lowers_the_clock_of_the_gpu_off_the_critical_path() -> None:
    node = ClockNode(perseus=True)
    k = kernel(node)
    for t in (10.0, 20.0, 30.0):
        k.act(STAY, t)
    assert node.locks["0"] is None  # the critical rank's GPU keeps its clock
    assert node.locks["1"] is not None and node.locks["1"] <= 1410 - 3 * 60 + 15
    assert set(node.origins) == {("1", "perseus")}


def test_the_daemon_locks_through_the_actuator_and_restores_on_stop(
        sim_node: Callable[..., ScriptedBackend], tmp_path: Path) -> None:
    backend = sim_node({"profile": "a100", "gpus": 1})
    gpus = open_gpus(open_nvml("sim", sim_nvml)[0])
    act = Actuator(gpus, ActuationConfig(), StateFile(tmp_path / "state.json"))
    act.start()
    changes: list[Any] = []
    act.add_change_hook(changes.append)
    lo, hi = act.bounds(0)["locked_sm_clocks"]
    node = StoreNode(Store(10), act, None, "j", [(GPULimits("0", 100.0, 400.0, tuple(range(hi, lo - 1, -15))), (), 1.4e9)], 0.0)
    assert node.set_sm_clock("0", 1200) and node.set_sm_clock("0", 1050, origin="perseus")
    assert backend.devices[0].locked_sm_clocks_mhz == (1050, 1050)
    assert [(c.origin, c.knob, list(c.new)) for c in changes] == [
        ("tuner", "locked_sm_clocks", [1200, 1200]), ("perseus", "locked_sm_clocks", [1050, 1050])]
    act.stop()  # the recorded original (unlocked) comes back
    assert backend.devices[0].locked_sm_clocks_mhz is None
