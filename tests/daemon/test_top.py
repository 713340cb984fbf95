"""`gputuned top` and `gputuned status` rendered at 80 columns for an 8-GPU node with a job and an alert."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from testkit import config

from gputuned.daemon.app.components import attach_configured
from gputuned.daemon.app.daemon import Daemon
from gputuned.daemon.app.runtime import pause_flag
from gputuned.daemon.commands.cli import main
from gputuned.daemon.commands.status import admin_request
from gputuned.daemon.commands.top import handle_key, pauser
from gputuned.daemon.commands.top_data import Source, TopState
from gputuned.daemon.commands.top_tables import status_renderables
from gputuned.daemon.commands.top_view import View, render_top

ECC_NOW = """name = "ecc-now"
description = "Failing HBM row on GPU 2 from the start"

[[event]]
kind = "ecc_storm"
start_s = 0
ramp_s = 2
magnitude = 40.0
gpus = [2]
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, TopState, dict[str, Any]]]:
    """A daemon on a simulated 8-GPU node with its job, forecaster and tuner, once an ECC alert holds."""
    tmp = tmp_path_factory.mktemp("top")
    (tmp / "ecc.toml").write_text(ECC_NOW)
    cfg = config(daemon={"state_file": str(tmp / "state.json"), "interval_seconds": 0.5},
                 control={"socket_path": str(tmp / "control.sock")},
                 sim={"gpus": 8, "scenario": str(tmp / "ecc.toml")}, collectors={"infiniband": {"enabled": False}})
    daemon = Daemon(cfg)
    attach_configured(daemon)
    daemon.start()
    try:
        assert daemon.server is not None
        source = Source(daemon.server.url, str(cfg.control.socket_path))
        deadline = time.monotonic() + 30
        state = source.poll()
        while time.monotonic() < deadline and not (state.alerts and state.jobs and state.jobs[0].samples_per_s):
            time.sleep(0.5)
            state = source.poll()
        status = admin_request(cfg.control.socket_path, "status")["status"]
        yield daemon, state, status
    finally:
        daemon.stop()


def _text(renderable: Any, width: int, height: int = 24) -> str:
    con = Console(width=width, height=height, record=True, file=io.StringIO(), color_system="truecolor")
    con.print(renderable)
    return con.export_text()


def _gpu_rows(text: str) -> dict[int, str]:
    """Table lines that start with a GPU index followed by its model."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\W*(\d)\W+(H100)\b", line)
        if m:
            rows[int(m.group(1))] = line
    return rows


def test_top_at_80_columns_shows_every_gpu_its_model_and_power(node: tuple[Daemon, TopState, dict[str, Any]]) -> None:
    _, state, _ = node
    assert len(state.gpus) == 8 and state.alerts and state.jobs
    text = _text(render_top(state, View(), 80), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = _gpu_rows(text)
    assert sorted(rows) == list(range(8)), text
    for g in state.gpus:
        assert f"{g.power_w:.0f}/{g.limit_w:.0f}W" in rows[g.index], rows[g.index]
    assert "sim-job" in text
    assert "…" not in text


def test_top_shows_the_alert_in_full_wrapped_not_cut(node: tuple[Daemon, TopState, dict[str, Any]]) -> None:
    _, state, _ = node
    alert = next(a for a in state.alerts if a.startswith("ecc on gpu 2"))
    assert "H100" in alert and "PCI" in alert
    for width in (80, 160):
        flat = " ".join(_text(render_top(state, View(), width), width, 48).split())
        assert alert in flat


def test_top_grows_with_the_terminal(node: tuple[Daemon, TopState, dict[str, Any]]) -> None:
    _, state, _ = node
    narrow, wide = _text(render_top(state, View(), 80), 80), _text(render_top(state, View(), 160), 160, 48)
    assert "util history" not in narrow and "util history" in wide and "NVLink" in wide
    assert len(narrow.splitlines()) <= 24


def test_status_at_80_columns_keeps_index_model_and_power_limit(node: tuple[Daemon, TopState, dict[str, Any]]) -> None:
    _, _, status = node
    text = "\n".join(_text(r, 80) for r in status_renderables(status, 80))
    rows = _gpu_rows(text)
    assert sorted(rows) == list(range(8)), text
    assert all("700 W" in line for line in rows.values())
    assert "…" not in text


def test_piped_status_is_plain_and_cuts_nothing(node: tuple[Daemon, TopState, dict[str, Any]],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    daemon, _, _ = node
    assert main(["status", "--socket", str(daemon.cfg.control.socket_path)]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "..." not in out
    assert not set("│─┃━┏┓└┘") & set(out)
    assert "tuner: on" in out
    assert sorted(_gpu_rows(out)) == list(range(8))


def test_keys_sort_pick_and_pause_through_the_kill_switch(node: tuple[Daemon, TopState, dict[str, Any]],
                                                          tmp_path: Path) -> None:
    daemon, state, _ = node
    view = View()
    assert handle_key("s", view, state, None) and view.sort == "util"
    assert handle_key("\x1b[D", view, state, None) and view.selected == 7
    assert handle_key("3", view, state, None) and view.selected == 3
    handle_key("p", view, state, None)
    assert "read-only" in view.message
    handle_key("p", view, state, pauser(str(daemon.cfg.control.socket_path)))  # through the daemon
    assert "tuner paused" in view.message, view.message
    assert pause_flag(daemon).paused() is not None and pause_flag(daemon).path.parent == daemon.cfg.daemon.state_file.parent
    assert not handle_key("q", view, state, None)


def test_top_without_a_daemon_says_why_in_a_frame(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", "--metrics-url", "http://127.0.0.1:9/metrics", "--count", "1"]) == 0
    out = capsys.readouterr().out
    assert "cannot read http://127.0.0.1:9/metrics" in out and "is the daemon running?" in out
