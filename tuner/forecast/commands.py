"""``gputuned detect``: run the daemon's online detector over an exported series (CSV)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gputuned import EXIT_USAGE

if TYPE_CHECKING:
    from gputuned.tuner.forecast.detector import DetectorConfig

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``detect`` subcommand."""
    p = subparsers.add_parser(
        "detect",
        help="score a timestamp,value CSV with the daemon's streaming anomaly detector",
        description=(
            "Read INPUT.csv (header with columns timestamp,value; timestamps as unix seconds or "
            "ISO 8601, sorted) and write timestamp,value,anomaly_score,alert, one row per input "
            "row, each judged only from the rows before it, exactly as the daemon alerts."
        ),
    )
    p.add_argument("input", metavar="INPUT.csv", help="series to score ('-' for stdin)")
    p.add_argument("-o", "--output", metavar="OUTPUT.csv", help="where to write (default: stdout)")
    p.add_argument(
        "--direction", choices=["both", "up", "down"], default="both",
        help="which deviations count (default: both)",
    )
    p.add_argument(
        "--allow-unsorted", action="store_true",
        help="judge rows in file order even where a timestamp steps back (default: error naming the row)",
    )
    p.set_defaults(func=run_detect, default_log_level="warning")


def detect_series(
    times: list[float], values: list[float], direction: str = "both", config: DetectorConfig | None = None
) -> tuple[list[float], list[bool]]:
    """Scores and alert flags of a whole series, streamed through one detector (default settings when
    ``config`` is None; ``direction`` wins over the config's)."""
    from dataclasses import replace

    from gputuned.tuner.forecast.detector import DetectorConfig, OnlineDetector

    det = OnlineDetector(replace(config or DetectorConfig(), direction=direction))
    scores: list[float] = []
    alerts: list[bool] = []
    for t, v in zip(times, values, strict=True):
        j = det.update(t, v)
        scores.append(j.score)
        alerts.append(j.alert)
    return scores, alerts


def run_detect(args: argparse.Namespace) -> int:
    """Entry point of ``gputuned detect``."""
    from gputuned.tuner.forecast.csvio import SeriesInputError, format_rows, read_series

    name = args.input
    try:
        if name == "-":
            series = read_series(sys.stdin, "stdin", args.allow_unsorted)
        else:
            with open(name, newline="", encoding="utf-8-sig") as f:
                series = read_series(f, name, args.allow_unsorted)
    except SeriesInputError as e:
        print(f"gputuned detect: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, UnicodeDecodeError) as e:
        print(f"gputuned detect: cannot read {name}: {e}", file=sys.stderr)
        return EXIT_USAGE
    start = time.perf_counter()
    scores, alerts = detect_series(series.times, series.values, args.direction)
    logger.info("scored %d rows in %.3f s", len(scores), time.perf_counter() - start)
    text = format_rows(series.time_texts, series.value_texts, scores, alerts)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as e:
            print(f"gputuned detect: cannot write {args.output}: {e}", file=sys.stderr)
            return EXIT_USAGE
    else:
        sys.stdout.write(text)
    return 0
