"""dcgm-exporter compatibility: the default counters CSV diffed against what dcgm mode serves, and the official
dashboard's panels answered by a real Prometheus scraping a simulated 8 x H100 node."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from testkit import config, http_get

from gputuned.collectors.families import DCGM_NOT_SERVED
from gputuned.daemon.app.daemon import Daemon, setup_gpus
from gputuned.daemon.core.dcgm import hostname_label

DATA = Path(__file__).parents[1] / "data" / "dcgm_exporter"
#: What promtool says of dcgm-exporter's own output too: its camelCase labels (modelName, UUID) and counters
#: named without _total; kept, since dashboards query those names.
DCGM_OWN_LINT = re.compile(r"^DCGM_FI_\w+ (label names should be written in 'snake_case' not 'camelCase'"
                           r"|counter metrics should have \"_total\" suffix|metric name should not include type 'counter')$")
IDENTITY = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"}
SPEC = {"profile": "h100", "gpus": 8, "series": [
    {"gpu": g, "field": f, "points": [[0, v]]} for g in range(8)
    for f, v in (("util_gpu_pct", 90), ("util_mem_pct", 40), ("power_violation_ns", 2_500_000_000))]}


def default_counters() -> list[tuple[str, str, str]]:
    """(field, type, help) of each line of dcgm-exporter's default CSV that is not a comment."""
    rows = []
    for line in (DATA / "default-counters.csv").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, kind, text = (p.strip() for p in line.split(",", 2))
            rows.append((name, kind, text))
    return rows


