"""Evaluate the detector on labelled data: recall, false alerts per day, lead time, per kind.

    .venv/bin/python bench/forecast_eval.py --source sim [--seeds 3]
    .venv/bin/python bench/forecast_eval.py --source synthetic [--seeds 12]

``sim``: every shipped degradation scenario of the simulated node, on two workloads, over
several seeds, through the daemon's ``ForecastService`` (see forecast_simrun.py). An alert
raised between the labelled start and the end plus a grace period, on a series the label
names as affected (or the matching hardware alert), detects the event; alerts raised outside
any event window after the job's first 15 minutes are false. Lead time: the time the event
first costs 5 % throughput (else first puts a GPU past a limit: 98 % memory, 85 C; else its
labelled start) minus the first detecting alert.

``synthetic``: step, ramp, spike and variance events on four backgrounds (forecast_synth.py),
one series each, scored with ``gputuned detect``'s function.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from _common import BenchParser, detector_config, positive_int
from forecast_synth import BACKGROUNDS, DAY_S, KINDS, make_series

from gputuned.tuner.forecast.commands import detect_series
from gputuned.tuner.forecast.detector import DetectorConfig

GRACE_S = 900.0


def evaluate(seeds: int, config: DetectorConfig | None = None) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-kind recall, false alerts per series-day and median lead time; plus cost figures
    and false alerts per series-day by background (``bg:<name>`` keys)."""
    rows: dict[str, dict[str, list[float]]] = {
        k: {"hit": [], "false": [], "lead": [], "days": []} for k in KINDS
    }
    by_bg: dict[str, list[float]] = {b: [0.0, 0.0] for b in BACKGROUNDS}
    samples = 0
    elapsed = 0.0
    for kind in KINDS:
        for bg in BACKGROUNDS:
            for seed in range(seeds):
                rng = np.random.default_rng(1000 * seed + 17 * KINDS.index(kind) + BACKGROUNDS.index(bg))
                s = make_series(rng, kind, bg)
                t0 = time.perf_counter()
                _, alerts = detect_series(s.t.tolist(), s.x.tolist(), config=config)
                elapsed += time.perf_counter() - t0
                samples += len(s.t)
                a = np.asarray(alerts, bool)
                raised = s.t[1:][a[1:] & ~a[:-1]]
                if a[0]:
                    raised = np.concatenate([[s.t[0]], raised])
                inside = (raised >= s.start) & (raised <= s.end + GRACE_S)
                r = rows[kind]
                if kind != "none":
                    r["hit"].append(float(inside.any()))
                    if inside.any():
                        r["lead"].append(s.cost_t - float(raised[inside][0]))
                r["false"].append(float((~inside).sum()) if kind != "none" else float(len(raised)))
                r["days"].append((s.t[-1] - s.t[0]) / DAY_S)
                by_bg[bg][0] += r["false"][-1]
                by_bg[bg][1] += r["days"][-1]
    out: dict[str, dict[str, float]] = {}
    for kind, r in rows.items():
        out[kind] = {
            "series": len(r["days"]),
            "recall": statistics.fmean(r["hit"]) if r["hit"] else float("nan"),
            "false_per_day": sum(r["false"]) / sum(r["days"]),
            "lead_s": statistics.median(r["lead"]) if r["lead"] else float("nan"),
        }
    cost = {"samples": samples, "us_per_sample": 1e6 * elapsed / samples}
    cost.update({f"bg:{b}": f / d for b, (f, d) in by_bg.items()})
    return out, cost


def main() -> int:
    """Run the evaluation and print markdown tables."""
    ap = BenchParser(description=__doc__)
    ap.add_argument("--source", choices=["sim", "synthetic"], default="sim", help="labelled data to score")
    ap.add_argument("--seeds", type=positive_int, default=None, help="seeds per case (default: 3 for sim, 12 for synthetic)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="DetectorConfig override (synthetic; repeatable)")
    args = ap.parse_args()
    config = detector_config(ap, args.set)
    if args.source == "sim":
        from forecast_simeval import print_sim_eval

        print_sim_eval(args.seeds or 3)
        return 0
    table, cost = evaluate(args.seeds or 12, config)
    print("| kind | series | recall | false alerts / series-day | median lead time (s) |")
    print("|---|---|---|---|---|")
    for kind, m in table.items():
        rec = "-" if kind == "none" else f"{m['recall']:.3f}"
        lead = "-" if kind == "none" else f"{m['lead_s']:.0f}"
        print(f"| {kind} | {m['series']:.0f} | {rec} | {m['false_per_day']:.2f} | {lead} |")
    print("\n| background | false alerts / series-day (all kinds) |\n|---|---|")
    for b in BACKGROUNDS:
        print(f"| {b} | {cost['bg:' + b]:.2f} |")
    print(f"\n{cost['samples']:.0f} samples, detector {cost['us_per_sample']:.1f} us/sample")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
