"""Collectors as plugins: one file registers a collector; the daemon builds, serves and configures it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType

import pytest
from plugins import installed
from testkit import config, http_get

from gputuned.collectors import registry
from gputuned.collectors.base import UnavailableCollector
from gputuned.collectors.device import DriverMissingError
from gputuned.collectors.registry import CollectorConfig, CollectorContext
from gputuned.daemon.app.config import Config, parse_config
from gputuned.daemon.app.daemon import Daemon, setup_gpus
from gputuned.daemon.core.config import ConfigError
from gputuned.daemon.core.loop import CollectionLoop
from gputuned.daemon.core.store import Store


@pytest.fixture
def demo() -> Iterator[ModuleType]:
    """The test-only demo collector, installed by importing its one file, and removed after."""
    with installed("demo_collector", lambda: registry.unregister("demo")) as module:
        yield module


def test_builtin_collectors_register_in_tick_order() -> None:
    assert [p.name for p in registry.plugins()] == ["gpu", "host", "infiniband", "peers", "processes", "kubernetes"]
    assert all(p.enabled_by_default == (p.name != "kubernetes") and p.families for p in registry.plugins())
    assert set(Config().collectors.tables()) == {"gpu", "host", "infiniband", "peers", "processes", "kubernetes"}


def test_imported_plugin_is_built_by_the_daemon_and_served(demo: ModuleType, sim_node) -> None:
    cfg = config(collectors={"demo": {"enabled": True, "value": 2.5}})
    d = Daemon(cfg, gpus=setup_gpus(cfg, sim_node({"profile": "h100", "gpus": 2})))
    assert [c.name for c in d.collectors] == ["gpu", "host", "infiniband", "processes", "demo"]
    d.start()
    try:
        assert d.server is not None
        body = http_get(d.server.url).decode()
    finally:
        d.stop()
    assert 'gputuned_demo_value{gpus="2"} 2.5' in body
    assert "# TYPE gputuned_demo_value gauge" in body and "# HELP gputuned_demo_value The configured value" in body
    assert 'gputuned_collector_up{collector="demo"} 1.0' in body


def test_plugin_config_table_validates_and_defaults(demo: ModuleType) -> None:
    assert parse_config({"collectors": {"demo": {"value": 4}}}).collectors.table("demo") == demo.DemoCollectorConfig(value=4)
    assert not Config().collectors.table("demo").enabled  # off by default: not built
    assert "demo" not in [c.name for c in registry.build_collectors(Config().collectors.tables(), CollectorContext())]
    with pytest.raises(ConfigError, match=r"collectors\.demo\.value: Input should be greater than or equal to 0"):
        parse_config({"collectors": {"demo": {"value": -1}}})
    with pytest.raises(ConfigError, match=r"collectors\.demo\.colour: unknown key"):
        parse_config({"collectors": {"demo": {"colour": "red"}}})


def test_unregistered_collector_table_is_an_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"collectors\.demo: unknown key"):
        parse_config({"collectors": {"demo": {"enabled": True}}})


def test_failing_factory_gives_a_collector_served_down_beside_the_others() -> None:
    @registry.register("broken")
    def build_broken(cfg: CollectorConfig, ctx: CollectorContext) -> UnavailableCollector:
        raise OSError("no such device")

    try:
        collectors = registry.build_collectors({}, CollectorContext(gpu_error=DriverMissingError("no libnvidia-ml")))
    finally:
        registry.unregister("broken")
    assert [c.name for c in collectors] == ["gpu", "host", "infiniband", "broken"]
    store = Store(10)
    loop = CollectionLoop(collectors, store, 1.0)
    loop.tick()
    up = {dict(lab)["collector"]: v for n, lab, v in store.latest() if n == "gputuned_collector_up"}
    assert up == {"gpu": 0.0, "host": 1.0, "infiniband": 1.0, "broken": 0.0}
    loop.close()


def test_a_collector_registers_once_with_declared_families() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("host")(lambda cfg, ctx: None)
    with pytest.raises(TypeError, match="families"):
        registry.register("spare", families="gputuned_spare")(lambda cfg, ctx: None)
    with pytest.raises(ValueError, match="not declared"):
        registry.register("spare", families=("gputuned_spare",))(lambda cfg, ctx: None)
    assert "spare" not in [p.name for p in registry.plugins()]


def test_imported_plugin_is_listed_by_status(demo: ModuleType, sim_node, tmp_path, capsys) -> None:
    from gputuned.daemon.commands.cli import main

    sock = tmp_path / "control.sock"
    cfg = config(collectors={"demo": {"enabled": True}}, control={"socket_path": str(sock)},
                 daemon={"state_file": str(tmp_path / "state.json")})
    d = Daemon(cfg, gpus=setup_gpus(cfg, sim_node({"profile": "h100", "gpus": 1})), serve=False)
    d.start()
    try:
        assert main(["status", "--socket", str(sock), "--json"]) == 0
        listed = {c["name"]: c for c in json.loads(capsys.readouterr().out)["collectors"]}
        assert main(["status", "--socket", str(sock)]) == 0
        table = capsys.readouterr().out
    finally:
        d.stop()
    assert listed["demo"]["up"] and "demo" in table
