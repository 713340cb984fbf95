"""The climbing tuner runs without numpy: float32 observations, numpy's means and policy shapes read without it."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from array import array
from pathlib import Path

import numpy as np
import pytest

from gputuned.tuner.decision.moves import N_ACTIONS
from gputuned.tuner.decision.observe import BASE_OBS_DIM, SIM_OBS_DIM, LiveObserver, mean
from gputuned.tuner.decision.policy_file import policy_shape
from gputuned.tuner.decision.policy_numpy import PACKAGED_POLICY, NumpyPolicy


def test_mean_is_numpys_to_the_bit() -> None:
    rng = random.Random(0)
    for n in [*range(1, 40), 127, 128, 129, 255, 256, 257, 1000, 1031]:
        v = [rng.uniform(-1.0, 1.0) * 10.0 ** rng.randint(-3, 6) for _ in range(n)]
        assert mean(v) == float(np.mean(v)), n
    assert str(mean([-0.0])) == str(float(np.mean([-0.0]))) == "0.0"
    assert math.isnan(mean([]))  # numpy: NaN (and a warning)


def test_the_observation_is_numpys_clipped_float32() -> None:
    obs = LiveObserver(True, 0.05).observe(
        limit_share=0.7, power_w=1e12, limit_w=300.0, max_w=700.0, sm_ratio=0.1 + 1e-9, capped=True, batch=64, b0=32,
        throughput_ratio=0.93, goodput_ratio=float("nan"), eps_ratio=float("inf"), eff=-40.0, oom=False)
    assert isinstance(obs, array) and obs.typecode == "f" and len(obs) == BASE_OBS_DIM
    values = [0.7, 1e12 / 300.0, 1e12 / 700.0, 0.1 + 1e-9, 1.0, 0.25, 0.93 - 1.0, float("nan"), 4.0, -41.0]
    expected = np.clip(np.asarray(values, dtype=np.float32), -5.0, 5.0)
    np.testing.assert_array_equal(np.asarray(obs)[:len(values)], expected)


def test_a_policy_files_shape_is_read_from_its_headers(tmp_path: Path) -> None:
    pol = NumpyPolicy([np.zeros((64, SIM_OBS_DIM)), np.zeros((N_ACTIONS, 64))], [np.zeros(64), np.zeros(N_ACTIONS)])
    pol.save(tmp_path / "p.npz")
    assert policy_shape(tmp_path / "p.npz") == (pol.obs_dim, pol.n_actions) == (SIM_OBS_DIM, N_ACTIONS)
    shipped = NumpyPolicy.load(PACKAGED_POLICY)
    assert policy_shape(PACKAGED_POLICY) == (shipped.obs_dim, shipped.n_actions)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError):
        policy_shape(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        policy_shape(tmp_path / "none.npz")


CLIMB = """
import sys
from gputuned.daemon.app.tuning import TuningComponent
from gputuned.tuner.decision.choosers import ClimbChooser, make_chooser
from gputuned.tuner.decision.observe import LiveObserver
chooser = make_chooser(sys.argv[1], None if sys.argv[2] == "-" else sys.argv[2], "energy_slowdown", 0.05)
obs = LiveObserver(True, 0.05)
for k in range(6):
    chooser(obs.observe(limit_share=1.0 - 0.05 * k, power_w=300.0, limit_w=400.0, max_w=700.0, sm_ratio=0.9, capped=k > 2,
                        batch=64, b0=64, throughput_ratio=1.0, goodput_ratio=1.0 - 0.01 * k, eps_ratio=1.0 - 0.02 * k,
                        eff=1.0, oom=False))
print(type(chooser).__name__, "numpy" in sys.modules)
"""


@pytest.mark.parametrize("kind", ["auto", "climber"])
def test_the_climbing_chooser_imports_no_numpy(kind: str) -> None:
    r = subprocess.run([sys.executable, "-c", CLIMB, kind, "-"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ClimbChooser", "False"]


def test_the_learned_policy_imports_numpy_when_chosen(tmp_path: Path) -> None:
    NumpyPolicy([np.zeros((N_ACTIONS, SIM_OBS_DIM))], [np.arange(N_ACTIONS, dtype=float)]).save(tmp_path / "p.npz")
    r = subprocess.run([sys.executable, "-c", CLIMB, "learned", str(tmp_path / "p.npz")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["LearnedChooser", "True"]
