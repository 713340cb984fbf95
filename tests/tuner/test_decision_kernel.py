"""The decision step exists once: the daemon's tuning component and the training environment,
driven over the same scripted node, make the same sequence of moves."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from job_knobs import JobKnobs

from gputuned.collectors import families as F
from gputuned.daemon.actuation.actuator import Result
from gputuned.daemon.app.tuning import TuningComponent
from gputuned.daemon.core.store import Store
from gputuned.tuner.decision.config import TuningConfig
from gputuned.tuner.decision.kernel import Ack, GPULimits
from gputuned.tuner.decision.observe import Interval
from gputuned.tuner.decision.perseus import RankTiming
from gputuned.tuner.sim_env import SimNodeEnv

GPU = (("gpu", "0"), ("uuid", "GPU-0"))
RANK0 = (("job", "j"), ("rank", "0"))
INTERVAL_S = 5.0
#: The scripted GPU's lockable SM clocks: the daemon's grid over the actuator's range.
TOP_MHZ, BOTTOM_MHZ = 1410, 210
CLOCK_GRID = tuple(range(TOP_MHZ, BOTTOM_MHZ - 1, -15))
MOVE_KINDS = ("reference", "decision", "applied", "nack", "action", "rollback", "refused", "failed")


@dataclass
class ScriptedJob:
    """One GPU and its job: throughput and power are functions of the power limit and batch size.

    Throughput peaks at batch 256 and falls beyond it, a batch of 1024 runs out of memory, and
    power is capped by the limit: the climber has limits to walk down, probes that pay and
    probes that must be undone. With ``clocks``, an SM-clock lock under the clock the limit gives
    sets the clock and draws less power than the cap at the same clock (it slows the phases the
    cap leaves alone): a lock the climber keeps.
    """

    limit_w: float = 400.0
    batch: int = 64
    lock: int | None = None
    energy: float = 0.0
    samples: float = 0.0
    t: float = 1000.0
    acks: dict[str, Ack] = field(default_factory=dict)

    def clock(self) -> float:
        """The SM clock over its maximum: the limit's, or the lock's under it."""
        return min((self.limit_w / 400.0) ** 0.5, (self.lock or TOP_MHZ) / TOP_MHZ)

    def locked(self) -> bool:
        return self.lock is not None and self.lock / TOP_MHZ < (self.limit_w / 400.0) ** 0.5

    def throughput(self) -> float:
        return 1000.0 * self.clock() ** 0.6 * math.exp(-((math.log2(self.batch / 256.0)) ** 2) / 8.0)

    def power(self) -> float:
        if self.locked():
            return 250.0 * self.clock() + 60.0
        return min(self.limit_w, 300.0 * self.clock() + 60.0)

    def run(self, seconds: float) -> None:
        self.energy += self.power() * seconds
        self.samples += self.throughput() * seconds
        self.t += seconds

    def ask_batch(self, size: int) -> str:
        ident = f"d-{len(self.acks) + 1}"
        if size >= 1024:
            self.acks[ident] = Ack(False, f"CUDA out of memory at batch_size {size}")
        else:
            self.batch = size
            self.acks[ident] = Ack(True)
        return ident


class DaemonSide(JobKnobs):
    """The job seen by the daemon: readings in the store, the actuator and the control socket."""

    def __init__(self, job: ScriptedJob, clocks: bool = False) -> None:
        self.job = job
        self.clocks = clocks
        self.origins: list[tuple[str, str]] = []  # (knob, origin) of each GPU change

    def set_power_limit(self, gpu: int, watts: float, origin: str = "operator") -> Any:
        self.job.limit_w = watts
        self.origins.append(("power_limit", origin))
        return type("R", (), {"ok": True})()

    def change(self, target: int | str, knob_name: str, value: Any, origin: str = "operator") -> Result:
        if knob_name != "locked_sm_clocks":
            return super().change(target, knob_name, value, origin)
        lo, hi = value
        self.job.lock = None if (lo, hi) == (BOTTOM_MHZ, TOP_MHZ) else int(hi)  # the whole range: unlocked
        self.origins.append((knob_name, origin))
        return Result(True, "ok", "", value)

    def bounds(self, gpu: int) -> dict[str, tuple[int, int]]:
        clocks = {"locked_sm_clocks": (BOTTOM_MHZ, TOP_MHZ)} if self.clocks else {}
        return {"power_limit": (100_000, 400_000), **clocks}

    def send_decision(self, job: str, payload: dict[str, Any]) -> str:
        return self.job.ask_batch(int(payload["batch_size"]))

    def wait_ack(self, ident: str, timeout: float) -> dict[str, Any] | None:
        ack = self.job.acks.get(ident)
        return None if ack is None else {"ok": ack.ok, "error": ack.error}

    def connected_jobs(self) -> dict[str, list[int]]:
        return {"j": [0]}

    def publish(self, store: Store) -> None:
        j = self.job
        store.publish("gpu", j.t, [
            (F.GPU_POWER_LIMIT, GPU, j.limit_w), (F.GPU_POWER_LIMIT_MIN, GPU, 100.0),
            (F.GPU_POWER_LIMIT_MAX, GPU, 400.0), (F.GPU_SM_CLOCK_MAX, GPU, 1.4e9),
            (F.GPU_SM_CLOCK, GPU, 1.4e9 * j.clock()), (F.GPU_POWER, GPU, j.power()),
            (F.GPU_ENERGY, GPU, j.energy), (F.GPU_CLOCK_EVENT_MASK, GPU, 4.0),
        ])
        store.publish("trainer", j.t, [
            ("gputuned_trainer_samples_total", RANK0, j.samples),
            ("gputuned_trainer_samples_per_second", RANK0, j.throughput()),
            ("gputuned_trainer_goodput_samples_per_second", RANK0, j.throughput()),
            ("gputuned_trainer_batch_size", RANK0, float(j.batch)),
        ])


class EnvSide:
    """The same job as the training environment's node."""

    def __init__(self, job: ScriptedJob, clocks: bool = False) -> None:
        self.job = job
        self.clocks = CLOCK_GRID if clocks else ()
        self._t0, self._e0 = job.t, job.energy
        self._rates = [(job.t, job.throughput())]  # the job's reported rates, one a tick

    def gpus(self) -> list[GPULimits]:
        return [GPULimits("0", 100.0, 400.0, self.clocks)]

    def now(self) -> float:
        return self.job.t

    def advance(self, seconds: float) -> None:
        for _ in range(int(seconds)):  # the daemon's job runs and reports tick by tick too
            self.job.run(1.0)
            self._rates.append((self.job.t, self.job.throughput()))

    def batch_size(self) -> int:
        return self.job.batch

    def default_limit_w(self) -> float:
        return 400.0

    def measure(self, now: float) -> Interval | None:
        j = self.job
        seconds = now - self._t0
        # throughput as the daemon reads it: the mean of the rates the job reported since the
        # interval began, its first report (taken before the move) included
        rates = [r for t, r in self._rates if t >= self._t0]
        tput = sum(rates) / len(rates)
        energy = j.energy - self._e0
        self._t0, self._e0 = now, j.energy
        return Interval(energy, tput * seconds, seconds, tput, j.power(), j.clock(), True,
                        j.batch, math.inf)

    def set_power_limit(self, gpu: str, watts: float, origin: str = "tuner") -> bool:
        self.job.limit_w = watts
        return True

    def set_sm_clock(self, gpu: str, mhz: int | None, origin: str = "tuner") -> bool:
        self.job.lock = mhz
        return True

    def request_batch(self, size: int) -> str:
        return self.job.ask_batch(size)

    def batch_ack(self, ident: str) -> Ack | None:
        return self.job.acks.get(ident)

    def rank_timings(self) -> list[RankTiming]:
        return []