def _families(text: str) -> dict[str, dict[str, object]]:
    """name -> {type, help, samples: [(labels dict, value)]} from text exposition."""
    out: dict[str, dict[str, object]] = {}
    for line in text.splitlines():
        if m := re.match(r"# (HELP|TYPE) (\S+) (.*)", line):
            out.setdefault(m.group(2), {"samples": []})[m.group(1).lower()] = m.group(3)
        elif m := re.match(r"([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line):
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out.setdefault(m.group(1), {"samples": []})["samples"].append((labels, float(m.group(3))))  # type: ignore[union-attr]
    return out


@pytest.fixture
def dcgm_daemon(sim_node) -> Iterator[Daemon]:
    backend = sim_node(SPEC)
    cfg = config(exporter={"metric_names": "dcgm"}, daemon={"interval_seconds": 0.2})
    d = Daemon(cfg, gpus=setup_gpus(cfg, backend))
    d.start()
    t0 = time.monotonic()
    while d.store.generation < 8 and time.monotonic() - t0 < 10:  # GPM and NVLink rates need two reads
        time.sleep(0.1)
    yield d
    d.stop()


def _scrape(d: Daemon, accept: str = "") -> str:
    assert d.server is not None
    if not accept:
        return http_get(d.server.url).decode()
    return subprocess.run(["curl", "-sf", "-H", f"Accept: {accept}", d.server.url], capture_output=True, text=True,
                          check=True).stdout


def test_every_default_counter_is_served_with_dcgm_exporters_name_type_help_and_labels(dcgm_daemon: Daemon) -> None:
    fams = _families(_scrape(dcgm_daemon))
    counters = [r for r in default_counters() if r[1] != "label"]
    assert [r[0] for r in default_counters() if r[1] == "label"] == ["DCGM_FI_DRIVER_VERSION"]
    assert len(counters) == 25
    served = [r for r in counters if r[0] not in DCGM_NOT_SERVED]
    assert len(served) == 24 and set(DCGM_NOT_SERVED) == {"DCGM_FI_DEV_VGPU_LICENSE_STATUS"}
    for name, kind, text in served:
        fam = fams.get(name)
        assert fam is not None, f"{name} not served"
        assert (fam["type"], fam["help"]) == (kind, text), name
        samples = fam["samples"]
        assert sorted(int(lab["gpu"]) for lab, _ in samples) == list(range(8)), name  # type: ignore[union-attr]
        for labels, _ in samples:  # type: ignore[union-attr]
            extra = {"err_code", "err_msg"} if name == "DCGM_FI_DEV_XID_ERRORS" else set()
            assert set(labels) == IDENTITY | extra, name
            assert labels["device"] == f"nvidia{labels['gpu']}" and labels["DCGM_FI_DRIVER_VERSION"]
    xid = fams["DCGM_FI_DEV_XID_ERRORS"]["samples"][0]  # type: ignore[index]
    assert xid[0]["err_code"] == "0" and xid[0]["err_msg"] == "No Error"


def test_values_are_in_dcgm_units(dcgm_daemon: Daemon) -> None:
    text = _scrape(dcgm_daemon)
    fams = _families(text)

    def one(name: str, gpu: str = "3") -> float:
        return next(v for lab, v in fams[name]["samples"] if lab.get("gpu") == gpu)  # type: ignore[union-attr]

    assert one("DCGM_FI_DEV_FB_USED") == pytest.approx(one("gputuned_gpu_memory_used_bytes") / 2**20)
    assert one("DCGM_FI_DEV_FB_RESERVED") == pytest.approx(85520809984 // 160 / 2**20)
    assert one("DCGM_FI_DEV_SM_CLOCK") == pytest.approx(one("gputuned_gpu_sm_clock_hertz") / 1e6)
    assert one("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION") == pytest.approx(one("gputuned_gpu_energy_joules_total") * 1000)
    assert one("DCGM_FI_DEV_GPU_UTIL") == 90.0
    assert one("DCGM_FI_PROF_GR_ENGINE_ACTIVE") == pytest.approx(0.9)
    assert one("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE") == pytest.approx(0.45)
    assert one("DCGM_FI_PROF_DRAM_ACTIVE") == pytest.approx(0.4)
    assert one("DCGM_FI_DEV_POWER_VIOLATION") == pytest.approx(2.5e9)  # nanoseconds, as the CSV says


def test_the_host_label_follows_the_configured_release() -> None:
    assert hostname_label("4.5.3-4.8.2") == "Hostname"
    assert hostname_label("3.3.9-3.6.1") == "Hostname"
    assert hostname_label("4.5.4-4.8.3") == "hostname"
    with pytest.raises(ValueError, match="not like"):
        hostname_label("latest")


def test_promtool_and_openmetrics_parser_accept_dcgm_mode(dcgm_daemon: Daemon, promtool: str) -> None:
    lint = subprocess.run([promtool, "check", "metrics"], input=_scrape(dcgm_daemon), capture_output=True, text=True)
    assert lint.stdout + lint.stderr
    for line in (lint.stdout + lint.stderr).splitlines():
        assert DCGM_OWN_LINT.match(line), line  # gputuned's own series lint clean in dcgm mode too
    om = _scrape(dcgm_daemon, "application/openmetrics-text; version=1.0.0")
    assert om.endswith("# EOF\n")
    types = {f.name: f.type for f in text_string_to_metric_families(om)}
    assert types["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] == "unknown"  # OpenMetrics counters need _total
    assert types["gputuned_gpu_energy_joules"] == "counter" and types["DCGM_FI_DEV_GPU_TEMP"] == "gauge"


def _panel_queries() -> list[tuple[str, str]]:
    board = json.loads((DATA / "dcgm-exporter-dashboard.json").read_text())
    return [(p["title"], t["expr"].replace("$instance", ".*").replace("$gpu", ".*"))
            for p in board["panels"] for t in p.get("targets", [])]


def test_the_official_dashboards_eight_panels_return_data(dcgm_daemon: Daemon, prometheus) -> None:
    assert dcgm_daemon.server is not None
    host, port = dcgm_daemon.server.server_address[:2]
    prom = prometheus([f"{host}:{port}"])
    queries = _panel_queries()
    assert len(queries) == 8
    answered = {}
    for title, expr in queries:
        result = prom.wait_for(expr)
        answered[title] = len(result)
    assert all(answered.values()), answered
    assert answered["Tensor Core Utilization"] == 8
