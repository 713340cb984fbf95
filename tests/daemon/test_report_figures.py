"""The report's figures are readable: units on every axis, "no data" on empty panels, zoom, legends off the data."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gputuned.collectors import families as F
from gputuned.daemon.commands.cli import main
from gputuned.daemon.record.report import build_figures, load_runs
from gputuned.daemon.record.report_axes import MARK_GID, NO_DATA
from gputuned.daemon.record.report_data import SAMPLES_PER_S, RunData, active_period
from gputuned.daemon.record.report_figures import window_of
from gputuned.daemon.record.trace import Recorder, TraceWriter

TRACE = Path(__file__).resolve().parents[1] / "data" / "dashboard_node.gttrace"
UNIT = re.compile(r"\[[^\]]+\]|\([^)]+\)|\bratio\b|\bcount\b")
GPU0 = (("gpu", "0"),)

pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def _close_figures() -> Any:
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _has_data(ax: Any) -> bool:
    return any(a.get_gid() != MARK_GID for a in [*ax.get_lines(), *ax.collections])


def _says_no_data(ax: Any) -> bool:
    return any(NO_DATA in t.get_text() for t in ax.texts)


def _check_readable(figures: list[tuple[str, Any]]) -> int:
    """Every axes labelled with a unit on x and y; every empty one says "no data". Returns the empty count."""
    empty = 0
    for stem, fig in figures:
        for ax in fig.get_axes():
            assert UNIT.search(ax.get_xlabel()), f"{stem}: x label {ax.get_xlabel()!r} has no unit"
            assert UNIT.search(ax.get_ylabel()), f"{stem}: y label {ax.get_ylabel()!r} has no unit"
            assert ax.get_legend() is None, f"{stem}: a legend inside the axes covers the data"
            if not _has_data(ax):
                assert _says_no_data(ax), f"{stem}: an empty panel ({ax.get_ylabel()}) without a 'no data' note"
                empty += 1
    return empty


def test_the_recorded_trace_report_labels_every_axis_with_its_unit() -> None:
    runs = load_runs(TRACE)
    figures = build_figures(runs)
    assert figures[0][0] == "summary"
    stems = [s for s, _ in figures]
    assert {"throughput", "power", "energy_per_sample", "forecast_gpu_temperature"} <= set(stems)
    assert _check_readable(figures) == 0  # the committed trace has every quantity
    kinds = {e["kind"] for e in runs[0].events}
    assert {"action", "rollback", "alert"} <= kinds  # read from the recorded counters and alert series


def test_an_empty_panel_says_no_data(tmp_path: Path) -> None:
    path = tmp_path / "power_only.gttrace"
    writer = TraceWriter(path)
    rec = Recorder(writer)
    for i in range(60):
        rec("gpu", 1000.0 + 2 * i, [(F.GPU_POWER, GPU0, 250.0 + i)])
    writer.close()
    figures = build_figures(load_runs(path))
    assert _check_readable(figures) >= 5  # throughput, SM clock, temperature, batch size, energy per sample
    power = dict(figures)["power"].get_axes()[0]
    assert _has_data(power) and not _says_no_data(power)


def _hour_with_early_moves() -> list[RunData]:
    t = 1e9 + np.arange(0.0, 3600.0, 2.0)
    power = np.where(t - t[0] < 480, 400.0 - (t - t[0]) / 4, 280.0)
    series = {(F.GPU_POWER, GPU0): (t, power), (SAMPLES_PER_S, (("rank", "0"),)): (t, 1000.0 + 0 * t)}
    events = [{"t": t[0] + s, "kind": "action", "knob": "power_limit"} for s in range(40, 480, 40)]
    events.append({"t": t[0] + 300, "kind": "rollback", "knob": "power_limit"})
    return [RunData("off", series, [], {}, t[0]), RunData("on", series, events, {}, t[0])]


def test_time_axes_zoom_on_the_active_period_with_the_full_run_below() -> None:
    runs = _hour_with_early_moves()
    window = window_of(runs)
    assert window is not None and window[0] == 0.0 and 8.0 < window[1] < 10.0
    figures = dict(build_figures(runs))
    zoom, full = figures["power"].get_axes()
    assert zoom.get_xlim() == pytest.approx(window)
    assert full.get_xlim()[1] == pytest.approx(3598 / 60)
    summary_axes = figures["summary"].get_axes()
    assert len(summary_axes) == 7 and summary_axes[-1].get_xlim()[1] == pytest.approx(3598 / 60)
    keys = [t.get_text() for leg in figures["power"].legends for t in leg.get_texts()]
    assert "tuner action" in keys and any(k.startswith("rollback") for k in keys)  # the marks explained on the figure
    _check_readable(list(figures.items()))


def test_no_zoom_where_the_tuner_moves_all_run_long() -> None:
    runs = _hour_with_early_moves()
    runs[1].events += [{"t": runs[1].t0 + 3400, "kind": "action", "knob": "power_limit"}]
    assert active_period(runs[1]) is None
    (zoom,) = dict(build_figures(runs))["power"].get_axes()
    assert zoom.get_xlim() == pytest.approx((0.0, 3598 / 60))


def test_report_takes_a_trace_file_and_reads_old_run_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(TRACE), "-o", str(tmp_path / "node.html")]) == 0
    assert (tmp_path / "node_figures" / "summary.png").is_file()
    assert (tmp_path / "node.html").read_text().count("data:image/png;base64,") >= 7
    old = tmp_path / "exp" / "on"
    old.mkdir(parents=True)
    shutil.copy(TRACE, old / "trace.gtrace")  # the extension run folders had before
    (runs,) = load_runs(tmp_path / "exp")
    assert runs.name == "on" and runs.series
    assert main(["report", str(tmp_path / "nothing.gttrace"), "-o", str(tmp_path / "x.html")]) == 2
    assert "nothing.gttrace: no such file" in capsys.readouterr().err