class ScriptedEnv(SimNodeEnv):
    """The training environment over the scripted job instead of the physics model."""

    clocks = False

    def _build_node(self, n_gpus: int) -> EnvSide:
        return EnvSide(ScriptedJob(), self.clocks)


def moves(events: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    return [(e["kind"], e["knob"], float(e["value"])) for e in events if e["kind"] in MOVE_KINDS]


def daemon_moves(tmp_path: Path, objective: str, intervals: int, clocks: bool = False) -> list[tuple[str, str, float]]:
    job = ScriptedJob()
    side = DaemonSide(job, clocks)
    store = Store(100)
    events: list[dict[str, Any]] = []
    conf = TuningConfig(objective=objective, interval_s=INTERVAL_S, max_slowdown=0.03, chooser="climber")
    tuner = TuningComponent(store, side, side, [0], conf, on_event=events.append)
    side.publish(store)
    tuner.tick(job.t)  # the job is found and the first interval starts
    for _ in range(int((intervals + 1) * INTERVAL_S)):
        job.run(1.0)
        side.publish(store)
        tuner.tick(job.t)
    return moves(events)


def env_moves(objective: str, intervals: int, clocks: bool = False) -> list[tuple[str, str, float]]:
    env = ScriptedEnv(objectives=(objective,), interval_s=INTERVAL_S, max_slowdown=0.03, horizon=intervals, noise=0.0)
    env.clocks = clocks
    events: list[dict[str, Any]] = []
    env.on_event = events.append
    env.reset(seed=0, options={"objective": objective, "max_slowdown": 0.03})
    done = False
    while not done and env.node.now() < 1000.0 + (intervals + 1) * INTERVAL_S - 1e-6:
        _, _, term, trunc, _ = env.step(env.suggested)  # the climber's move, as the daemon's chooser
        done = term or trunc
    return moves(events)


@pytest.mark.parametrize(("objective", "kinds"), [
    ("energy_slowdown", {"reference", "action", "decision", "applied", "rollback"}),
    ("throughput", {"reference", "decision", "applied", "rollback"}),  # at the maximum limit from the start
])
def test_the_daemon_and_the_training_environment_make_the_same_moves(tmp_path: Path, objective: str,
                                                                     kinds: set[str]) -> None:
    daemon = daemon_moves(tmp_path, objective, 40)
    env = env_moves(objective, 40)
    # the run exercises what there is to agree on: power steps, batch probes, their answers, rollbacks
    assert kinds <= {k for k, _, _ in daemon}
    assert len(daemon) >= 8
    n = min(len(daemon), len(env))
    assert n >= len(daemon) - 2  # the env stops at a whole step; the daemon may be one move ahead
    assert daemon[:n] == env[:n]


def test_the_daemon_and_the_training_environment_make_the_same_clock_moves(tmp_path: Path) -> None:
    daemon = daemon_moves(tmp_path, "energy_slowdown", 40, clocks=True)
    env = env_moves("energy_slowdown", 40, clocks=True)
    clock = [(k, v) for k, knob, v in daemon if knob == "sm_clock"]
    # the start probe's lock step and its release, which the guard undid (going back cost more): the
    # lock, not the limit, is walked first, and down
    assert clock[:3] == [("action", 1350.0), ("action", 0.0), ("rollback", 1350.0)]
    assert not [m for m in daemon if m[1] == "power_limit"]
    assert len({v for k, v in clock if k == "action" and 0 < v < 1350.0}) >= 2
    n = min(len(daemon), len(env))
    assert n >= len(daemon) - 2 and daemon[:n] == env[:n]
