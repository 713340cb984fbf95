"""The plugin on FSDP2 (fully_shard), compiled and clipped models: communication time and gradient statistics.

Two gloo ranks on the CPU (tests/trainer_plugin/sharded_worker.py) train a tiny model through
the plugin; each case's squared gradient norms (this rank's and the averaged gradient's), their
folded grad_norm and noise scale are checked against the same quantities computed by hand on an
unwrapped copy of the model.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gputuned.trainer_plugin.plugin import TrainingPlugin
from gputuned.trainer_plugin.probes import LocalProbe

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("sharded_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Each rank's results of every case (one torchrun launch for the module)."""
    out = tmp_path_factory.mktemp("sharded") / "out.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(_free_port()), str(WORKER), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(Path(f"{out}.rank{r}").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("case, probe", [("fsdp", "ShardedProbe"), ("ddp_compiled", "DDPProbe"),
                                         ("compiled_ddp", "DDPProbe")])
def test_sharded_and_compiled_models_report_comm_time_and_the_hand_computed_gradient_statistics(ranks, case, probe):
    for rank, res in enumerate(ranks):
        r = res[case]
        assert r["probe"] == probe
        assert r["comm_time_s"] > 0, (rank, r)
        assert r["bytes"] > 0
        assert r["local_sq"] == pytest.approx(r["expected_local_sq"], rel=1e-5), (rank, r)
        assert r["global_sq"] == pytest.approx(r["expected_global_sq"], rel=1e-5), (rank, r)
        assert r["local_sq"] != pytest.approx(r["global_sq"], rel=1e-2)  # the two really differ
        assert r["grad_norm"] == pytest.approx(r["expected_grad_norm"], rel=1e-5)
        if r["expected_noise_scale"] is not None:
            assert r["noise_scale"] == pytest.approx(r["expected_noise_scale"], rel=1e-4), (rank, r)
        else:
            assert r["noise_scale"] is None
    assert ranks[0][case]["global_sq"] == pytest.approx(ranks[1][case]["global_sq"], rel=1e-6)
    assert ranks[0][case]["local_sq"] != pytest.approx(ranks[1][case]["local_sq"], rel=1e-3)


def test_clipping_applies_the_unscaled_norm_and_the_plugin_reports_the_unclipped_one(ranks):
    for res in ranks:
        r = res["clipped"]
        assert r["loss_scale"] >= 2 ** 15  # fp16 with a real loss scale: clipping the scaled grads would differ
        assert r["clip_total_norm"] > 0.05
        assert r["applied_norms"] == pytest.approx([0.05, 0.05], rel=1e-4)
        assert r["plugin_grad_norm"] == pytest.approx(r["clip_total_norm"], rel=1e-4)


def test_a_plain_compiled_model_gives_gradient_norms_without_communication():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    ref = torch.nn.Sequential(torch.nn.Linear(8, 4))
    ref.load_state_dict(model.state_dict())
    compiled = torch.compile(model, backend=os.environ.get("GPUTUNED_TEST_COMPILE_BACKEND", "inductor"))
    plugin = TrainingPlugin(job="t", batch_size=8, connect=False, norm_every=1)
    plugin.instrument(compiled)
    assert isinstance(plugin._probe, LocalProbe)
    plugin._last_report = float("inf")  # one interval: no report while compiling
    x, y = torch.randn(8, 8), torch.randint(0, 4, (8,))
    with plugin.step():
        F.cross_entropy(compiled(x), y).backward()
    F.cross_entropy(ref(x), y).backward()
    expected = sum(float((p.grad.double() ** 2).sum()) for p in ref.parameters()) ** 0.5
    stats = plugin.interval_stats()
    assert stats["grad_norm"] == pytest.approx(expected, rel=1e-5)
    assert stats["comm_time_s"] == 0.0
    assert "grad_noise_scale" not in stats


def test_instrument_refuses_a_compression_hook_on_a_model_without_ddp():
    plugin = TrainingPlugin(job="t", batch_size=8, connect=False)
    with pytest.raises(ValueError, match="DistributedDataParallel"):
        plugin.instrument(torch.nn.Linear(2, 2), "topk")
