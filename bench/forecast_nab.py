"""Score the streaming detector on the Numenta Anomaly Benchmark's labelled real series.

    .venv/bin/python bench/forecast_nab.py [--nab /work/.mirror/numenta+NAB/repo]
        [--corpora realKnownCause,...] [--half A|B|all] [--set key=value ...] [--files]

NAB (https://github.com/numenta/NAB, MIT licence) is read from a bare git mirror and its
series are exported to a temporary directory for the run (nothing of NAB is committed here).
Every file goes through ``gputuned detect``'s own reader and detector: streaming, each row
judged only from the rows before it, default settings (direction both), rows in file order
(``--allow-unsorted``: one file, machine_temperature_system_failure, steps back 55 minutes).

A detection is an alert *raise* (the rising edge of the alert flag: what an operator is paged
for), not every row the alert holds. Per file and summed per corpus and per half:

* window recall: labelled windows with at least one raise inside (the first one counts);
* false alerts per day: raises outside every window, after NAB's probationary period (the
  first 15 % of rows, at most 750), a raise within ``MERGE_S`` of the previous alert's clear
  merged into it (one event), over the days outside the windows;
* delay: first raise in a window minus the labelled anomaly time (NAB centres its windows on
  it, so negative means inside the window before the label), and minus the window start;
* NAB standard-profile score, implemented here from NAB's published rules: the first raise in
  a window earns the scaled sigmoid of its relative position (normalised to 1 at the left
  edge), each raise outside a window costs 0.11 times the sigmoid of its distance past the
  previous window (0.11 when no window precedes), each missed window costs 1; raises in the
  probationary period do not count; normalised as 100 * (raw - null) / (perfect - null) with
  null = never alerting and perfect = every window at its left edge. Also shown: the same
  score with every row the alert holds counted as a detection (NAB's literal reading of a
  flag column: each held row outside a window costs as a false positive).

Halves: the selected files sorted by ``corpus/name``; even positions are half A (the files
detector changes were chosen on), odd positions half B (held out, looked at only to report).
``--half A`` runs and reports half A only (what a tuning loop may look at), ``--half B`` the
held-out half, ``--half all`` (the default) both, each reported separately and together.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import BenchParser, csv_choices, detector_config, progress

from gputuned.tuner.forecast.csvio import parse_timestamp, read_series
from gputuned.tuner.forecast.detector import DetectorConfig, OnlineDetector

DEFAULT_NAB = "/work/.mirror/numenta+NAB/repo"
CORPORA = (
    "realKnownCause", "realAWSCloudwatch", "artificialWithAnomaly", "realAdExchange",
    "realTraffic", "realTweets", "artificialNoAnomaly",
)
MERGE_S = 3600.0
DAY_S = 86400.0
FP_WEIGHT, FN_WEIGHT, TP_WEIGHT = 0.11, 1.0, 1.0


def scaled_sigmoid(y: float) -> float:
    """NAB's scaled sigmoid of a relative position: ~1 at -1, 0 at 0, towards -1 past 0."""
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


@dataclass
class FileScore:
    """Scores of one series."""

    name: str
    rows: int
    half: str = "A"
    windows: int = 0
    hits: int = 0
    false: int = 0
    days_out: float = 0.0
    raw: float = 0.0
    raw_rows: float = 0.0
    null: float = 0.0
    perfect: float = 0.0
    delays_label_h: list[float] = field(default_factory=list)
    delays_start_h: list[float] = field(default_factory=list)


