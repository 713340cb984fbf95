"""A real Prometheus server scrapes the daemon and answers queries for GPU and host series."""

from __future__ import annotations

from testkit import config

from gputuned.daemon.app.daemon import Daemon, setup_gpus


def test_prometheus_scrapes_gpu_and_host_series(sim_node, prometheus) -> None:
    backend = sim_node({"profile": "h100", "gpus": 8, "series": [
        {"gpu": 6, "field": "power_mw", "points": [[0, 512000]]},
    ]})
    cfg = config(daemon={"interval_seconds": 0.5})
    d = Daemon(cfg, gpus=setup_gpus(cfg, backend))
    d.start()
    try:
        assert d.server is not None
        host, port = d.server.server_address[:2]
        prom = prometheus([f"{host}:{port}"])
        power = prom.wait_for('gputuned_gpu_power_watts{gpu="6"}')
        assert power and float(power[0]["value"][1]) == 512.0
        assert power[0]["metric"]["model"] == "NVIDIA H100 80GB HBM3"
        gpus = prom.wait_for("count(gputuned_gpu_utilization_ratio)")
        assert float(gpus[0]["value"][1]) == 8
        mem = prom.wait_for("gputuned_host_memory_total_bytes")
        assert float(mem[0]["value"][1]) > 2**30
        cpu = prom.wait_for('gputuned_host_cpu_seconds_total{mode="idle"}')
        assert float(cpu[0]["value"][1]) > 0
        up = prom.wait_for('up{job="gputuned"}')
        assert up[0]["value"][1] == "1"
    finally:
        d.stop()
