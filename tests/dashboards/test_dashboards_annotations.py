"""Knob changes are marked on the tuner and node boards: one Prometheus annotation per origin,
whose query returns each change's time (in ms, as Grafana's "series value as timestamp" reads it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gputuned.daemon.app.catalog import served_catalog
from gputuned.dashboards.build import all_dashboards
from gputuned.dashboards.check import Expression, unknown_names
from gputuned.dashboards.promql import substitute
from gputuned.intent import ORIGINS

MARKED = ("tuner", "node-overview")


def _annotations(stem: str) -> list[dict[str, Any]]:
    return list(all_dashboards()[stem]["annotations"]["list"])


def test_the_tuner_and_node_boards_mark_each_origin_with_served_names() -> None:
    for stem in MARKED:
        marks = _annotations(stem)
        assert [m["name"] for m in marks] == [f"Knob changes: {o}" for o in ORIGINS]
        assert all(m["useValueForTime"] and m["datasource"]["uid"] == "${datasource}" for m in marks)
        assert "{{origin}}" in marks[0]["titleFormat"] and "origin" in marks[0]["tagKeys"].split(",")
        exprs = [Expression(f"{stem}: {m['name']}", m["expr"]) for m in marks]
        assert unknown_names(exprs, served_catalog()) == {}
    assert _annotations("training-job") == []


@pytest.mark.integration
def test_promtool_evaluates_the_marks_to_each_changes_time_in_ms(promtool: str, tmp_path: Path) -> None:
    """promtool test rules: a GPU knob and a job knob changed by the tuner come back as their change times."""
    tuner = next(m for m in _annotations("tuner") if m["name"] == "Knob changes: tuner")
    expr = substitute(tuner["expr"], {"instance": ".*", "gpu": "(0|1)"})
    node = 'instance="n1:9735", job="gputuned"'
    series = {  # the gauge holds the wall-clock second of the last change
        f'gputuned_knob_last_change_timestamp_seconds{{{node}, knob="power_limit", gpu="0", origin="tuner"}}': "1700000000x5",
        f'gputuned_knob_last_change_timestamp_seconds{{{node}, knob="power_limit", gpu="2", origin="tuner"}}': "1700000001x5",
        f'gputuned_knob_last_change_timestamp_seconds{{{node}, knob="batch_size", exported_job="j", origin="tuner"}}': "1700000002x5",
        f'gputuned_knob_last_change_timestamp_seconds{{{node}, knob="power_limit", gpu="1", origin="operator"}}': "1700000003x5",
    }
    expected = [
        {"labels": f'{{{node}, knob="power_limit", gpu="0", origin="tuner"}}', "value": 1700000000000},
        {"labels": f'{{{node}, knob="batch_size", exported_job="j", origin="tuner"}}', "value": 1700000002000},
    ]
    spec = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "promql_expr_test": [{"expr": expr, "eval_time": "2m", "exp_samples": expected}],
    }]}
    test_file = tmp_path / "marks_test.yml"
    test_file.write_text(json.dumps(spec))  # JSON is valid YAML
    r = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
