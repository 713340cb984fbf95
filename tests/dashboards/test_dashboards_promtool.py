"""promtool (Debian's prometheus package) accepts the shipped rule files and scrape config."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gputuned.dashboards.rules import PROMETHEUS_CONFIG, RULES_DIR, read_rules, rule_files

pytestmark = pytest.mark.integration


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_every_shipped_rule_file(promtool: str) -> None:
    files = rule_files()
    assert RULES_DIR / "hardware.yml" in files
    r = _promtool(promtool, "check", "rules", *map(str, files))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(files)


def test_promtool_accepts_the_scrape_config_and_finds_the_rules(promtool: str) -> None:
    r = _promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rule_files())} rule files found" in r.stdout


def test_promtool_check_would_catch_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    shutil.copy(RULES_DIR / "hardware.yml", bad)
    bad.write_text(bad.read_text().replace("expr: gputuned_gpu_up == 0", "expr: gputuned_gpu_up == (0"))
    r = _promtool(promtool, "check", "rules", str(bad))
    assert r.returncode != 0


def test_no_hardware_alert_fires_on_a_healthy_busy_node(promtool: str, tmp_path: Path) -> None:
    """promtool test rules: 30 minutes of a healthy node (power capping and a few corrected
    ECC errors are normal) raise none of the hardware rules."""
    node = 'instance="n1:9735", job="gputuned"'
    series = {
        f'up{{{node}}}': "1x30",
        f'gputuned_collector_up{{{node}, collector="gpu"}}': "1x30",
        f'gputuned_collector_up{{{node}, collector="host"}}': "1x30",
        f'gputuned_peer_up{{{node}, peer="n2:22"}}': "1x30",
        f'gputuned_infiniband_port_active{{{node}, device="mlx5_0", port="1"}}': "1x30",
        f'gputuned_infiniband_port_symbol_errors_total{{{node}, device="mlx5_0", port="1"}}': "3x30",
    }
    for gpu in ("0", "1"):
        g = f'{node}, gpu="{gpu}"'
        series |= {
            f"gputuned_gpu_up{{{g}}}": "1x30",
            f"gputuned_gpu_last_xid{{{g}}}": "0x30",
            f'gputuned_gpu_ecc_errors_total{{{g}, type="corrected"}}': "0+1x30",
            f'gputuned_gpu_ecc_errors_total{{{g}, type="uncorrected"}}': "0x30",
            f"gputuned_gpu_row_remap_failed{{{g}}}": "0x30",
            f"gputuned_gpu_row_remap_pending{{{g}}}": "0x30",
            f'gputuned_gpu_clock_event_active{{{g}, reason="sw_power_cap"}}': "1x30",
            f'gputuned_gpu_clock_event_active{{{g}, reason="sw_thermal_slowdown"}}': "0x30",
            f'gputuned_gpu_clock_event_active{{{g}, reason="hw_thermal_slowdown"}}': "0x30",
            f'gputuned_gpu_clock_event_active{{{g}, reason="hw_slowdown"}}': "0x30",
        }
    alerts = [r.name for r in read_rules(RULES_DIR / "hardware.yml") if r.kind == "alert"]
    spec = {
        "rule_files": [str(RULES_DIR / "hardware.yml")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "alert_rule_test": [{"eval_time": t, "alertname": a, "exp_alerts": []} for a in alerts for t in ("5m", "30m")],
        }],
    }
    test_file = tmp_path / "healthy_test.yml"
    test_file.write_text(json.dumps(spec))  # JSON is valid YAML
    r = _promtool(promtool, "test", "rules", str(test_file))
    assert r.returncode == 0, r.stdout + r.stderr
    # the same file with one uncorrectable ECC error must fail: the test can tell
    spec["tests"][0]["input_series"].append(
        {"series": f'gputuned_gpu_ecc_errors_total{{{node}, gpu="2", type="uncorrected"}}', "values": "0 0 0 1x27"}
    )
    test_file.write_text(json.dumps(spec))
    r = _promtool(promtool, "test", "rules", str(test_file))
    assert r.returncode != 0 and "GPUUncorrectableECC" in r.stdout + r.stderr


def test_a_job_throughput_drop_pages_once_per_job(promtool: str, tmp_path: Path) -> None:
    """The forecaster's throughput_drop alert on two ranks of one job is one warning after 1m,
    and none while it is held for less than that."""
    series = 'series="gputuned_trainer_samples_per_second", job="gputuned", instance="n1:9400", exported_job="bert"'
    spec = {
        "rule_files": [str(RULES_DIR / "forecast.yml")],
        "evaluation_interval": "30s",
        "tests": [{
            "interval": "30s",
            "input_series": [{"series": f'gputuned_alert_active{{alert="throughput_drop", {series}, rank="{r}"}}',
                              "values": "0 0 1 1 1 1 1"} for r in ("0", "1")],
            "alert_rule_test": [
                {"eval_time": "90s", "alertname": "GputunedThroughputDrop", "exp_alerts": []},
                {"eval_time": "3m", "alertname": "GputunedThroughputDrop", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "instance": "n1:9400", "exported_job": "bert",
                                   "series": "gputuned_trainer_samples_per_second"},
                    "exp_annotations": {"summary": "Training job bert delivers fewer samples/s than before on n1:9400",
                                        "description": _annotation("GputunedThroughputDrop", "description")},
                }]},
            ],
        }],
    }
    test_file = tmp_path / "throughput_test.yml"
    test_file.write_text(json.dumps(spec))
    r = _promtool(promtool, "test", "rules", str(test_file))
    assert r.returncode == 0, r.stdout + r.stderr


def _annotation(alert: str, key: str) -> str:
    """One annotation of a shipped forecast rule, as written (a double-quoted YAML scalar)."""
    text = (RULES_DIR / "forecast.yml").read_text().split(f"- alert: {alert}\n", 1)[1]
    line = next(x for x in text.splitlines() if x.strip().startswith(f"{key}:"))
    return str(json.loads(line.split(":", 1)[1].strip()))