def export(nab: str, corpora: tuple[str, ...], dest: Path) -> list[str]:
    """Copy the corpora's CSVs and the label files out of the git mirror; return file names."""
    listing = subprocess.run(
        ["git", "-C", nab, "ls-tree", "-r", "--name-only", "HEAD", "data"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    names = sorted(p[len("data/"):] for p in listing if p.endswith(".csv") and p.split("/")[1] in corpora)
    for rel in [f"data/{n}" for n in names] + ["labels/combined_windows.json", "labels/combined_labels.json"]:
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(subprocess.run(["git", "-C", nab, "show", f"HEAD:{rel}"], check=True, capture_output=True).stdout)
    return names


def alerts_of(path: Path, config: DetectorConfig) -> tuple[list[float], list[bool]]:
    """Timestamps and alert flags exactly as ``gputuned detect`` computes them."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        series = read_series(f, str(path), allow_unsorted=True)
    det = OnlineDetector(config)
    flags = [det.update(t, v).alert for t, v in zip(series.times, series.values, strict=True)]
    return series.times, flags


def score_file(
    name: str, times: list[float], flags: list[bool], windows: list[tuple[float, float]], labels: list[float]
) -> FileScore:
    """Window recall, merged false alerts, delays and NAB standard score of one series."""
    n = len(times)
    fs = FileScore(name, n, windows=len(windows))
    probation = min(math.floor(0.15 * n), 750)
    # window index ranges, as NAB: rows with window start <= t <= window end
    spans = []
    for a, b in windows:
        lo = next((i for i, t in enumerate(times) if t >= a), n)
        hi = max((i for i, t in enumerate(times) if t <= b), default=-1)
        spans.append((lo, hi))
    raises = [i for i in range(n) if flags[i] and (i == 0 or not flags[i - 1])]
    clears = [i for i in range(1, n) if flags[i - 1] and not flags[i]]
    hit_window: set[int] = set()
    last_clear_t = -math.inf
    t_probation = times[probation] if probation < n else times[-1]
    for i in raises:
        k = next((k for k, (lo, hi) in enumerate(spans) if lo <= i <= hi), None)
        if i < probation:
            pass
        elif k is not None:
            if k not in hit_window:
                hit_window.add(k)
                lo, hi = spans[k]
                width = hi - lo + 1
                fs.raw += TP_WEIGHT * scaled_sigmoid(-(hi - i + 1) / width) / scaled_sigmoid(-1.0)
                fs.delays_start_h.append((times[i] - windows[k][0]) / 3600.0)
                inside = [lt for lt in labels if windows[k][0] <= lt <= windows[k][1]]
                if inside:
                    fs.delays_label_h.append((times[i] - inside[0]) / 3600.0)
        else:
            prev = [(lo, hi) for lo, hi in spans if hi < i]
            if prev:
                lo, hi = prev[-1]
                fs.raw += FP_WEIGHT * scaled_sigmoid(abs(i - hi) / max(hi - lo, 1))
            else:
                fs.raw -= FP_WEIGHT
            if times[i] - last_clear_t > MERGE_S:
                fs.false += 1
        later = [c for c in clears if c > i]
        last_clear_t = times[later[0]] if later else math.inf
    scored = [k for k, (lo, hi) in enumerate(spans) if hi >= probation]
    fs.raw_rows = _nab_raw([i for i in range(probation, n) if flags[i]], spans, scored)
    fs.hits = len(hit_window)
    fs.raw -= FN_WEIGHT * (len(scored) - len([k for k in hit_window if k in scored]))
    fs.null = -FN_WEIGHT * len(scored)
    fs.perfect = TP_WEIGHT * len(scored)
    inside_s = sum(max(0.0, min(b, times[-1]) - max(a, t_probation)) for a, b in windows)
    fs.days_out = max(times[-1] - t_probation - inside_s, 0.0) / DAY_S
    return fs


def _nab_raw(detections: list[int], spans: list[tuple[int, int]], scored: list[int]) -> float:
    """NAB standard raw score of detection rows (after probation), as in the raise-based score."""
    raw = 0.0
    done: set[int] = set()
    for i in detections:
        k = next((k for k, (lo, hi) in enumerate(spans) if lo <= i <= hi), None)
        if k is not None:
            if k not in done:
                done.add(k)
                lo, hi = spans[k]
                raw += TP_WEIGHT * scaled_sigmoid(-(hi - i + 1) / (hi - lo + 1)) / scaled_sigmoid(-1.0)
            continue
        prev = [(lo, hi) for lo, hi in spans if hi < i]
        raw += FP_WEIGHT * (scaled_sigmoid(abs(i - prev[-1][1]) / max(prev[-1][1] - prev[-1][0], 1)) if prev else -1.0)
    return raw - FN_WEIGHT * len([k for k in scored if k not in done])


def summarise(rows: list[FileScore]) -> dict[str, float]:
    """Summed figures of a group of files."""
    w = sum(r.windows for r in rows)
    days = sum(r.days_out for r in rows)
    null, perfect, raw, raw_rows = (sum(getattr(r, k) for r in rows) for k in ("null", "perfect", "raw", "raw_rows"))
    dl = sorted(d for r in rows for d in r.delays_label_h)
    ds = sorted(d for r in rows for d in r.delays_start_h)
    return {
        "files": len(rows), "windows": w, "hits": sum(r.hits for r in rows),
        "recall": sum(r.hits for r in rows) / w if w else math.nan,
        "false": sum(r.false for r in rows), "days": days,
        "false_per_day": sum(r.false for r in rows) / days if days else math.nan,
        "nab": 100.0 * (raw - null) / (perfect - null) if perfect > null else math.nan,
        "nab_rows": 100.0 * (raw_rows - null) / (perfect - null) if perfect > null else math.nan,
        "delay_label_h": dl[len(dl) // 2] if dl else math.nan,
        "delay_start_h": ds[len(ds) // 2] if ds else math.nan,
    }


def run(
    nab: str, corpora: tuple[str, ...], config: DetectorConfig, halves: str = "AB"
) -> tuple[list[FileScore], float, int]:
    """Export, detect and score every file of ``halves``; return scores, detector seconds and rows."""
    with tempfile.TemporaryDirectory(prefix="nab-") as tmp:
        root = Path(tmp)
        names = export(nab, corpora, root)
        windows = json.loads((root / "labels/combined_windows.json").read_text())
        labels = json.loads((root / "labels/combined_labels.json").read_text())
        scores = []
        elapsed, rows = 0.0, 0
        half = half_of(names)
        for name in progress([n for n in names if half[n] in halves], "NAB files"):
            t0 = time.perf_counter()
            times, flags = alerts_of(root / "data" / name, config)
            elapsed += time.perf_counter() - t0
            rows += len(times)
            win = [(parse_timestamp(a), parse_timestamp(b)) for a, b in windows.get(name, [])]
            lab = sorted(parse_timestamp(x) for x in labels.get(name, []))
            scores.append(score_file(name, times, flags, win, lab))
            scores[-1].half = half[name]
    return scores, elapsed, rows


def half_of(names: list[str]) -> dict[str, str]:
    """Half A or B of each file: alternate positions of the names sorted."""
    return {n: "AB"[i % 2] for i, n in enumerate(sorted(names))}


def main() -> int:
    """Run and print markdown tables per corpus and half."""
    ap = BenchParser(description=__doc__)
    ap.add_argument("--nab", default=DEFAULT_NAB,
                    help="a git clone of https://github.com/numenta/NAB (bare or with a work tree)")
    ap.add_argument("--corpora", type=csv_choices(CORPORA), default=",".join(CORPORA),
                    help="comma-separated NAB corpora to score")
    ap.add_argument("--half", choices=("A", "B", "all"), default="all",
                    help="score half A (where choices are made), half B (held out) or both")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="DetectorConfig override (repeatable)")
    ap.add_argument("--files", action="store_true", help="also print one row per file")
    args = ap.parse_args()
    if not Path(args.nab).is_dir():
        ap.error(f"--nab: {args.nab} is not a directory (clone https://github.com/numenta/NAB and pass its path)")
    config = detector_config(ap, args.set)
    corpora = tuple(c for c in args.corpora.split(",") if c)
    halves = "AB" if args.half == "all" else args.half
    scores, elapsed, rows = run(args.nab, corpora, config, halves)
    print("| corpus | half | files | windows | recall | false alerts / day | NAB standard (raises) |"
          " NAB standard (every alert row) | median delay vs label (h) |")
    print("|---|---|---|---|---|---|---|---|---|")
    groups = [(c, h) for c in corpora for h in halves] + [("all", h) for h in halves]
    groups += [("all", "A+B")] if halves == "AB" else []
    for corpus, h in groups:
        rows_ = [
            s for s in scores
            if (corpus == "all" or s.name.startswith(corpus + "/")) and s.half in h
        ]
        if not rows_:
            continue
        m = summarise(rows_)
        rec = "-" if not m["windows"] else f"{m['hits']}/{m['windows']} = {m['recall']:.2f}"
        nab = "-" if math.isnan(m["nab"]) else f"{m['nab']:.1f} | {m['nab_rows']:.1f}"
        delay = "-" if math.isnan(m["delay_label_h"]) else f"{m['delay_label_h']:+.1f}"
        nab = nab if nab != "-" else "- | -"
        print(f"| {corpus} | {h} | {m['files']} | {m['windows']} | {rec} | {m['false_per_day']:.2f} | {nab} | {delay} |")
    if args.files:
        print("\n| file | half | rows | hits/windows | false | days out | NAB raw |\n|---|---|---|---|---|---|---|")
        for s in sorted(scores, key=lambda s: s.name):
            print(f"| {s.name} | {s.half} | {s.rows} | {s.hits}/{s.windows} | {s.false} | {s.days_out:.1f} | {s.raw:+.2f} |")
    print(f"\n{rows} rows, detector {1e6 * elapsed / rows:.1f} us/row")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
