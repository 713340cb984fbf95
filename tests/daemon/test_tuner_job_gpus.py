"""The tuner acts only on the GPUs the job's processes run on, and Perseus reads each rank's true GPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from gputuned.collectors.attribution import Attribution, RankGPU
from gputuned.daemon.app.tuning import COMPUTE_SECONDS, StoreNode, TuningComponent
from gputuned.daemon.core.store import Store
from gputuned.tuner.decision.config import TuningConfig
from gputuned.tuner.decision.kernel import GPULimits

_spec = importlib.util.spec_from_file_location("loop_tuning_node", Path(__file__).with_name("test_loop_tuning.py"))
assert _spec is not None and _spec.loader is not None
_mod = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _mod
_spec.loader.exec_module(_mod)
Node = _mod.Node  # the one-GPU job node of the tuner's loop tests


class FourGPUNode(Node):  # type: ignore[misc, valid-type]
    """Node's job on a 4-GPU host: every GPU's series published, each set call recorded by GPU."""

    touched: set[int]

    def set_power_limit(self, gpu: int, watts: float, origin: str = "operator") -> Any:
        self.touched.add(gpu)
        return super().set_power_limit(gpu, watts, origin)

    def step(self, store: Store, t: float, dt: float) -> None:
        super().step(store, t, dt)
        one = {(name, v) for name, _, v in store.latest() if name.startswith("gputuned_gpu_")}
        store.publish("gpu", t, [(name, (("gpu", str(i)), ("uuid", f"GPU-{i}")), v) for i in range(4) for name, v in one])


def test_a_two_rank_job_on_a_four_gpu_node_has_only_its_two_gpus_tuned(tmp_path: Path) -> None:
    node = FourGPUNode()
    node.touched = set()
    placed = Attribution([RankGPU("j", 0, 10, 3, "GPU-3", "pid"), RankGPU("j", 1, 11, 1, "GPU-1", "pid")],
                         {"j": {1, 3}})
    store = Store(100)
    conf = TuningConfig(objective="energy_slowdown", interval_s=5.0, chooser="climber", pause_file=tmp_path / "p",
                        tune_clocks=False)
    tuner = TuningComponent(store, node, node, [0, 1, 2, 3], conf, placement=lambda: placed)
    for _ in range(120):
        node.t += 1.0
        node.step(store, node.t, 1.0)
        tuner.tick(node.t)
    assert node.set_calls, "the tuner moved the power limit"
    assert node.touched == {1, 3}
    assert tuner.node is not None and [g.key for g in tuner.node.gpus()] == ["1", "3"]


def test_a_job_on_no_gpu_by_the_process_lists_is_not_tuned(tmp_path: Path) -> None:
    node = FourGPUNode()
    node.touched = set()
    store = Store(100)
    conf = TuningConfig(objective="energy_slowdown", interval_s=5.0, chooser="climber", pause_file=tmp_path / "p")
    tuner = TuningComponent(store, node, node, [0, 1, 2, 3], conf, placement=Attribution)
    for _ in range(30):
        node.t += 1.0
        node.step(store, node.t, 1.0)
        tuner.tick(node.t)
    assert tuner.node is None and not node.touched


def test_perseus_reads_each_ranks_gpu_from_the_placement_not_the_reporting_order() -> None:
    store = Store(10)
    store.publish("trainer", 1.0, [(COMPUTE_SECONDS, (("job", "j"), ("rank", "0")), 0.20),
                                   (COMPUTE_SECONDS, (("job", "j"), ("rank", "1")), 0.25)])
    gpus = [(GPULimits(str(i), 100.0, 400.0), (("gpu", str(i)),), 1.4e9) for i in (0, 2)]
    node = StoreNode(store, None, None, "j", gpus, 1.0, rank_gpus=lambda: {0: 2, 1: 0})  # type: ignore[arg-type]
    assert [(t.rank, t.gpu) for t in node.rank_timings()] == [(0, "2"), (1, "0")]
    node.rank_gpus = lambda: {0: 2, 1: 3}  # rank 1 on a GPU not tuned here: Perseus stays out
    assert node.rank_timings() == []
