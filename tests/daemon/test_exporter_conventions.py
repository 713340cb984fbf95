"""Exporter conventions checked with curl against a running daemon: gzip, HEAD, health endpoints,
OpenMetrics negotiation, collect[] filtering, self metrics, and promtool on the text format."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from testkit import config

from gputuned.daemon.app.daemon import Daemon, setup_gpus

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


@pytest.fixture
def base(sim_node) -> Iterator[str]:
    backend = sim_node({"profile": "h100", "gpus": 2})
    cfg = config(daemon={"interval_seconds": 0.2})
    d = Daemon(cfg, gpus=setup_gpus(cfg, backend))
    d.start()
    assert d.server is not None
    yield d.server.url.removesuffix("/metrics")
    d.stop()


def curl(*args: str) -> tuple[str, bytes]:
    """(response head, body) of one curl call."""
    out = subprocess.run(["curl", "-s", "-D", "-", *args], capture_output=True, check=True, timeout=10).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def test_gzip_when_asked_and_identity_otherwise(base: str) -> None:
    head, body = curl("-H", "Accept-Encoding: gzip", f"{base}/metrics")
    assert re.search(r"(?i)^content-encoding: gzip", head, re.M)
    text = gzip.decompress(body).decode()
    assert "gputuned_gpu_power_watts{" in text
    assert len(body) < len(text.encode()) / 5
    head, body = curl(f"{base}/metrics")
    assert not re.search(r"(?i)^content-encoding", head, re.M) and b"gputuned_gpu_power_watts{" in body
    # curl's own decoding of what it asked for
    _, decoded = curl("--compressed", f"{base}/metrics")
    assert b"gputuned_gpu_power_watts{" in decoded


def test_head_answers_the_headers_of_get_without_a_body(base: str) -> None:
    out = subprocess.run(["curl", "-s", "-I", f"{base}/metrics"], capture_output=True, check=True, timeout=10).stdout
    head, _, body = out.decode("latin-1").partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200") and body == ""
    length = int(re.search(r"(?i)^content-length: (\d+)", head, re.M).group(1))  # type: ignore[union-attr]
    assert length > 10_000


@pytest.mark.parametrize("path", ["/health", "/healthz", "/-/healthy", "/-/ready"])
def test_health_endpoints(base: str, path: str) -> None:
    head, body = curl(f"{base}{path}")
    assert head.startswith("HTTP/1.1 200") and body == b"ok\n"


def test_openmetrics_when_accepted(base: str) -> None:
    head, body = curl("-H", "Accept: application/openmetrics-text; version=1.0.0,text/plain;q=0.5", f"{base}/metrics")
    assert re.search(r"(?i)^content-type: application/openmetrics-text; version=1.0.0", head, re.M)
    text = body.decode()
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["gputuned_gpu_energy_joules"].type == "counter"
    head, body = curl("-H", "Accept: text/plain;version=0.0.4", f"{base}/metrics")
    assert re.search(r"(?i)^content-type: text/plain; version=0.0.4", head, re.M) and b"# EOF" not in body


def test_collect_filters_by_collector_like_node_exporter(base: str) -> None:
    _, body = curl("-g", f"{base}/metrics?collect[]=gpu")
    names = {line.split("{")[0].split(" ")[0] for line in body.decode().splitlines() if not line.startswith("#")}
    assert "gputuned_gpu_power_watts" in names
    assert not [n for n in names if n.startswith("gputuned_host_")]
    _, both = curl("-g", f"{base}/metrics?collect[]=gpu&collect[]=host")
    assert b"gputuned_host_memory_total_bytes" in both and b"gputuned_gpu_power_watts{" in both
    head, body = curl("-g", f"{base}/metrics?collect[]=nosuch")
    assert head.startswith("HTTP/1.1 400") and b"unknown collector nosuch" in body


def test_self_metrics_count_scrapes_bytes_and_renders(base: str) -> None:
    for _ in range(3):
        curl("-H", "Accept-Encoding: gzip", f"{base}/metrics")
    _, body = curl("-g", f"{base}/metrics?collect[]=exporter")
    text = body.decode()
    scrapes = re.search(r'gputuned_exporter_scrapes_total\{format="text",encoding="gzip"\} (\S+)', text)
    assert scrapes and float(scrapes.group(1)) >= 2  # as of this body's render
    assert re.search(r"gputuned_exporter_response_bytes_total [1-9]", text)
    assert re.search(r"gputuned_exporter_render_seconds_total \d", text)


def test_post_is_refused_with_allow(base: str) -> None:
    head, _ = curl("-X", "POST", f"{base}/metrics")
    assert head.startswith("HTTP/1.1 405") and re.search(r"(?i)^allow: GET, HEAD", head, re.M)


def test_promtool_finds_nothing_in_the_text_format(base: str, promtool: str) -> None:
    _, body = curl(f"{base}/metrics")
    lint = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert lint.stdout + lint.stderr == b"" and lint.returncode == 0
