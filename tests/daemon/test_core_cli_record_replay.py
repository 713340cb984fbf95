"""`gputuned record` then `gputuned replay` as real processes, scraped over HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from testkit import free_port, http_get

from gputuned.daemon.record.trace import read_trace

GPUTUNED = [sys.executable, "-m", "gputuned", "--log-level", "warning"]


def test_record_then_replay_serves_the_recorded_gpus(tmp_path: Path) -> None:
    out = tmp_path / "node.gttrace"
    r = subprocess.run([*GPUTUNED, "record", "--sim", "--gpus", "3", "--interval", "0.2", "--duration", "1s", "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "bytes/sample" in r.stderr
    trace = read_trace(out)
    sources = {e.source for e in trace.events}
    assert {"gpu", "host", "daemon"} <= sources
    assert 4 <= len([e for e in trace.events if e.source == "gpu"]) <= 7  # about 1 s at 0.2 s

    port = free_port()
    proc = subprocess.Popen([*GPUTUNED, "replay", str(out), "--speed", "2", "--listen", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}/metrics" in line
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            text = http_get(f"http://127.0.0.1:{port}/metrics").decode()
            # replay serves events in recorded order: the host's first sample may follow the GPUs'
            if text.count("gputuned_gpu_power_watts{") == 3 and "gputuned_host_memory_total_bytes" in text:
                break
            time.sleep(0.1)
        assert text.count("gputuned_gpu_power_watts{") == 3
        assert "gputuned_host_memory_total_bytes" in text
    finally:
        proc.terminate()
        proc.wait(10)


def test_replay_of_a_damaged_file_serves_the_intact_part(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[1] / "data" / "scripted_node_8xh100.gttrace"
    bad = tmp_path / "bad.gttrace"
    bad.write_bytes(src.read_bytes()[:-100])
    port = free_port()
    proc = subprocess.Popen([*GPUTUNED, "replay", str(bad), "--speed", "inf", "--listen", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in proc.stdout.readline()
        time.sleep(0.5)
        text = http_get(f"http://127.0.0.1:{port}/metrics").decode()
        assert "gputuned_gpu_power_watts{" in text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "truncated" in err and "frame" in err


def test_replay_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    r = subprocess.run([*GPUTUNED, "replay", str(tmp_path / "none.gttrace")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "none.gttrace" in r.stderr


def test_bad_duration_exits_2(tmp_path: Path) -> None:
    r = subprocess.run([*GPUTUNED, "record", "--duration", "ten", "-o", str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "invalid duration 'ten'" in r.stderr
