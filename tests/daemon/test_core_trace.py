"""Trace files: round trip, damage reported with its place, OpenMetrics backfill, replay."""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import pytest
from testkit import REPO

from gputuned.collectors import families as F
from gputuned.daemon.app.catalog import served_catalog
from gputuned.daemon.core.exporter import MetricsRenderer
from gputuned.daemon.core.store import Store
from gputuned.daemon.record.replay import Replayer
from gputuned.daemon.record.trace import (
    Recorder,
    TraceError,
    TraceWriter,
    iter_publishes,
    read_trace,
    to_openmetrics,
)

SHIPPED = REPO / "tests" / "data" / "scripted_node_8xh100.gttrace"
GPU0 = (("gpu", "0"), ("uuid", "GPU-x"), ("model", "m"), ("pci_bus_id", "b"))


def _events(n: int) -> list[tuple[str, float, list[F.Sample] | None]]:
    rnd = random.Random(7)
    out: list[tuple[str, float, list[F.Sample] | None]] = []
    for i in range(n):
        t = 1000.0 + i
        gpu = [(F.GPU_POWER, GPU0, 300.0 + rnd.random()), (F.GPU_MEM_TOTAL, GPU0, 8.5e10),
               (F.GPU_ENERGY, GPU0, 1e6 + 300 * i)]
        if i == 3:
            gpu.append((F.GPU_XID, (*GPU0, ("xid", "79")), 1.0))  # the layout changes once
        out.append(("gpu", t, gpu))
        out.append(("host", t, [(F.TICKS, (), float(i))]))
        if i == 6:
            out.append(("host", t, None))  # the host collector went down
    return out


def _write(path: Path, events) -> TraceWriter:
    w = TraceWriter(path)
    rec = Recorder(w)
    for source, t, samples in events:
        rec(source, t, samples)
    w.close()
    return w


def test_round_trip_is_exact(tmp_path: Path) -> None:
    events = _events(10)
    _write(tmp_path / "t.gttrace", events)
    trace = read_trace(tmp_path / "t.gttrace")
    assert list(iter_publishes(trace)) == events
    assert trace.error is None


def test_unchanged_values_cost_little(tmp_path: Path) -> None:
    store_samples = [(F.GPU_MEM_TOTAL, (("gpu", str(g)),), 8.5e10) for g in range(500)]
    w = _write(tmp_path / "t.gttrace", [("gpu", float(i), store_samples) for i in range(200)])
    assert w.bytes_written / w.samples_written < 0.5


@pytest.mark.parametrize("cut", [1, 17, 500, 2000])
def test_truncated_file_keeps_its_intact_prefix(tmp_path: Path, cut: int) -> None:
    data = SHIPPED.read_bytes()
    path = tmp_path / "cut.gttrace"
    path.write_bytes(data[: len(data) - cut])
    with pytest.raises(TraceError, match=r"frame \d+ at byte \d+: truncated"):
        read_trace(path)
    partial = read_trace(path, strict=False)
    full = read_trace(SHIPPED)
    assert partial.error and "truncated" in partial.error
    assert 0 < len(partial.events) < len(full.events)
    for a, b in zip(iter_publishes(partial), iter_publishes(full), strict=False):
        assert a == b


def test_flipped_byte_is_reported_with_its_frame(tmp_path: Path) -> None:
    data = bytearray(SHIPPED.read_bytes())
    data[len(data) * 9 // 10] ^= 0xFF
    path = tmp_path / "flip.gttrace"
    path.write_bytes(bytes(data))
    with pytest.raises(TraceError, match=r"flip.gttrace: frame \d+ at byte \d+"):
        read_trace(path)
    assert read_trace(path, strict=False).events


def test_not_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "x.gttrace"
    path.write_bytes(b"hello world, this is not a trace")
    with pytest.raises(TraceError, match="bad magic at byte 0"):
        read_trace(path)


def _final_render(trace) -> bytes:
    store = Store(0)
    Replayer(trace, store, float("inf")).run()
    return MetricsRenderer(store, served_catalog()).render()


def test_replay_is_deterministic_and_equals_the_live_state(tmp_path: Path) -> None:
    events = _events(8)
    live = Store(0)
    w = TraceWriter(tmp_path / "t.gttrace")
    live.subscribe(Recorder(w))
    for source, t, samples in events:
        if samples is None:
            live.drop(source, t)
        else:
            live.publish(source, t, samples)
    w.close()
    trace = read_trace(tmp_path / "t.gttrace")
    assert _final_render(trace) == _final_render(trace) == MetricsRenderer(live, served_catalog()).render()


def test_replay_paces_events_by_speed() -> None:
    trace = read_trace(SHIPPED)
    slept: list[float] = []
    now = [0.0]

    def fake_sleep(seconds: float) -> bool:
        slept.append(seconds)
        now[0] += seconds
        return False

    Replayer(trace, Store(0), 10.0, sleep=fake_sleep, monotonic=lambda: now[0]).run()
    span = trace.events[-1].t - trace.events[0].t
    assert sum(slept) == pytest.approx(span / 10.0)


def test_replayed_trace_serves_what_the_node_did(promtool: str) -> None:
    text = _final_render(read_trace(SHIPPED)).decode()
    assert 'gputuned_gpu_up{gpu="3"' in text and text.count("gputuned_gpu_up{") == 8
    up3 = [line for line in text.splitlines() if line.startswith('gputuned_gpu_up{gpu="3"')]
    assert up3[0].endswith(" 0.0")  # lost at t=40
    assert 'gputuned_gpu_xid_events_total{gpu="1"' in text
    assert re.search(r'clock_event_active\{gpu="5"[^}]*reason="sw_power_cap"[^}]*\} 1.0', text)  # power cap
    power0 = next(line for line in text.splitlines() if line.startswith('gputuned_gpu_power_watts{gpu="0"'))
    assert 680.0 < float(power0.split()[-1]) < 690.0
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.stdout + lint.stderr == ""


def test_openmetrics_export_backfills_into_prometheus(tmp_path: Path, promtool: str) -> None:
    trace = read_trace(SHIPPED)
    om = tmp_path / "trace.om"
    with om.open("w") as f:
        n = to_openmetrics(trace, f)
    assert n > 10_000
    assert om.read_text().endswith("# EOF\n")
    r = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(tmp_path / "tsdb")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    assert any((tmp_path / "tsdb").iterdir())


def test_cli_trace_info_and_export(tmp_path: Path) -> None:
    import sys

    r = subprocess.run([sys.executable, "-m", "gputuned", "trace", "info", str(SHIPPED)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "bytes/sample" in r.stdout
    bad = tmp_path / "bad.gttrace"
    bad.write_bytes(SHIPPED.read_bytes()[:-3])
    r = subprocess.run([sys.executable, "-m", "gputuned", "trace", "export", str(bad), "-o", str(tmp_path / "o.om")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "truncated" in r.stderr
