"""``gputuned detect``: output shape, streaming equivalence with the daemon's detector, bad input."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from gputuned.daemon.commands.cli import main
from gputuned.tuner.forecast.detector import OnlineDetector


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def series_csv(path: Path, n: int = 3000, iso: bool = False) -> tuple[Path, list[float]]:
    rng = random.Random(7)
    values = [50.0 + rng.gauss(0, 1) + (9.0 if n // 2 <= i < n // 2 + 100 else 0.0) for i in range(n)]
    rows = ["timestamp,value"]
    for i, v in enumerate(values):
        ts = f"2024-03-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z" if iso else str(1_700_000_000 + i)
        rows.append(f"{ts},{v:.4f}")
    return write(path, "\n".join(rows) + "\n"), values


def test_detect_writes_one_row_per_input_row_matching_the_daemon_detector(tmp_path: Path) -> None:
    src, _ = series_csv(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    assert main(["detect", str(src), "-o", str(out)]) == 0
    with open(src) as f:
        inp = list(csv.DictReader(f))
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "alert"]
    assert len(rows) == len(inp)
    assert [r["timestamp"] for r in rows] == [r["timestamp"] for r in inp]
    assert [r["value"] for r in rows] == [r["value"] for r in inp]
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 and r["alert"] in ("0", "1") for r in rows)
    det = OnlineDetector()
    expected = [det.update(float(r["timestamp"]), float(r["value"])).alert for r in inp]
    assert [r["alert"] == "1" for r in rows] == expected
    first = [r["alert"] for r in rows].index("1")
    assert 1500 <= first <= 1505


def test_detect_accepts_iso_timestamps_and_writes_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, _ = series_csv(tmp_path / "in.csv", n=400, iso=True)
    assert main(["detect", str(src)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "timestamp,value,anomaly_score,alert" and len(lines) == 401
    assert lines[1].startswith("2024-03-01T00:00:00Z,")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "row 1"),
        ("timestamp,val\n1,2\n", "row 1: header lacks column value"),
        ("timestamp,value\n", "row 2"),
        ("timestamp,value\n1,2\n2,abc\n", "row 3: value 'abc' is not a number"),
        ("timestamp,value\n1,2\nyesterday,3\n", "row 3: timestamp 'yesterday'"),
        ("timestamp,value\n5,2\n6,3\n4,1\n", "row 4: timestamp '4' is earlier"),
        ("timestamp,value\n1,nan\n", "row 2: value 'nan' is not finite"),
    ],
)
def test_bad_input_names_the_row_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    src = write(tmp_path / "bad.csv", text)
    assert main(["detect", str(src)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", str(tmp_path / "nope.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_allow_unsorted_judges_rows_in_file_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "".join(f"{t},{1.0 + 0.01 * (t % 3)}\n" for t in [*range(100, 200), *range(150, 250)])
    src = write(tmp_path / "back.csv", "timestamp,value\n" + rows)
    assert main(["detect", str(src)]) == 2
    assert "row 102" in capsys.readouterr().err
    out = tmp_path / "o.csv"
    assert main(["detect", str(src), "--allow-unsorted", "-o", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 201
