"""Largest energy saving any fixed configuration gets at a bounded slowdown, from the measured Zeus traces.

Usage: python bench/tuner_slowdown_bound.py [--max-slowdown 0.03]

For each GPU and each job whose default (b0, maximum power limit) was measured: among all fixed
(batch size, power limit) whose expected time to target is at most (1 + max slowdown) x the
default's, the largest energy-to-target saving; and the same with the batch size held at b0
(power limit only: then energy per sample and throughput change exactly as energy and time to
target do, which is the simulated-node goal's setting); and, ignoring epochs to target, the
least energy per sample over any (b, p) at no more than that loss of samples/s. Expected epochs are the seeds' mean;
a size with a seed that never reached the target is left out. Prints a markdown table.
"""

from __future__ import annotations

import math

from _common import BenchParser, fraction

from gputuned.tuner.zeus.traces import PACKAGED_TRACES, JobTrace, available_gpus, load_gpu


def bound(trace: JobTrace, max_slowdown: float, batch_sizes: tuple[int, ...]) -> tuple[float, int, int, float]:
    """(energy saving, b, p, slowdown) of the least-energy config within the slowdown, over ``batch_sizes``."""
    b0, p_max = trace.default_batch_size, trace.max_power_w
    e0 = trace.mean_epochs(b0)
    t_def = e0 * trace.epoch[(b0, p_max)][0]
    eta_def = t_def * trace.epoch[(b0, p_max)][1]
    best = (0.0, b0, p_max, 0.0)
    for (b, p), (t_ep, watts) in trace.epoch.items():
        epochs = trace.mean_epochs(b)
        if b not in batch_sizes or not math.isfinite(epochs):
            continue
        tta = epochs * t_ep
        if tta > (1.0 + max_slowdown) * t_def:
            continue
        saving = 1.0 - tta * watts / eta_def
        if saving > best[0]:
            best = (saving, b, p, tta / t_def - 1.0)
    return best


def per_sample_bound(trace: JobTrace, max_slowdown: float) -> tuple[float, int, int, float]:
    """(saving, b, p, throughput ratio to default) of the least energy per sample within the throughput loss, any (b, p).

    Ignores statistical efficiency (epochs to target), as a samples/s and J/sample view does.
    """
    t0, w0 = trace.epoch[(trace.default_batch_size, trace.max_power_w)]
    best = (0.0, trace.default_batch_size, trace.max_power_w, 1.0)
    for (b, p), (t_ep, watts) in trace.epoch.items():
        if t0 / t_ep < 1.0 - max_slowdown:
            continue
        saving = 1.0 - t_ep * watts / (t0 * w0)
        if saving > best[0]:
            best = (saving, b, p, t0 / t_ep)
    return best


def main() -> int:
    ap = BenchParser(description=__doc__)
    ap.add_argument("--max-slowdown", type=fraction, default=0.03,
                    help="allowed slowdown of time to target over the default's, as a fraction")
    args = ap.parse_args()
    print(f"| GPU | job | b0 | any (b, p) within {args.max_slowdown:.0%}: saving (b, p W, slowdown) "
          "| power limit only at b0: saving (p W, slowdown) "
          "| energy per sample, any (b, p): saving (b, p W, samples/s vs default) |")
    print("|---|---|---:|---|---|---|")
    for gpu in available_gpus(PACKAGED_TRACES):
        for job, trace in load_gpu(PACKAGED_TRACES, gpu).items():
            s1, b1, p1, d1 = bound(trace, args.max_slowdown, trace.batch_sizes)
            s2, _, p2, d2 = bound(trace, args.max_slowdown, (trace.default_batch_size,))
            s3, b3, p3, d3 = per_sample_bound(trace, args.max_slowdown)
            print(f"| {gpu} | {job} | {trace.default_batch_size} | {s1:.1%} ({b1}, {p1}, {d1:+.1%}) "
                  f"| {s2:.1%} ({p2}, {d2:+.1%}) | {s3:.1%} ({b3}, {p3}, {d3:.2f}x) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
