"""``gputuned tuner bench|pause|resume`` through the real CLI: JSON shape and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gputuned.daemon.commands.cli import main
from gputuned.tuner.zeus.bench import POLICIES, savings
from gputuned.tuner.zeus.traces import PACKAGED_TRACES


def test_bench_prints_the_issue_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["tuner", "bench", "--zeus-traces", str(PACKAGED_TRACES), "--gpu", "p100", "--eta-knob", "0.3",
               "--seeds", "1", "--recurrences", "4", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"gpu", "eta_knob", "results"}
    assert doc["gpu"] == "p100" and doc["eta_knob"] == 0.3
    jobs = {r["job"] for r in doc["results"]}
    assert jobs == {"cifar100", "movielens-1m"}  # the only p100 jobs whose default exists
    assert {(r["job"], r["policy"]) for r in doc["results"]} == {(j, p) for j in jobs for p in POLICIES}
    for r in doc["results"]:
        assert set(r) == {"job", "policy", "energy_j", "time_s", "cost"}
        assert r["energy_j"] > 0 and r["time_s"] > 0
        assert r["cost"] == pytest.approx(0.3 * r["energy_j"] + 0.7 * 250 * r["time_s"])
    saved = savings(doc)
    assert saved["oracle"] > 0.3  # both p100 jobs have large savings at the oracle


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--zeus-traces", "/nonexistent", "--gpu", "a40"], "not a directory"),
        (["--gpu", "h100"], "summary_power_h100.csv missing"),
        (["--gpu", "a40", "--eta-knob", "1.5"], "--eta-knob"),
        (["--gpu", "a40", "--seeds", "0"], "--seeds"),
        (["--gpu", "a40", "--policy", "/nonexistent.npz"], "--policy"),
    ],
)
def test_bench_bad_input_exits_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tuner", "bench", *argv, "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_pause_and_resume_without_a_daemon_set_the_flag_in_the_state_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gputuned.daemon.actuation.pause import PauseFlag, pause_path

    def config(state_dir: Path) -> str:
        path = tmp_path / f"{state_dir.name}.toml"
        path.write_text(f'[daemon]\nstate_file = "{state_dir}/state.json"\n'
                        f'[control]\nsocket_path = "{tmp_path}/no-daemon.sock"\n')
        return str(path)

    (tmp_path / "state").mkdir(mode=0o700)
    flag = PauseFlag(pause_path(tmp_path / "state" / "state.json"))  # where the next daemon's tuner reads it
    assert main(["tuner", "pause", "--config", config(tmp_path / "state")]) == 0
    assert "no daemon running" in capsys.readouterr().out
    paused = flag.paused()
    assert paused is not None and paused["since"] > 0 and "no daemon" in paused["by"]
    assert main(["tuner", "resume", "--config", config(tmp_path / "state")]) == 0
    assert flag.paused() is None
    assert main(["tuner", "pause", "--config", config(tmp_path / "missing")]) == 2  # nowhere to keep it
    err = capsys.readouterr().err.strip()
    assert "missing" in err and "does not exist" in err and "\n" not in err
    assert not (tmp_path / "missing").exists()
