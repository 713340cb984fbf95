"""The start banner names the address /metrics is bound to, and the URL to use on this host."""

from __future__ import annotations

from testkit import config, http_get

from gputuned.daemon.app.daemon import Daemon, setup_gpus


def _banner(sim_node, address: str) -> tuple[str, int]:
    """The daemon's banner line and port when /metrics listens on ``address``; its local URL must answer."""
    backend = sim_node({"profile": "h100", "gpus": 4})
    cfg = config(exporter={"listen_address": address, "listen_port": 0})
    d = Daemon(cfg, gpus=setup_gpus(cfg, backend))
    d.start()
    try:
        assert d.server is not None
        assert b"gputuned_gpu_power_watts" in http_get(d.server.url)
        return d.describe(), d.server.server_address[1]
    finally:
        d.stop()


def test_listening_on_all_interfaces_is_named_with_the_local_url(sim_node) -> None:
    banner, port = _banner(sim_node, "0.0.0.0")
    assert f"serving /metrics on 0.0.0.0:{port} (all interfaces; on this host http://127.0.0.1:{port}/metrics)" in banner
    assert "4 x NVIDIA H100" in banner


def test_listening_on_loopback_shows_the_url(sim_node) -> None:
    banner, port = _banner(sim_node, "127.0.0.1")
    assert banner.endswith(f"; serving http://127.0.0.1:{port}/metrics")
    assert "0.0.0.0" not in banner
