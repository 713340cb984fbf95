"""The tuner turns memory clocks where a GDDR part lists candidates under its top one: the climber
locks a lower memory clock only while energy per sample falls within the budget, the daemon's lock
goes through the actuator and comes back on job leave, and HBM or pre-Ampere parts never see it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gputuned.collectors.nvml import open_gpus, open_nvml
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import ScriptedBackend
from gputuned.daemon.actuation.actuator import Actuator
from gputuned.daemon.actuation.config import ActuationConfig
from gputuned.daemon.actuation.statefile import StateFile
from gputuned.daemon.app.tuning import StoreNode
from gputuned.daemon.core.store import Store
from gputuned.tuner.decision.kernel import GPULimits
from gputuned.tuner.decision.moves import MEMORY_DOWN, memory_candidates, memory_target
from gputuned.tuner.sim_env import SimNodeEnv

#: A GDDR6 Ampere part whose NVML lists 8001, 7601, 5001, 810 and 405 MHz (test data, not shipped).
A6000 = str(Path(__file__).resolve().parents[1] / "data" / "rtx_a6000_memory_clocks.toml")


def test_candidates_leave_out_idle_level_clocks_and_single_clock_parts() -> None:
    assert memory_candidates([8001, 7601, 5001, 810, 405]) == (8001, 7601, 5001)
    assert memory_candidates([7251, 405]) == () and memory_candidates([1593]) == () and memory_candidates([]) == ()
    clocks = (8001, 7601, 5001)
    assert memory_target(None, -1, clocks) == 7601 and memory_target(7601, -1, clocks) == 5001
    assert memory_target(5001, -1, clocks) == 5001 and memory_target(7601, +1, clocks) is None


def _climb(profile: str, workload: str, steps: int, budget: float = 0.05) -> tuple[SimNodeEnv, list[dict[str, Any]]]:
    """The climber alone on one simulated GPU; the memory moves it made, with what the next interval measured."""
    env = SimNodeEnv(profiles=(profile,), workloads=(workload,), gpus=(1,), horizon=steps, noise=0.0)
    env.reset(seed=0, options={"objective": "energy_slowdown", "max_slowdown": budget})
    made = []
    for _ in range(steps):
        action, lock = env.suggested, env.kernel.mem_lock
        _, _, _, _, info = env.step(action)
        if action >= MEMORY_DOWN and env.kernel.mem_lock != lock:
            made.append({"action": action, "lock": env.kernel.mem_lock, "eps": info["energy_per_sample_ratio"],
                         "goodput": info["goodput_ratio"]})
    return env, made


def test_the_climber_keeps_a_lower_memory_clock_only_while_it_saves_within_the_budget() -> None:
    env, made = _climb(A6000, "librispeech-deepspeech2", 40)  # its batch probes spent, the memory clock is walked
    assert [m["lock"] for m in made] == [7601, 5001]  # each step saved energy per sample within the 5% budget
    assert made[1]["eps"] < made[0]["eps"] and all(m["goodput"] >= 0.95 for m in made)
    assert env.backend.devices[0].locked_memory_clocks_mhz == (5001, 5001)  # the lowest candidate, never 810 MHz
    env, made = _climb(A6000, "gpt2-small-openwebtext", 40)
    assert [(m["action"], m["lock"]) for m in made] == [(MEMORY_DOWN, 7601), (MEMORY_DOWN + 1, None)]  # undone
    assert made[0]["eps"] > made[1]["eps"] and made[0]["goodput"] < 0.95  # 7601 MHz cost energy and the budget
    assert env.backend.devices[0].locked_memory_clocks_mhz is None


def test_a_memory_clock_the_operator_pinned_is_never_moved() -> None:
    """The operator's `gputuned set` pin on locked_memory_clocks holds against the walk (the kernel's pins, as for every knob)."""
    env = SimNodeEnv(profiles=(A6000,), workloads=("librispeech-deepspeech2",), gpus=(1,), horizon=40, noise=0.0)
    env.reset(seed=0, options={"objective": "energy_slowdown", "max_slowdown": 0.05})
    env.kernel.node.pinned = lambda knob, target: knob == "memory_clock"  # type: ignore[attr-defined]
    for _ in range(40):
        env.step(env.suggested)
    assert env.kernel.mem_lock is None and env.backend.devices[0].locked_memory_clocks_mhz is None


@pytest.mark.parametrize("profile", ["a100", "h100", "v100", "p100", "a40", "rtx6000"])
def test_memory_clocks_never_move_on_shipped_profiles(profile: str) -> None:
    env, made = _climb(profile, "movielens-ncf", 12)
    assert env.kernel.mem_clocks == () and made == [] and env.backend.devices[0].locked_memory_clocks_mhz is None


def test_pre_ampere_parts_with_candidates_are_not_locked(tmp_path: Path) -> None:
    turing = tmp_path / "turing.toml"
    turing.write_text(Path(A6000).read_text().replace('architecture = "ampere"', 'architecture = "turing"'))
    env, made = _climb(str(turing), "movielens-ncf", 12)
    assert env.kernel.mem_clocks == () and made == []


def test_the_daemon_locks_memory_through_the_actuator_and_restores_on_job_leave(
        sim_node: Callable[..., ScriptedBackend], tmp_path: Path) -> None:
    backend = sim_node({"profile": A6000, "gpus": 1})
    gpus = open_gpus(open_nvml("sim", sim_nvml)[0])
    act = Actuator(gpus, ActuationConfig(), StateFile(tmp_path / "state.json"))
    act.start()
    changes: list[Any] = []
    act.add_change_hook(changes.append)
    mem = memory_candidates(act.memory_clocks(0))
    assert mem == (8001, 7601, 5001)
    node = StoreNode(Store(10), act, None, "j", [(GPULimits("0", 100.0, 300.0, (1740, 1725), mem), (), 1.74e9)], 0.0)
    assert node.set_memory_clock("0", 7601) and backend.devices[0].locked_memory_clocks_mhz == (7601, 7601)
    assert node.set_memory_clock("0", None) and backend.devices[0].locked_memory_clocks_mhz == (405, 8001)
    assert node.set_memory_clock("0", 5001)
    assert [(c.origin, c.knob, list(c.new)) for c in changes] == [
        ("tuner", "locked_memory_clocks", [7601, 7601]), ("tuner", "locked_memory_clocks", [405, 8001]),
        ("tuner", "locked_memory_clocks", [5001, 5001])]
    act.restore_gpu(0)  # what the tuner does when the job leaves: the recorded original (unlocked) comes back
    assert backend.devices[0].locked_memory_clocks_mhz is None
    off = Actuator(gpus, ActuationConfig(knobs=["power_limit", "locked_sm_clocks"]), StateFile(tmp_path / "off.json"))
    assert off.memory_clocks(0) == []  # the knob not enabled: the tuner is offered no memory clock
