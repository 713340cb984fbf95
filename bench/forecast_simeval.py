"""Scoring of simulated-scenario runs: recall, false alerts per GPU-day, lead time, per kind."""

from __future__ import annotations

import statistics
import time

from forecast_simrun import T0, RunResult, run_scenario

from gputuned.collectors.sim.scenarios import KINDS, available_scenarios

WORKLOADS = ("imagenet-resnet50", "gpt2-small-openwebtext")
GRACE_S = 900.0
BURN_IN_S = 900.0
HARDWARE_FOR = {"cooling_loss": {"thermal"}, "ecc_storm": {"ecc", "xid"}, "power_brake": set()}


def gradual(onset_to_cost_s: float) -> bool:
    """Gradual: the event takes a minute or more from its labelled start to its cost (5 %
    throughput, a limit crossed), so an alert can come first; otherwise abrupt."""
    return onset_to_cost_s >= 60.0


def affected(kind: str) -> set[str]:
    """Families the label names for ``kind``, with throughput standing in for step time."""
    fams = set(KINDS[kind][2])
    if "gputuned_trainer_step_time_seconds" in fams:
        fams.add("gputuned_trainer_samples_per_second")
    return fams


def score(r: RunResult) -> tuple[bool, int, float | None]:
    """(detected, false alerts, lead time in seconds) of one run."""
    fams = affected(r.kind)
    hw = HARDWARE_FOR.get(r.kind, set())
    first = None
    false = 0
    for when, a in r.alerts:
        inside = r.start <= when <= r.end + GRACE_S
        if inside and (a.series in fams or a.kind in hw):
            first = when if first is None else min(first, when)
        elif not inside and when >= T0 + BURN_IN_S:
            false += 1
    ref = r.cost_t if r.cost_t is not None else r.limit_t if r.limit_t is not None else r.start
    return first is not None, false, None if first is None else ref - first


def print_sim_eval(seeds: int) -> None:
    """Run every scenario x workload x seed and print the per-kind table."""
    rows: dict[str, dict[str, list[float]]] = {}
    began = time.perf_counter()
    n_runs = 0
    for name in available_scenarios():
        for wl in WORKLOADS:
            for seed in range(seeds):
                r = run_scenario(name, wl, seed)
                n_runs += 1
                hit, false, lead = score(r)
                row = rows.setdefault(r.kind, {"hit": [], "false": [], "gpu_days": [], "lead": [], "onset": [],
                                               "obs_hit": []})
                ref = r.cost_t if r.cost_t is not None else r.limit_t if r.limit_t is not None else r.start
                row["onset"].append(ref - r.start)
                row["hit"].append(float(hit))
                if r.observable:
                    row["obs_hit"].append(float(hit))
                row["false"].append(float(false))
                row["gpu_days"].append(r.gpus * (r.duration - BURN_IN_S) / 86400.0)
                if lead is not None:
                    row["lead"].append(lead)
    print("| kind | runs | recall | observable runs | recall (observable) | false alerts / GPU-day |"
          " median lead time (s) | median onset to cost (s) | gradual |")
    print("|---|---|---|---|---|---|---|---|---|")
    tot_false = tot_days = 0.0
    for kind, row in rows.items():
        lead = f"{statistics.median(row['lead']):.0f}" if row["lead"] else "-"
        fpd = sum(row["false"]) / sum(row["gpu_days"])
        tot_false += sum(row["false"])
        tot_days += sum(row["gpu_days"])
        onset = statistics.median(row["onset"])
        obs = f"{statistics.fmean(row['obs_hit']):.2f}" if row["obs_hit"] else "-"
        print(f"| {kind} | {len(row['hit'])} | {statistics.fmean(row['hit']):.2f} | {len(row['obs_hit'])} | {obs} |"
              f" {fpd:.2f} | {lead} | {onset:.0f} | {'yes' if gradual(onset) else 'no'} |")
    print(f"\nall kinds: {tot_false:.0f} false alerts in {tot_days:.1f} GPU-days "
          f"({tot_false / tot_days:.2f} per GPU-day); {n_runs} runs in {time.perf_counter() - began:.0f} s")
    hits = [h for row in rows.values() for h in row["hit"]]
    obs = [h for row in rows.values() for h in row["obs_hit"]]
    print(f"recall: {sum(hits):.0f}/{len(hits)} runs, {sum(obs):.0f}/{len(obs)} observable runs")
