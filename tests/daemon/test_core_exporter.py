"""The daemon serving /metrics: families, promtool lint, dcgm names, faults kept to one part."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict

import pytest
from testkit import config, http_get

from gputuned.collectors import families as F
from gputuned.daemon.app.daemon import Daemon, build_collectors, setup_gpus


def _parse(text: str) -> dict[str, list[str]]:
    """family/sample name -> list of label strings."""
    out: dict[str, list[str]] = defaultdict(list)
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})? ", line)
        assert m, line
        out[m.group(1)].append(m.group(2) or "")
    return out


@pytest.fixture
def daemon8(sim_node):
    backend = sim_node({"profile": "h100", "gpus": 8})
    cfg = config()
    d = Daemon(cfg, gpus=setup_gpus(cfg, backend))
    d.start()
    yield d
    d.stop()


def _scrape(d: Daemon) -> str:
    assert d.server is not None
    return http_get(d.server.url).decode()


def test_metrics_has_gpu_and_host_families(daemon8: Daemon) -> None:
    series = _parse(_scrape(daemon8))
    gpu_fams = [n for n, labs in series.items() if n.startswith("gputuned_gpu_") and len({re.search(r'gpu="(\d+)"', x).group(1) for x in labs}) == 8]
    assert len(gpu_fams) >= 20, gpu_fams
    host_net = [n for n in series if n.startswith(("gputuned_host_", "gputuned_infiniband_", "gputuned_peer_"))]
    assert len(host_net) >= 10, host_net
    assert 'gputuned_collector_up{collector="gpu"}' in _scrape(daemon8)


def test_promtool_check_metrics_prints_nothing(daemon8: Daemon, promtool: str) -> None:
    result = subprocess.run([promtool, "check", "metrics"], input=_scrape(daemon8), capture_output=True, text=True)
    assert result.stdout + result.stderr == ""
    assert result.returncode == 0


def test_dcgm_names_when_enabled(sim_node, promtool: str) -> None:
    backend = sim_node({"profile": "h100", "gpus": 2})
    cfg = config(exporter={"metric_names": "dcgm"})
    d = Daemon(cfg, gpus=setup_gpus(cfg, backend))
    d.start()
    try:
        text = _scrape(d)
    finally:
        d.stop()
    series = _parse(text)
    for name in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_SM_CLOCK",
                 "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_XID_ERRORS"):
        assert len(series[name]) == 2, name
    label = series["DCGM_FI_DEV_FB_USED"][0]
    for key in ("gpu=", "UUID=", "device=\"nvidia", "modelName=", "Hostname="):
        assert key in label
    # the gputuned names stay served beside them
    assert len(series["gputuned_gpu_power_watts"]) == 2
    # units follow DCGM: MiB and MHz
    total_mib = re.search(r'DCGM_FI_DEV_FB_FREE\{[^}]*gpu="0"[^}]*\} (\S+)', text).group(1)
    assert float(total_mib) == pytest.approx(85520809984 / 2**20)
    # promtool's only complaint is DCGM's own camelCase label (modelName), kept for compatibility
    lint_run = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    lint = lint_run.stdout + lint_run.stderr
    assert lint and all("camelCase" in line for line in lint.splitlines())


class _Exploding:
    name = "exploding"

    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> list[F.Sample]:
        self.calls += 1
        raise RuntimeError("sensor on fire")

    def close(self) -> None:
        pass


def test_one_collector_raising_is_marked_down_and_the_rest_served(sim_node) -> None:
    backend = sim_node({"profile": "h100", "gpus": 2})
    cfg = config(daemon={"interval_seconds": 0.05})
    gpus = setup_gpus(cfg, backend)
    bad = _Exploding()
    d = Daemon(cfg, gpus=gpus, collectors=[bad, *build_collectors(cfg, gpus)])
    d.start()
    try:
        import time

        time.sleep(0.3)
        text = _scrape(d)
    finally:
        d.stop()
    assert bad.calls >= 2
    assert 'gputuned_collector_up{collector="exploding"} 0.0' in text
    assert 'gputuned_collector_up{collector="gpu"} 1.0' in text
    assert re.search(r'gputuned_collector_errors_total\{collector="exploding"\} [1-9]', text)
    assert "gputuned_gpu_power_watts{" in text
    assert "gputuned_host_load1 " in text


def test_nvml_library_absent_serves_gpu_down_and_host_up() -> None:
    # The real nvidia-ml-py on a machine without a driver: NVML library not found.
    cfg = config(gpu={"backend": "nvml"})
    d = Daemon(cfg)
    d.start()
    try:
        text = _scrape(d)
    finally:
        d.stop()
    assert d.gpus.kind == "none"
    assert 'gputuned_collector_up{collector="gpu"} 0.0' in text
    assert 'gputuned_collector_up{collector="host"} 1.0' in text
    assert "gputuned_gpu_power_watts" not in text


def test_scrapes_do_not_touch_nvml(daemon8: Daemon) -> None:
    backend = daemon8.gpus.sim_backend
    calls = 0
    original = backend.sync

    def counting() -> None:
        nonlocal calls
        calls += 1
        original()

    backend.sync = counting  # type: ignore[method-assign]
    for _ in range(20):
        _scrape(daemon8)
    assert calls == 0
