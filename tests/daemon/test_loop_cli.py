"""``gputuned experiment`` and ``gputuned report`` from the command line: outputs and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.daemon.commands.cli import main


@pytest.fixture(autouse=True)
def _detach() -> None:
    yield
    sim_nvml.attach(None)


def test_experiment_with_forecasting_writes_both_runs_and_the_comparison(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["experiment", "--duration", "240", "--gpus", "1", "--profile", "v100", "--workload", "squad-bert",
                 "--objective", "throughput", "--interval", "10", "--forecast", "linear", "--seed", "2", "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "time to target" in text and "GPUs restored: yes" in text
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["spec"]["objective"] == "throughput" and doc["spec"]["profile"] == "v100"
    for run in ("off", "on"):
        assert (out / run / "trace.gttrace").stat().st_size > 1000
        summary = json.loads((out / run / "summary.json").read_text())
        assert summary["restored"] and summary["samples"] > 0
    # the forecast service ran beside the loop: its series are in the trace
    from gputuned.daemon.record.trace import read_trace

    names = {name for name, _ in read_trace(out / "on" / "trace.gttrace").series}
    assert "gputuned_anomaly_score" in names and "gputuned_tuner_knob_value" in names
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r_figures" / "throughput.png").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["experiment", "--workload", "no-such-job", "-o", "X"], "unknown workload 'no-such-job'"),
        (["experiment", "--profile", "b200", "--duration", "60", "-o", "X"], "b200"),
        (["experiment", "--scenario", "/nonexistent/s.toml", "-o", "X"], "--scenario: no such file"),
        (["experiment", "--policy", "/nonexistent/p.npz", "--chooser", "learned", "--duration", "60", "-o", "X"],
         "no such policy file"),
    ],
)
def test_experiment_bad_input_names_it_and_exits_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tmp_path / "o") if a == "X" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["experiment", "--duration", "-5", "-o", "x"], ["experiment", "--objective", "speed", "-o", "x"]])
def test_experiment_flag_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_report_on_a_directory_without_traces_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    assert "no trace file" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")]) == 2


def test_experiment_no_clocks_runs_the_tuner_without_clock_moves(tmp_path: Path) -> None:
    """``--no-clocks`` is ``[tuner] tune_clocks = false``: power and batch only, the same run otherwise."""
    out = tmp_path / "run"
    argv = ["experiment", "--duration", "600", "--gpus", "1", "--profile", "a100", "--workload", "vit-b16-imagenet",
            "--interval", "10", "--forecast", "off", "--json", "-o", str(out)]
    assert main([*argv, "--no-clocks"]) == 0
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["spec"]["tune_clocks"] is False and "sm_clock" not in doc["tuner"]["actions"]
    assert main([*argv, "--clocks", "-o", str(tmp_path / "on")]) == 0
    doc = json.loads((tmp_path / "on" / "comparison.json").read_text())
    assert doc["spec"]["tune_clocks"] is True and doc["tuner"]["actions"].get("sm_clock", 0) >= 1
