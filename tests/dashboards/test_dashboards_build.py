"""The generated dashboards: fresh, well-formed, with units, thresholds and variables on every panel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from testkit import REPO

from gputuned.daemon.commands.cli import main
from gputuned.dashboards.build import GENERATED, all_dashboards, build
from gputuned.dashboards.docs import panel_thresholds, panel_unit, panels, render_markdown
from gputuned.dashboards.promql import variables
from gputuned.dashboards.rules import all_rules

BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}
DOCS = REPO / "docs" / "dashboards.md"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_committed_build_matches_a_fresh_build(tmp_path: Path) -> None:
    build(tmp_path)
    fresh, committed = _files(tmp_path), _files(GENERATED)
    assert sorted(committed) == sorted(fresh), "run `gputuned dashboards build` and commit dashboards/generated/"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run `gputuned dashboards build --docs docs/dashboards.md`"


def test_docs_page_lists_every_panel_and_is_fresh() -> None:
    dashboards = all_dashboards()
    text = render_markdown(dashboards, all_rules())
    assert DOCS.read_text() == text, "docs/dashboards.md is stale: run `gputuned dashboards build --docs docs/dashboards.md`"
    for d in dashboards.values():
        for _row, p in panels(d):
            assert sum(line.startswith(f"- **{p['title']}**:") for line in text.splitlines()) >= 1


def test_every_panel_has_a_unit_thresholds_description_and_the_datasource_variable() -> None:
    for stem, d in all_dashboards().items():
        for row, p in panels(d):
            where = f"{stem}/{row}/{p['title']}"
            assert panel_unit(p), f"{where}: no unit"
            steps = panel_thresholds(p)
            assert steps and steps[0]["value"] is None, f"{where}: thresholds need a base step"
            values = [s["value"] for s in steps[1:]]
            assert values == sorted(values) and all(isinstance(v, (int, float)) for v in values), where
            assert p.get("description"), f"{where}: no description"
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            refs = [t["refId"] for t in p["targets"]]
            assert refs and len(set(refs)) == len(refs), f"{where}: targets need unique refIds"
            assert all(t["expr"].strip() for t in p["targets"]), f"{where}: empty expression"


def test_panels_sit_on_the_grid_without_overlapping() -> None:
    for stem, d in all_dashboards().items():
        cells: dict[tuple[int, int], str] = {}
        for p in d["panels"]:
            gp = p["gridPos"]
            assert gp["x"] >= 0 and gp["x"] + gp["w"] <= 24, f"{stem}/{p['title']}: off the grid"
            for x in range(gp["x"], gp["x"] + gp["w"]):
                for y in range(gp["y"], gp["y"] + gp["h"]):
                    assert (x, y) not in cells, f"{stem}: {p['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = p["title"]


def test_variables_used_are_defined_and_instance_and_gpu_are_offered() -> None:
    uids = set()
    for stem, d in all_dashboards().items():
        defined = [v["name"] for v in d["templating"]["list"]]
        assert defined[:2] == ["datasource", "instance"], stem
        used: set[str] = set()
        for p in d["panels"]:
            for t in p.get("targets", []):
                used |= variables(t["expr"])
        for v in d["templating"]["list"]:
            used |= variables(v["query"]) if v["type"] == "query" else set()
        assert used - BUILTIN_VARIABLES <= set(defined), f"{stem}: undefined variables {used - set(defined)}"
        if "gpu" in used:
            assert "gpu" in defined, stem
        assert d["uid"] not in uids
        uids.add(d["uid"])
    assert "gpu" in [v["name"] for v in all_dashboards()["node-overview"]["templating"]["list"]]


def test_provisioning_points_grafana_at_prometheus_and_the_json(tmp_path: Path) -> None:
    build(tmp_path, dashboards_path="/srv/dash", prometheus_url="http://prom:9090")
    ds = (tmp_path / "provisioning" / "datasources" / "gputuned.yaml").read_text()
    assert "type: prometheus" in ds and "url: http://prom:9090" in ds and "name: Prometheus" in ds
    prov = (tmp_path / "provisioning" / "dashboards" / "gputuned.yaml").read_text()
    assert "path: /srv/dash" in prov and "type: file" in prov
    # the datasource variable's default names the provisioned data source
    for d in all_dashboards().values():
        assert d["templating"]["list"][0]["current"]["value"] == "Prometheus"


def test_cli_builds_into_a_directory_and_rejects_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["dashboards", "build", "-o", str(out), "--docs", str(tmp_path / "d.md")]) == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["forecasts.json", "node-overview.json", "training-job.json", "tuner.json"]
    assert (tmp_path / "d.md").read_text() == DOCS.read_text()
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["dashboards", "build", "-o", str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_module_defers_grafanalib() -> None:
    code = "import sys; from gputuned.daemon.commands.cli import build_parser; build_parser(); print('grafanalib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
