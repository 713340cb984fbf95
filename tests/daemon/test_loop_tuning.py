"""The live tuner against a scripted node: climber moves, guard refusals, OOM, rollback hook."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from job_knobs import JobKnobs

from gputuned.collectors import families as F
from gputuned.daemon.actuation.statefile import StateFile
from gputuned.daemon.app.tuning import TuningComponent
from gputuned.daemon.core.store import Store
from gputuned.tuner.decision.choosers import ClimbChooser, LearnedChooser, make_chooser
from gputuned.tuner.decision.config import TuningConfig
from gputuned.tuner.decision.moves import N_ACTIONS, decode, move
from gputuned.tuner.decision.observe import BASE_OBS_DIM, SIM_OBS_DIM

GPU = (("gpu", "0"), ("uuid", "GPU-0"))
RANK0 = (("job", "j"), ("rank", "0"))


@dataclass
class Node(JobKnobs):
    """A one-GPU node: throughput 1000 x (p / 400) ** 0.3 x (b / 64) ** 0.1 at power limit p, batch b."""

    limit_w: float = 400.0
    batch: int = 64
    energy: float = 0.0
    samples: float = 0.0
    oom_from: int = 10**9
    max_batch: int = 10**9
    connected: bool = True
    t: float = 1000.0
    restored: list[int] = field(default_factory=list)
    set_calls: list[float] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -- the actuator the tuner sees
    def set_power_limit(self, gpu: int, watts: float, origin: str = "operator") -> Any:
        self.set_calls.append(watts)
        self.limit_w = watts
        return type("R", (), {"ok": True})()

    def restore_gpu(self, gpu: int) -> None:
        self.restored.append(gpu)
        self.limit_w = 400.0

    def bounds(self, gpu: int) -> dict[str, tuple[int, int]]:
        return {"power_limit": (100_000, 400_000)}

    # -- the control server the tuner sees
    def send_decision(self, job: str, payload: dict[str, Any]) -> str:
        ident = f"d-{len(self.sent) + 1}"
        self.sent.append(payload)
        b = payload["batch_size"]
        if b > self.max_batch:
            self.acks[ident] = {"ok": False, "error": f"batch_size {b} outside [1, {self.max_batch}]"}
        elif b >= self.oom_from:
            self.acks[ident] = {"ok": False, "error": f"CUDA out of memory at batch_size {b}"}
        else:
            self.batch = b
            self.acks[ident] = {"ok": True}
        return ident

    def wait_ack(self, ident: str, timeout: float) -> dict[str, Any] | None:
        return self.acks.get(ident)

    def connected_jobs(self) -> dict[str, list[int]]:
        return {"j": [0]} if self.connected else {}

    def step(self, store: Store, t: float, dt: float) -> None:
        tput = 1000.0 * (self.limit_w / 400.0) ** 0.3 * (self.batch / 64) ** 0.1
        power = min(self.limit_w, 300.0 * (self.limit_w / 400.0) ** 0.5 + 60.0)
        self.energy += power * dt
        self.samples += tput * dt
        store.publish("gpu", t, [
            (F.GPU_POWER_LIMIT, GPU, self.limit_w), (F.GPU_POWER_LIMIT_MIN, GPU, 100.0), (F.GPU_POWER_LIMIT_MAX, GPU, 400.0),
            (F.GPU_SM_CLOCK_MAX, GPU, 1.4e9), (F.GPU_SM_CLOCK, GPU, 1.4e9 * (self.limit_w / 400.0) ** 0.5),
            (F.GPU_POWER, GPU, power), (F.GPU_ENERGY, GPU, self.energy), (F.GPU_CLOCK_EVENT_MASK, GPU, 4.0),
        ])
        store.publish("trainer", t, [
            ("gputuned_trainer_samples_total", RANK0, self.samples), ("gputuned_trainer_samples_per_second", RANK0, tput),
            ("gputuned_trainer_goodput_samples_per_second", RANK0, tput), ("gputuned_trainer_batch_size", RANK0, float(self.batch)),
        ])


def drive(node: Node, tuner: TuningComponent, store: Store, seconds: float, dt: float = 1.0) -> None:
    for _ in range(int(seconds / dt)):
        node.t += dt
        node.step(store, node.t, dt)
        tuner.tick(node.t)


def make(tmp_path: Path, node: Node, objective: str = "energy_slowdown", **cfg: Any) -> tuple[TuningComponent, Store, list]:
    store = Store(100)
    events: list[dict[str, Any]] = []
    conf = TuningConfig(objective=objective, interval_s=5.0, chooser="climber", **cfg)
    node.state_file = StateFile(tmp_path / "state.json")  # the pause flag lives beside it
    return TuningComponent(store, node, node, [0], conf, on_event=events.append), store, events


def test_energy_objective_lowers_the_limit_until_the_slowdown_budget(tmp_path: Path) -> None:
    node = Node()
    tuner, store, events = make(tmp_path, node, max_slowdown=0.03, tune_batch=False)
    drive(node, tuner, store, 300)
    # t(p) / t(400) >= 0.97 needs p >= 400 x 0.97 ** (1 / 0.3) = 361 W: it stops at the lowest 15 W step above
    assert 355.0 <= node.limit_w <= 385.0
    assert min(node.set_calls) >= 355.0
    assert [e["kind"] for e in events][:2] == ["job", "reference"]
    samples = {s[0]: s[2] for s in tuner.samples()}
    assert samples["gputuned_tuner_goodput_ratio"] >= 0.97 - 0.005


def test_throughput_objective_keeps_the_limit_at_its_maximum(tmp_path: Path) -> None:
    node = Node(limit_w=300.0)
    tuner, store, _ = make(tmp_path, node, objective="throughput", tune_batch=False)
    drive(node, tuner, store, 120)
    assert node.limit_w == 400.0


def test_kill_switch_refuses_every_change(tmp_path: Path) -> None:
    node = Node()
    (tmp_path / "tuner.pause").write_text("x")
    tuner, store, events = make(tmp_path, node)
    drive(node, tuner, store, 120)
    assert node.set_calls == [] and node.sent == []
    assert {e["reason"] for e in events if e["kind"] == "refused"} == {"paused"}
    assert tuner.guard.interventions["paused"] > 0


def test_out_of_memory_batch_is_never_proposed_again(tmp_path: Path) -> None:
    node = Node(oom_from=128)
    tuner, store, events = make(tmp_path, node, objective="throughput")
    drive(node, tuner, store, 600)
    doubled = [d["batch_size"] for d in node.sent if d["batch_size"] >= 128]
    assert doubled == [128]  # tried once, refused by the job, then the guard's ceiling holds
    assert tuner.guard.oom_ceiling == 128
    assert any(e["kind"] == "nack" for e in events)


def test_a_batch_size_the_job_refuses_is_not_undone_as_if_it_had_been_made(tmp_path: Path) -> None:
    # larger batches are faster here up to the job's largest (256): the climber doubles to it,
    # is refused above it, and must keep 256 (before, the refusal read as a flat probe: it looked
    # one step further, was refused again and then halved twice a batch that had never moved)
    node = Node(max_batch=256)
    tuner, store, events = make(tmp_path, node, objective="throughput")
    drive(node, tuner, store, 600)
    assert any(e["kind"] == "nack" for e in events)
    assert node.batch == 256 and min(d["batch_size"] for d in node.sent) >= 128
    assert [d["batch_size"] for d in node.sent].count(512) == 1


def test_a_harmful_move_of_both_knobs_is_rolled_back_whole_even_as_their_first_change(tmp_path: Path) -> None:
    # a chooser that lowers the limit and halves the batch at every decision: here that costs
    # 8% goodput, beyond the 3% budget. The batch is acknowledged a tick after the limit moved;
    # both must come back, the first time and every time (before, the guard had no value to
    # restore for a knob's first change, and watched only the last knob of a move)
    node = Node()
    store = Store(100)
    conf = TuningConfig(objective="energy_slowdown", interval_s=5.0)
    tuner = TuningComponent(store, node, node, [0], conf, chooser=lambda obs: move(-1, -1))  # type: ignore[arg-type]
    drive(node, tuner, store, 120)
    assert tuner.guard.rollbacks >= 2
    assert node.batch == 64 and node.limit_w == 400.0
    assert min(d["batch_size"] for d in node.sent) == 32 and min(node.set_calls) >= 385.0


def test_batch_moves_go_through_the_actuator_which_restores_them(tmp_path: Path) -> None:
    node = Node()
    tuner, store, events = make(tmp_path, node, objective="throughput")
    drive(node, tuner, store, 200)
    assert node.batch > 64  # larger batches are faster here: the climber keeps one
    sent = len(node.sent)
    tuner.stop()  # the actuator (a knob like the others) gives the job its batch size back, not the tuner
    assert len(node.sent) == sent


def test_a_job_that_leaves_gets_its_gpus_restored_and_the_next_one_a_fresh_start(tmp_path: Path) -> None:
    node = Node()
    tuner, store, events = make(tmp_path, node, tune_batch=False)
    drive(node, tuner, store, 100)
    assert node.limit_w < 400.0
    node.connected = False
    drive(node, tuner, store, 5)
    assert node.restored == [0] and node.limit_w == 400.0
    assert [e["kind"] for e in events if e["kind"] in ("job_gone", "restore")] == ["job_gone", "restore"]
    node.connected = True
    drive(node, tuner, store, 60)
    assert [e["kind"] for e in events].count("reference") == 2
    assert node.limit_w < 400.0


def test_climber_probes_a_batch_size_and_undoes_a_bad_one() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    obs = np.zeros(BASE_OBS_DIM, dtype=np.float32)
    obs[0] = 0.8  # limit share; goodput exactly at budget: hold the power
    obs[7] = -0.03
    assert c(obs) == move(0, 0)
    first = c(obs)
    assert first in (move(0, +1), move(0, -1))
    worse = obs.copy()
    worse[8] = 0.2  # energy per sample 20% up: undo
    worse[15] = first % 3 - 1  # the batch move was made
    undo = c(worse)
    assert undo == move(0, -(first % 3 - 1))


def test_make_chooser_reads_a_numpy_policy(tmp_path: Path) -> None:
    from gputuned.tuner.decision.policy_numpy import NumpyPolicy

    w = [np.zeros((N_ACTIONS, SIM_OBS_DIM))]
    b = [np.eye(N_ACTIONS)[7] * 5.0]
    path = tmp_path / "p.npz"
    NumpyPolicy(w, b).save(path)
    chooser = make_chooser("learned", path, "energy_slowdown", 0.03)
    assert isinstance(chooser, LearnedChooser) and chooser(np.zeros(BASE_OBS_DIM)) == 7
    NumpyPolicy([np.zeros((7, 56))], [np.zeros(7)]).save(tmp_path / "zeus.npz")
    with pytest.raises(ValueError, match="expects 56 observations"):
        make_chooser("learned", tmp_path / "zeus.npz", "energy", 0.1)
    assert isinstance(make_chooser("auto", tmp_path / "zeus.npz", "energy", 0.1), ClimbChooser)
    NumpyPolicy([np.zeros((9, SIM_OBS_DIM))], [np.zeros(9)]).save(tmp_path / "no_clocks.npz")  # moves without clocks
    with pytest.raises(ValueError, match="among 9 moves"):
        make_chooser("learned", tmp_path / "no_clocks.npz", "energy", 0.1)
    assert isinstance(make_chooser("auto", tmp_path / "no_clocks.npz", "energy", 0.1), ClimbChooser)
    assert isinstance(make_chooser("climber", path, "energy", 0.1), ClimbChooser)
    with pytest.raises(ValueError, match="tuner.objective"):
        TuningConfig(objective="speed")
    with pytest.raises(ValueError, match="tuner.policy"):
        TuningConfig(policy="greedy")
    assert TuningConfig(policy="climber").chooser_kind() == ("climber", None)
    assert TuningConfig(policy=str(path)).chooser_kind() == ("learned", path)


def test_the_learned_policy_reads_the_climbers_proposal_and_its_move_is_applied(tmp_path: Path) -> None:
    from gputuned.tuner.decision.policy_numpy import NumpyPolicy

    # a linear policy doing what the adviser proposes: the logit of move g is -|proposal - g|^2 (+ a constant)
    grid = np.array([decode(i) for i in range(N_ACTIONS)], dtype=float)
    w = np.zeros((N_ACTIONS, SIM_OBS_DIM))
    w[:, BASE_OBS_DIM:] = 2.0 * grid
    path = tmp_path / "follow.npz"
    NumpyPolicy([w], [-(grid ** 2).sum(axis=1)]).save(path)
    follow = make_chooser("learned", path, "energy_slowdown", 0.03)
    twin = ClimbChooser("energy_slowdown", 0.03)
    obs = np.zeros(BASE_OBS_DIM, dtype=np.float32)
    obs[0], obs[7] = 1.0, 0.05
    for _ in range(5):
        assert follow(obs) == twin(obs)

    follow = make_chooser("learned", path, "energy_slowdown", 0.03)
    node = Node()
    seen: list[np.ndarray] = []
    store = Store(100)

    def recorder(o: np.ndarray) -> int:
        seen.append(np.array(o))  # the observation is a float32 array.array
        return follow(o)

    conf = TuningConfig(objective="energy_slowdown", interval_s=5.0, tune_batch=False)
    tuner = TuningComponent(store, node, node, [0], conf, chooser=recorder)  # type: ignore[arg-type]
    drive(node, tuner, store, 200)
    assert node.limit_w < 400.0 and all(o.shape == (BASE_OBS_DIM,) for o in seen)
    moved = [i for i in range(1, len(seen)) if seen[i][14] == -1.0]  # the observation carries the move just made
    assert moved and all(seen[i - 1][0] > seen[i][0] for i in moved)


def test_default_config_loads_the_packaged_learned_policy() -> None:
    from gputuned.tuner.decision import choosers as tp
    from gputuned.tuner.decision.policy_numpy import NumpyPolicy

    chooser = make_chooser("auto", None, "energy_slowdown", 0.03)
    shipped = NumpyPolicy.load(tp.PACKAGED_SIM_POLICY)
    fits = shipped.obs_dim == SIM_OBS_DIM and shipped.n_actions == N_ACTIONS
    if tp.LEARNED_BY_DEFAULT and fits:
        assert isinstance(chooser, LearnedChooser)
        assert make_chooser("learned", None, "throughput", 0.03).name == "learned"
    else:  # a shipped policy trained for other observations or moves is never used: auto climbs
        assert isinstance(chooser, ClimbChooser)
    if not fits:
        with pytest.raises(ValueError, match="policy"):
            make_chooser("learned", None, "throughput", 0.03)


def test_climber_at_the_lowest_limit_goes_on_to_batch_probes() -> None:
    c = ClimbChooser("energy_slowdown", 0.03)
    obs = np.zeros(BASE_OBS_DIM, dtype=np.float32)
    obs[0], obs[7] = 0.25, 0.2  # goodput far above budget: it wants lower limits
    assert c(obs) == move(-1, 0)
    moves = [c(obs) for _ in range(3)]  # the limit did not move: its minimum is reached
    assert moves[0] == move(0, 0)
    assert move(0, +1) in moves or move(0, -1) in moves


def test_climber_looks_one_step_further_when_a_probe_is_flat_and_undoes_both() -> None:
    c = ClimbChooser("throughput", 0.03)
    obs = np.zeros(BASE_OBS_DIM, dtype=np.float32)
    obs[0] = 1.0  # at the maximum limit: throughput holds the power and probes the batch
    moves = [c(obs) for _ in range(2)]
    assert moves[-1] == move(0, +1)
    flat = obs.copy()
    flat[7], flat[15] = -0.01, +1  # 2x: 1% less goodput, within noise: look at 4x before giving up
    assert c(flat) == move(0, +1)
    worse = flat.copy()
    worse[7] = -0.05  # 4x is worse too: undo both doublings, one per decision
    assert c(worse) == move(0, -1)
    assert c(obs) == move(0, -1)
    better = flat.copy()
    c2 = ClimbChooser("throughput", 0.03)
    [c2(obs) for _ in range(2)]
    c2(flat)
    better[7] = 0.03  # 4x pays: kept
    assert c2(better) == move(0, 0)


def test_climber_keeps_doubling_while_it_pays_and_a_refused_probe_is_not_undone() -> None:
    c = ClimbChooser("throughput", 0.03)
    obs = np.zeros(BASE_OBS_DIM, dtype=np.float32)
    obs[0] = 1.0
    assert [c(obs) for _ in range(2)][-1] == move(0, +1)
    for k in range(1, 5):  # each doubling gains 5%: the next is tried, however many came before
        up = obs.copy()
        up[7], up[15] = 0.05 * k, +1
        assert c(up) == move(0, 0)
        held = up.copy()
        held[15] = 0
        assert [c(held) for _ in range(2)] == [move(0, 0), move(0, +1)]  # settles, then probes
    refused = held.copy()  # the job's largest batch: the move was not made, so nothing to undo
    assert all(c(refused) != move(0, -1) for _ in range(6))


def test_a_two_knob_move_is_made_whole_or_not_at_all(tmp_path: Path) -> None:
    node = Node(limit_w=250.0, max_batch=128)
    store = Store(100)
    conf = TuningConfig(objective="throughput", interval_s=5.0)
    tuner = TuningComponent(store, node, node, [0], conf, chooser=lambda obs: move(+1, +1))  # type: ignore[arg-type]
    drive(node, tuner, store, 120)
    # 64 -> 128 with +15 W; 128 -> 256 refused by the job (not memory) as it is asked (this node
    # answers at once), so that move's power half is not made either; from then on the batch half
    # is refused by the tuner and the power half is not made alone
    assert [d["batch_size"] for d in node.sent] == [128, 256]
    assert node.set_calls == [265.0]
    assert tuner.guard.oom_ceiling is None
