"""``backend = "auto"`` simulates only where no NVIDIA device exists, and then says so everywhere.

The hardware probe reads a fake device tree under tmp_path. NVML cannot be opened on this
machine (no driver), which is exactly the case of a GPU host whose driver failed to load.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from testkit import config

from gputuned.collectors.device import DriverMissingError
from gputuned.collectors.hardware import nvidia_hardware
from gputuned.collectors.nvml import open_nvml
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.daemon.app.components import attach_configured
from gputuned.daemon.app.daemon import Daemon, setup_gpus
from gputuned.daemon.app.runtime import node_status
from gputuned.dashboards.rules import RULES_DIR


def _tree(root: Path, *files: tuple[str, str]) -> Path:
    for rel, text in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def no_nvml() -> None:
    """Skip where a real NVML opens (a GPU machine): the case under test needs it to fail."""
    try:
        nvml, _ = open_nvml("nvml")
    except DriverMissingError:
        return
    nvml.nvmlShutdown()
    pytest.skip("NVML opens on this machine")


def _auto_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    return config(gpu={"backend": "auto"}, sim={"gpus": 2},
                  daemon={"state_file": str(tmp_path / "state.json")},
                  control={"socket_path": str(tmp_path / "control.sock")},
                  collectors={"host": {"enabled": False}, "infiniband": {"enabled": False}})


def test_probe_finds_device_nodes_driver_dir_and_nvidia_pci_functions(tmp_path: Path) -> None:
    assert nvidia_hardware(tmp_path) == []
    _tree(tmp_path, ("dev/nvidiactl", ""), ("dev/null", ""), ("sys/bus/pci/devices/0000:00:02.0/vendor", "0x8086\n"),
          ("sys/bus/pci/devices/0000:00:03.0/vendor", "garbage\n"))
    assert nvidia_hardware(tmp_path) == []  # the control node alone, an Intel GPU, an unreadable id: no NVIDIA GPU
    _tree(tmp_path, ("dev/nvidia0", ""), ("dev/nvidia1", ""), ("proc/driver/nvidia/version", "NVRM"),
          ("sys/bus/pci/devices/0000:17:00.0/vendor", "0x10de\n"))
    assert nvidia_hardware(tmp_path) == ["/dev/nvidia0", "/dev/nvidia1", "/proc/driver/nvidia", "PCI 0000:17:00.0"]
    pci_only = _tree(tmp_path / "nodriver", ("sys/bus/pci/devices/0000:3b:00.0/vendor", "0x10de\n"))
    assert nvidia_hardware(pci_only) == ["PCI 0000:3b:00.0"]  # the kernel module never loaded


def test_auto_on_a_gpu_host_without_nvml_serves_the_gpus_down_and_simulates_nothing(tmp_path: Path, no_nvml: None) -> None:
    root = _tree(tmp_path / "root", ("dev/nvidia0", ""))
    cfg = _auto_config(tmp_path)
    gpus = setup_gpus(cfg, root=root)
    assert (gpus.kind, gpus.devices, gpus.sim_backend) == ("none", [], None)
    assert isinstance(gpus.error, DriverMissingError)
    assert "/dev/nvidia0" in str(gpus.error) and "serving no simulated GPUs" in str(gpus.error)
    daemon = Daemon(cfg, gpus=gpus, serve=False)
    attach_configured(daemon)
    names = [c.name for c in daemon.components]
    assert "sim-job" not in names and "tuner" not in names
    daemon.tick()
    gpu_runner = next(r for r in daemon.loop.runners if r.name == "gpu")
    assert not gpu_runner.up
    text = daemon.renderer.render().decode()
    assert 'gputuned_collector_up{collector="gpu"} 0' in text
    assert "gputuned_gpu_info" not in text and "gputuned_gpu_up" not in text
    status = node_status(daemon)
    assert (status["backend"], status["simulated"]) == ("none", False)
    assert "/dev/nvidia0" in status["gpu_error"] and "/dev/nvidia0" in daemon.describe()
    assert "SIMULATED" not in daemon.describe()


def test_auto_on_a_host_without_nvidia_devices_runs_the_simulated_node_and_says_so(tmp_path: Path, no_nvml: None) -> None:
    root = _tree(tmp_path / "root", ("dev/null", ""), ("sys/bus/pci/devices/0000:00:02.0/vendor", "0x8086\n"))
    cfg = _auto_config(tmp_path)
    try:
        gpus = setup_gpus(cfg, root=root)
        assert gpus.kind == "sim" and len(gpus.devices) == 2 and gpus.error is None
        daemon = Daemon(cfg, gpus=gpus, serve=False)
        attach_configured(daemon)
        assert {"sim-job", "tuner"} <= {c.name for c in daemon.components}
        assert daemon.describe().startswith("SIMULATED GPU node (no NVIDIA driver or device on this host")
        daemon.tick()
        text = daemon.renderer.render().decode()
        info = [line for line in text.splitlines() if line.startswith("gputuned_gpu_info{")]
        assert len(info) == 2 and all('backend="sim"' in line for line in info)
        status = node_status(daemon)
        assert (status["backend"], status["simulated"], status["gpu_error"]) == ("sim", True, None)
        assert status["node"].startswith("SIMULATED")
    finally:
        sim_nvml.attach(None)


def test_the_simulated_gpus_alert_fires_on_a_simulated_node_only(promtool: str, tmp_path: Path) -> None:
    """promtool test rules: GputunedSimulatedGPUs fires for the node serving backend="sim", not the real one."""
    sim = 'instance="lab:9735", job="gputuned", gpu="0", driver_version="sim", backend="sim"'
    real = 'instance="n1:9735", job="gputuned", gpu="0", driver_version="550.54", backend="nvml"'
    found = re.search(r'alert: GputunedSimulatedGPUs\n.*?description: "([^"]*)"', (RULES_DIR / "hardware.yml").read_text(), re.S)
    assert found is not None
    spec = {
        "rule_files": [str(RULES_DIR / "hardware.yml")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": f"gputuned_gpu_info{{{sim}}}", "values": "1x10"},
                             {"series": f"gputuned_gpu_info{{{real}}}", "values": "1x10"}],
            "alert_rule_test": [{"eval_time": "5m", "alertname": "GputunedSimulatedGPUs", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "instance": "lab:9735", "backend": "sim"},
                "exp_annotations": {"summary": "lab:9735 serves simulated GPUs",
                                    "description": found.group(1)},
            }]}],
        }],
    }
    test_file = tmp_path / "simulated_test.yml"
    test_file.write_text(json.dumps(spec))  # JSON is valid YAML
    r = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
