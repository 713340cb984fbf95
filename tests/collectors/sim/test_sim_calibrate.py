"""The calibration command is repeatable and fits the Zeus traces on held-out rows."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from gputuned.collectors.sim.calibrate import fit_noise_scale
from gputuned.collectors.sim.workload import load_calibration, load_workload
from gputuned.daemon.commands.cli import main

CANDIDATES = [
    Path(str(resources.files("gputuned.tuner") / "data" / "zeus-nsdi23")),
    Path("/work/shared/data/zeus-nsdi23"),
]
DATA = next((p for p in CANDIDATES if (p / "summary_power_a40.csv").is_file()), None)


@pytest.mark.skipif(DATA is None, reason="Zeus traces not present")
def test_calibrate_command_reproduces_shipped_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cal.json"
    assert main(["sim", "calibrate", "--data", str(DATA), "--out", str(out), "--gpu", "p100"]) == 0
    doc = json.loads(out.read_text())
    shipped = load_calibration()
    assert set(doc["gpus"]) == {"p100-pcie-16gb"}
    err = doc["errors"]["p100-pcie-16gb"]
    assert err["heldout_rows"] > 30
    assert err["epoch_time_median"] < 0.05 and err["power_median"] < 0.05
    assert err == shipped["errors"]["p100-pcie-16gb"]
    assert doc["gpus"]["p100-pcie-16gb"] == shipped["gpus"]["p100-pcie-16gb"]
    assert doc["workloads"]["squad-bert"]["gpus"]["p100-pcie-16gb"] == (
        shipped["workloads"]["squad-bert"]["gpus"]["p100-pcie-16gb"])
    assert "time median" in capsys.readouterr().out


def test_shipped_zeus_holdout_medians_within_3_percent() -> None:
    """The shipped fit's held-out medians (seed 0) stay within 3 % on every traced GPU."""
    errors = load_calibration()["errors"]
    assert set(errors) == {"a40", "quadro-rtx-6000", "p100-pcie-16gb"}
    for gpu, err in errors.items():
        assert err["heldout_rows"] > 50, gpu
        assert err["epoch_time_median"] <= 0.03 and err["power_median"] <= 0.03, (gpu, err)


def test_calibrate_rejects_bad_data_dir(tmp_path: Path) -> None:
    assert main(["sim", "calibrate", "--data", str(tmp_path / "nope")]) == 2
    assert main(["sim", "calibrate", "--data", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_noise_scale_fit_recovers_pollux_curve(tmp_path: Path) -> None:
    wl = load_workload("imagenet-resnet50")
    bn_true, e0 = 700.0, 20.0
    lines = ["dataset,network,batch_size,optimizer,learning_rate,run,target_metric,target_epoch"]
    for b in (64, 128, 256, 512, 1024, 2048):
        epochs = e0 * (bn_true + b) / (bn_true + wl.default_batch_size)
        for run in range(3):
            lines.append(f"imagenet,resnet50,{b},adadelta,1e-3,{run},0.65,{epochs:.4f}")
    (tmp_path / "summary_train.csv").write_text("\n".join(lines) + "\n")
    fit = fit_noise_scale(tmp_path, wl)
    assert fit is not None
    assert fit[0] == pytest.approx(bn_true, rel=0.05) and fit[1] == pytest.approx(e0, rel=0.01)
    assert np.isfinite(fit[0])
