"""Reading ``timestamp,value`` series and writing detector output for ``gputuned detect``.

Accepted timestamps: unix seconds (integer or decimal) or ISO 8601 date-times
(``2024-01-31T12:00:00``, ``2024-01-31 12:00:00.5``, with ``Z`` or ``+hh:mm`` offsets; a
time without an offset is taken as UTC). Timestamps must not decrease (unless allowed, then rows keep file order); equal ones are kept.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO


class SeriesInputError(ValueError):
    """Bad input file: the message names the row (1 = header) and what is wrong."""


def parse_timestamp(text: str) -> float:
    """Unix seconds from a number or an ISO 8601 date-time; ValueError if neither."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"timestamp {text!r} is not finite")
        return value
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is neither unix seconds nor ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass
class Series:
    """A parsed input series; the texts are echoed unchanged in the output."""

    time_texts: list[str]
    value_texts: list[str]
    times: list[float]
    values: list[float]


def read_series(stream: TextIO, name: str = "input", allow_unsorted: bool = False) -> Series:
    """Rows of a CSV with a header naming ``timestamp`` and ``value`` (other columns ignored).

    A timestamp earlier than the row before is an error unless ``allow_unsorted`` (real exports
    sometimes step back, e.g. a clock change); then rows are kept in file order.
    """
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise SeriesInputError(f"{name}: empty file (row 1: expected a header timestamp,value)") from None
    except csv.Error as e:
        raise SeriesInputError(f"{name}: row 1: {e}") from None
    columns = [h.strip().lower() for h in header]
    missing = [c for c in ("timestamp", "value") if c not in columns]
    if missing:
        raise SeriesInputError(
            f"{name}: row 1: header lacks column {', '.join(missing)} (found {', '.join(header) or 'nothing'})"
        )
    ti, vi = columns.index("timestamp"), columns.index("value")
    texts: list[str] = []
    vtexts: list[str] = []
    times: list[float] = []
    values: list[float] = []
    row_no = 1
    try:
        for row in reader:
            row_no += 1
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(ti, vi):
                raise SeriesInputError(f"{name}: row {row_no}: expected {len(columns)} columns, got {len(row)}")
            try:
                t = parse_timestamp(row[ti])
            except ValueError as e:
                raise SeriesInputError(f"{name}: row {row_no}: {e}") from None
            try:
                v = float(row[vi])
            except ValueError:
                raise SeriesInputError(f"{name}: row {row_no}: value {row[vi]!r} is not a number") from None
            if not math.isfinite(v):
                raise SeriesInputError(f"{name}: row {row_no}: value {row[vi]!r} is not finite")
            if times and t < times[-1] and not allow_unsorted:
                raise SeriesInputError(
                    f"{name}: row {row_no}: timestamp {row[ti].strip()!r} is earlier than the row before"
                    " (timestamps must be sorted)"
                )
            texts.append(row[ti].strip())
            vtexts.append(row[vi].strip())
            times.append(t)
            values.append(v)
    except csv.Error as e:
        raise SeriesInputError(f"{name}: row {row_no + 1}: {e}") from None
    if not times:
        raise SeriesInputError(f"{name}: row 2: no data rows after the header")
    return Series(texts, vtexts, times, values)


def format_rows(
    texts: Iterable[str], values: Iterable[str], scores: Iterable[float], alerts: Iterable[bool]
) -> str:
    """CSV text with header timestamp,value,anomaly_score,alert, one row per input row."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("timestamp", "value", "anomaly_score", "alert"))
    for t, v, s, a in zip(texts, values, scores, alerts, strict=True):
        w.writerow((t, v, f"{s:.6f}", 1 if a else 0))
    return out.getvalue()
