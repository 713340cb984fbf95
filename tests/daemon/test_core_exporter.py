"""The daemon serving /metrics: families, promtool lint, dcgm names, faults kept to one part."""

from __future__ import annotations

import pickle
import re
import subprocess
import types
from collections import defaultdict

import pytest
from testkit import config, http_get

from gputuned.collectors import families as F
from gputuned.daemon.app.catalog import served_catalog
from gputuned.daemon.app.daemon import Daemon, build_collectors, setup_gpus
from gputuned.daemon.core.exporter import MetricsRenderer
from gputuned.daemon.core.store import Store


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
    assert float(total_mib) == pytest.approx((85520809984 - 85520809984 // 160) / 2**20)  # v2: the reserve apart
    # promtool's only complaints are of dcgm-exporter's own names (camelCase labels, counters without _total)
    lint_run = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    lint = lint_run.stdout + lint_run.stderr
    assert lint and all(line.startswith("DCGM_FI_") for line in lint.splitlines())


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


def _render(catalog: dict[str, F.Family], samples: list[F.Sample]) -> str:
    store = Store(16)
    store.publish("test", 1.0, samples)
    return MetricsRenderer(store, catalog).render().decode()


def test_the_renderer_types_families_from_the_catalog_it_is_given() -> None:
    jobs = F.declare("gputuned_test_jobs_total", "counter", "Jobs seen.")
    depth = F.declare("gputuned_test_depth", "gauge", "Queue depth.")
    samples: list[F.Sample] = [(jobs, (), 3.0), (depth, (("q", "a"),), 2.0)]
    text = _render(F.catalog([jobs, depth]), samples)
    assert "# TYPE gputuned_test_jobs_total counter\n" in text and "# HELP gputuned_test_jobs_total Jobs seen.\n" in text
    assert "# TYPE gputuned_test_depth gauge\n" in text
    # a family the catalog lacks is still served, untyped
    bare = _render(F.catalog([depth]), samples)
    assert "# TYPE gputuned_test_jobs_total untyped\n" in bare and "gputuned_test_jobs_total 3.0\n" in bare


def test_the_served_catalog_holds_every_declaring_module_and_registered_plugin() -> None:
    served = served_catalog()
    assert served[F.GPU_ENERGY].kind == "counter" and served[F.GPU_ENERGY].dcgm
    for name in ("gputuned_host_cpu_seconds_total", "gputuned_peer_rtt_seconds", "gputuned_trainer_step_time_seconds",
                 "gputuned_actuation_changes_total", "gputuned_tuner_goodput_ratio", "gputuned_anomaly_score",
                 "gputuned_actuation_power_limit_watts"):
        assert name in served, name
    extra = F.declare("gputuned_test_plugin_up", "gauge", "A plugin's own family.")
    assert extra in served_catalog([extra]) and extra not in served


def test_catalog_reads_constants_and_tables_and_refuses_conflicts() -> None:
    module = types.ModuleType("fake_declaring_module")
    module.ONE = F.declare("gputuned_test_one", "gauge", "One.")  # type: ignore[attr-defined]
    module.TABLE = {"two": F.declare("gputuned_test_two_total", "counter", "Two.")}  # type: ignore[attr-defined]
    module.PLAIN = "gputuned_test_not_declared"  # type: ignore[attr-defined]
    assert sorted(F.catalog(module)) == ["gputuned_test_one", "gputuned_test_two_total"]
    clash = F.declare("gputuned_test_one", "gauge", "Another help.")
    with pytest.raises(ValueError, match="declared twice"):
        F.catalog(module, [clash])
    with pytest.raises(ValueError, match="not a declared family"):
        F.catalog(["gputuned_test_plain"])
    with pytest.raises(ValueError, match="must end in _total"):
        F.declare("gputuned_test_bad", "counter", "No suffix.")


def test_family_names_are_plain_names_to_compare_hash_and_pickle() -> None:
    name = F.declare("gputuned_test_pickled", "gauge", "Pickled.")
    assert name == "gputuned_test_pickled" and {name: 1}["gputuned_test_pickled"] == 1
    back = pickle.loads(pickle.dumps((name, (), 1.0)))
    assert type(back[0]) is str and back[0] == name
