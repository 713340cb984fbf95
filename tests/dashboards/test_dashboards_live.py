"""Every panel, variable and alert rule returns data from a real Prometheus scraping a replayed node.

The daemon's store, exporter and replayer serve tests/data/dashboard_node.gttrace on
loopback (made by bench/make_dashboard_trace.py: a recorded 2-minute run of the simulated
node with hardware faults and a 4-rank job reporting over the control socket, plus
synthesized tuner/forecast series until the closed loop can be recorded). The trace is replayed at SPEED x while Prometheus scrapes every
SCRAPE; a second target nobody listens on stands for a dead daemon. Then every expression
is run as a range query over the replay, with template variables resolved as Grafana
would, and the test lists every one that returns no data. Alert rules are loaded into the
same Prometheus: each must have been pending or firing at some point (its ALERTS series).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from testkit import REPO, Prometheus, free_port

from gputuned.daemon.app.catalog import served_catalog
from gputuned.daemon.commands.cli import main
from gputuned.daemon.core.exporter import MetricsRenderer, MetricsServer
from gputuned.daemon.core.store import Store
from gputuned.daemon.record.replay import Replayer
from gputuned.daemon.record.trace import read_trace
from gputuned.dashboards.build import all_dashboards
from gputuned.dashboards.check import PrometheusAPI, check
from gputuned.dashboards.rules import Rule, all_rules, rule_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRACE = REPO / "tests" / "data" / "dashboard_node.gttrace"
SPEED = 6.0
SCRAPE = "500ms"


@dataclass
class Replayed:
    prom: Prometheus
    api: PrometheusAPI
    start: float
    end: float


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replayed]:
    import shutil

    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (make test installs Debian's package as root)")
    trace = read_trace(TRACE)
    store = Store(0)
    server = MetricsServer(("127.0.0.1", 0), MetricsRenderer(store, served_catalog()))
    server.start()
    target = f"127.0.0.1:{server.server_address[1]}"
    dead = f"127.0.0.1:{free_port()}"
    prom = Prometheus(tmp_path_factory.mktemp("prom"), [target, dead], scrape_interval=SCRAPE, rule_files=rule_files())
    api = PrometheusAPI(prom.url)
    try:
        deadline = time.monotonic() + 20
        while not any(t["health"] == "up" for t in prom.targets_up()) and time.monotonic() < deadline:
            time.sleep(0.2)
        start = time.time()
        replayer = Replayer(trace, store, SPEED)
        thread = threading.Thread(target=replayer.run, daemon=True)
        thread.start()
        thread.join(timeout=trace.events[-1].t - trace.events[0].t + 30)
        assert replayer.published == len(trace.events)
        time.sleep(1.5)  # a few more scrapes and rule evaluations of the final state
        yield Replayed(prom, api, start, time.time())
    finally:
        prom.close()
        server.stop()


def test_trace_is_small_and_marks_its_synthesized_sources() -> None:
    assert TRACE.stat().st_size < 1 << 20
    trace = read_trace(TRACE)
    synthesized = set(trace.meta["synthesized_sources"])
    assert synthesized == {"synth-tuner", "synth-forecast"}
    sources = {e.source for e in trace.events}
    assert {"gpu", "host", "infiniband", "peers", "trainer", "actuation"} <= sources - synthesized
    recorded = {name for name, _ in trace.series if name.startswith("gputuned_trainer_")}
    assert "gputuned_trainer_samples_per_second" in recorded  # reported over the real control socket


def test_every_panel_variable_and_rule_expression_returns_data(replayed: Replayed) -> None:
    problems = check(replayed.api, all_dashboards(), all_rules(), replayed.start, replayed.end, step=0.5, rate_interval="3s")
    listing = "\n".join(f"{e.where}: {why}: {' '.join(e.expr.split())}" for e, why in problems)
    assert not problems, f"{len(problems)} expressions without data:\n{listing}"


def test_prometheus_loaded_exactly_the_rules_we_check(replayed: Replayed) -> None:
    loaded = replayed.api.rules()
    assert sorted(r["name"] for r in loaded) == sorted(r.name for r in all_rules())
    assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError")) for r in loaded]


def test_every_alert_rule_went_pending_or_firing_during_the_replay(replayed: Replayed) -> None:
    result: list[dict[str, Any]] = replayed.api.query_range(
        "count by (alertname) (ALERTS)", replayed.start, replayed.end, 0.5
    )
    active = {r["metric"]["alertname"] for r in result}
    alerts = {r.name for r in all_rules() if r.kind == "alert"}
    assert alerts - active == set(), f"alerts never active on the faulty trace: {sorted(alerts - active)}"


def test_check_lists_expressions_without_data_or_with_errors(replayed: Replayed) -> None:
    rules = [
        Rule("x.yml", "alert", "NoSuchGPU", 'gputuned_gpu_up{gpu="99"} == 0'),
        Rule("x.yml", "alert", "Broken", "gputuned_gpu_up == (0"),
        Rule("x.yml", "alert", "Fine", "gputuned_gpu_up == 0"),
    ]
    problems = check(replayed.api, {}, rules, replayed.start, replayed.end, step=0.5)
    assert [(e.where, why.split(":")[0]) for e, why in problems] == [("x.yml: NoSuchGPU", "no data"), ("x.yml: Broken", "bad_data")]


def test_cli_check_passes_against_the_live_prometheus(replayed: Replayed, capsys: pytest.CaptureFixture[str]) -> None:
    since = time.time() - replayed.start + 1
    args = ["dashboards", "check", "--prometheus", replayed.prom.url, "--since", f"{since:.0f}", "--rate-interval", "3s"]
    assert main(args) == 0, capsys.readouterr().out
    assert "0 expressions without data" in capsys.readouterr().err
    assert main(["dashboards", "check", "--prometheus", "http://127.0.0.1:1", "--since", "60"]) == 2


#: On the faulty trace each hardware alert must name exactly the faulty part (label -> values).
EXPECTED_HARDWARE_ALERTS: dict[str, tuple[str, set[str]]] = {
    "GPULost": ("gpu", {"3"}),
    "GPUXidError": ("gpu", {"3"}),
    "GPUUncorrectableECC": ("gpu", {"2"}),
    "GPUCorrectableECCHigh": ("gpu", {"2"}),
    "GPURowRemapFailed": ("gpu", {"2"}),
    "GPURowRemapPending": ("gpu", {"2"}),
    "GPUThermalThrottling": ("gpu", {"1"}),
    "GPUHardwareSlowdown": ("gpu", {"2"}),
    "InfinibandPortDown": ("device", {"mlx5_2"}),
    "InfinibandSymbolErrors": ("device", {"mlx5_1"}),
    "GputunedCollectorDown": ("collector", {"host"}),
    "GputunedSimulatedGPUs": ("backend", {"sim"}),  # the trace is a recording of the simulated node
}


def test_hardware_alerts_name_only_the_faulty_parts(replayed: Replayed) -> None:
    hardware = {r.name for r in all_rules() if r.file == "hardware.yml"}
    assert set(EXPECTED_HARDWARE_ALERTS) | {"PeerUnreachable", "GputunedDown"} == hardware
    for alert, (label, expected) in EXPECTED_HARDWARE_ALERTS.items():
        result = replayed.api.query_range(f'ALERTS{{alertname="{alert}"}}', replayed.start, replayed.end, 0.5)
        assert {r["metric"].get(label) for r in result} == expected, alert
    peers = replayed.api.query_range('ALERTS{alertname="PeerUnreachable"}', replayed.start, replayed.end, 0.5)
    assert len({r["metric"]["peer"] for r in peers}) == 1  # the closed port, not the listening one
    down = replayed.api.query_range('ALERTS{alertname="GputunedDown"}', replayed.start, replayed.end, 0.5)
    targets = {t["labels"]["instance"]: t["health"] for t in replayed.prom.targets_up()}
    assert {r["metric"]["instance"] for r in down} == {i for i, h in targets.items() if h == "down"}
