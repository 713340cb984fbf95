"""Dashboards and rules select only metric names the exporter serves; the PromQL reader is right."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from testkit import REPO

from gputuned.daemon.app.catalog import served_catalog
from gputuned.dashboards.build import all_dashboards
from gputuned.dashboards.check import (
    Expression,
    dashboard_expressions,
    rule_expressions,
    unknown_names,
    variable_expressions,
)
from gputuned.dashboards.node_host import NODE_EXPORTER_SERIES
from gputuned.dashboards.promql import (
    label_values_query,
    metric_names,
    regex_of,
    substitute,
    variables,
)
from gputuned.dashboards.rules import all_rules, read_rules


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("gputuned_gpu_up", {"gputuned_gpu_up"}),
        ('sum by (gpu, reason) (rate(a_total{x="by (y)", b=~"$gpu"}[$__rate_interval]))', {"a_total"}),
        ("x / on (instance) group_left (model) max without (gpu) (y) > bool 3", {"x", "y"}),
        ("up == 0 and on(job) z offset 5m unless w @ start()", {"up", "z", "w"}),
        ("max_over_time(deriv(m[5m])[30m:1m]) > 1e3 or vector(inf)", {"m"}),
        ('label_replace(a:b:c, "dst", "$1", "src", "(.*)")', {"a:b:c"}),
        ('{__name__="named_metric", job="x"}', {"named_metric"}),
        ('{__name__=~"$series", instance=~"$instance"}', set()),
        ("histogram_quantile(0.9, sum by (le) (rate(h_bucket[1m])))", {"h_bucket"}),
        ("clamp_min(abs(q), 1e-9) * -Inf + NaN", {"q"}),
    ],
)
def test_metric_names_reads_selectors_and_skips_functions_keywords_and_labels(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_variables_substitution_and_label_values() -> None:
    expr = 'a{instance=~"$instance", gpu=~"${gpu}"}[$__rate_interval]'
    assert variables(expr) == {"instance", "gpu", "__rate_interval"}
    assert substitute(expr, {"instance": ".*", "gpu": "(0|1)", "__rate_interval": "1m"}) == 'a{instance=~".*", gpu=~"(0|1)"}[1m]'
    with pytest.raises(KeyError):
        substitute("$nope", {})
    assert label_values_query('label_values(m{instance=~"$instance"}, gpu)') == ('m{instance=~"$instance"}', "gpu")
    assert label_values_query("query_result(m)") is None
    assert regex_of(["0", "1", "10"]) == "(0|1|10)"
    assert regex_of(["a.b"]) == "a\\\\.b"


def _source_files() -> list[Path]:
    """Every module of the package, found through pyproject's package-dir table."""
    folders = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return sorted({path for folder in folders.values() for path in (REPO / folder).glob("*.py")})


def _declared_literal_names() -> set[str]:
    names = set()
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "declare"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value)
    return names


def test_the_served_catalog_holds_every_declare_call_in_the_package() -> None:
    served = served_catalog()
    declared = _declared_literal_names()
    assert len(declared) > 100, "found too few declare() calls"
    assert declared <= set(served), f"declared outside the catalog's modules: {sorted(declared - set(served))}"
    assert {"gputuned_gpu_up", "gputuned_host_cpu_seconds_total", "gputuned_peer_rtt_seconds"} <= set(served)


def test_dashboards_and_rules_use_only_served_metric_names() -> None:
    dashboards = all_dashboards()
    exprs = dashboard_expressions(dashboards) + variable_expressions(dashboards) + rule_expressions(all_rules())
    assert len(exprs) > 80
    assert unknown_names(exprs, served_catalog(), NODE_EXPORTER_SERIES) == {}
    reading_node_exporter = [e.expr for e in exprs if any(n.startswith("node_") for n in metric_names(e.expr))]
    assert {n for e in reading_node_exporter for n in metric_names(e) if n.startswith("node_")} == NODE_EXPORTER_SERIES
    for expr in reading_node_exporter:  # node_exporter's where scraped, else gputuned's own
        fallback = expr.partition(" or on (instance) ")[2]
        assert fallback and all(n.startswith("gputuned_host_") for n in metric_names(fallback)), expr


def test_name_check_reports_a_name_nobody_serves() -> None:
    exprs = [Expression("x", "rate(gputuned_gpu_nope_total[5m]) / gputuned_gpu_up"), Expression("y", "up == 0")]
    assert unknown_names(exprs, served_catalog()) == {"x": {"gputuned_gpu_nope_total"}}


def test_rule_reader_handles_plain_quoted_and_block_expressions(tmp_path: Path) -> None:
    f = tmp_path / "r.yml"
    f.write_text(
        "groups:\n  - name: g\n    rules:\n"
        "      - alert: A\n        expr: up == 0 # comment\n        for: 1m\n"
        "      - alert: B\n        expr: 'x > 1'\n"
        '      - record: job:c:sum\n        expr: "sum(c)"\n'
        "      - alert: D\n        expr: |\n          a\n          or b\n        labels:\n          severity: x\n"
    )
    got = [(r.kind, r.name, r.expr) for r in read_rules(f)]
    assert got == [("alert", "A", "up == 0"), ("alert", "B", "x > 1"), ("record", "job:c:sum", "sum(c)"),
                   ("alert", "D", "a\nor b")]
    f.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        for: 1m\n      - alert: B\n        expr: x\n")
    with pytest.raises(ValueError, match="r.yml:6: rule 'A' has no expr"):
        read_rules(f)


def test_hardware_rules_cover_xid_ecc_thermal_and_collector_down() -> None:
    names = {r.name for r in all_rules() if r.file == "hardware.yml"}
    assert {"GPUXidError", "GPUUncorrectableECC", "GPUThermalThrottling", "GputunedCollectorDown", "GputunedDown"} <= names
