"""Readings a GPU lacks are logged once for all GPUs, at info level where the generation explains it."""

from __future__ import annotations

import logging

import pytest

from gputuned.collectors import families as F
from gputuned.collectors.gpu import GPUCollector, gpu_list
from gputuned.collectors.nvml import open_gpus, open_nvml
from gputuned.collectors.sim import nvml as sim_nvml


def test_gpu_lists_fold_runs_of_indices() -> None:
    assert gpu_list([2]) == "gpu 2"
    assert gpu_list([3, 0, 1, 2]) == "gpus 0-3"
    assert gpu_list([0, 2, 5, 6, 7]) == "gpus 0, 2, 5-7"


@pytest.mark.parametrize("profile", ["a100", "v100"])
def test_four_gpus_without_gpm_log_one_info_line(sim_node, caplog: pytest.LogCaptureFixture, profile: str) -> None:
    sim_node({"profile": profile, "gpus": 4})
    nvml, _ = open_nvml("sim", sim_nvml)
    collector = GPUCollector(open_gpus(nvml), "550.54.15", "sim")
    with caplog.at_level(logging.DEBUG, logger="gputuned.collectors.gpu"):
        collector.collect()
        collector.collect()  # dropped readings are not read, nor logged, again
    gpm = [r for r in caplog.records if F.GPU_GR_ENGINE in r.getMessage()]
    assert [r.getMessage() for r in gpm] == [
        f"gpus 0-3 do not support {F.GPU_GR_ENGINE} (no GPM; Hopper and later have it); not read again"]
    assert gpm[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert not [r for r in caplog.records if "gpu 0 does not support" in r.getMessage()]
