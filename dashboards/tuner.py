"""Tuner: what it changed (against the originals), what the guard stopped, and what it bought."""

from __future__ import annotations

from grafanalib import core as g

from gputuned.dashboards.board import dashboard, knob_change_annotations
from gputuned.dashboards.panels import fraction, stat, state_stat, state_timeline, timeseries
from gputuned.dashboards.queries import GPU, NODE, RANGE, RATE, Query, gpu_ratio, on_gpus
from gputuned.dashboards.thresholds import high_bad, info_only, low_bad, steps

UID = "gputuned-tuner"


def _increase(by: str, metric: str, window: str = RATE) -> str:
    """``sum by (by) (increase(metric{node}[window]))``: events per interval (or range) by label."""
    return f"sum by ({by}) (increase({metric}{{{NODE}}}[{window}]))"


def knob_panels() -> list[g.Panel]:
    """Knob values set by the tuner against the GPUs' original settings."""
    return [
        timeseries("Power limit against default", "watt", [
            # the live tuner sets one power limit for every GPU: gpu="all"
            Query(f'gputuned_tuner_knob_value{{{NODE}, gpu=~"$gpu|all", knob="power_limit"}}', "tuner target ({{gpu}})"),
            *on_gpus(("gputuned_gpu_power_limit_watts", "enforced"), ("gputuned_gpu_power_limit_default_watts", "default")),
        ], info_only(), "The tuner's power-limit target, the limit NVML enforces, and the GPU's default limit.", min_value=0),
        fraction("Power limit as fraction of default",
                 gpu_ratio("gputuned_gpu_power_limit_watts", "gputuned_gpu_power_limit_default_watts"),
                 steps("orange", ("green", 0.5)), "Enforced over default power limit; 1 is untouched, below 0.5 is an aggressive cap."),
        timeseries("SM clock against maximum", "hertz",
                   on_gpus(("gputuned_gpu_sm_clock_hertz", "current"), ("gputuned_gpu_sm_clock_max_hertz", "maximum")),
                   info_only(), "The current SM clock against the highest the GPU supports (power caps pull it down).", min_value=0),
        timeseries("Batch size: tuner against trainer", "short", [
            Query(f'max by (instance) (gputuned_tuner_knob_value{{{NODE}, knob="batch_size"}})', "{{instance}} tuner target"),
            Query(f"max by (instance, exported_job) (gputuned_trainer_batch_size{{{NODE}}})", "{{instance}} {{exported_job}} in use"),
        ], info_only(), "Batch size the tuner decided and the global batch size the job reports using.", min_value=0),
        stat("GPUs changed from original", "none",
             [Query(f"sum by (instance) (gputuned_actuation_gpu_changed{{{NODE}}})", "{{instance}}")],
             steps("green", ("orange", 1)), "GPUs whose settings may differ from the originals saved in the state file."),
        state_stat("Tuner paused / dry run", [
            Query(f"gputuned_tuner_paused{{{NODE}}}", "{{instance}} paused"),
            Query(f"gputuned_actuation_dry_run{{{NODE}}}", "{{instance}} dry run"),
        ], "1 while the kill switch holds the tuner, or while actuation only logs.", ("no", "green"), ("yes", "orange")),
    ]


def objective_panels() -> list[g.Panel]:
    """The tuner's objective against its reference interval at the job's own settings."""
    eps = f"gputuned_tuner_energy_per_sample_joules{{{NODE}}}"
    ref = f"gputuned_tuner_reference_energy_per_sample_joules{{{NODE}}}"
    return [
        timeseries("Energy per effective sample against reference", "suffix: J/sample",
                   [Query(eps, "{{exported_job}} now"), Query(ref, "{{exported_job}} reference")], info_only(),
                   "GPU energy per goodput sample over the tuner's last interval, and at the job's own settings.", min_value=0),
        timeseries("Energy saved per sample", "percentunit", [Query(f"1 - {eps} / {ref}", "{{exported_job}}")],
                   steps("red", ("orange", 0), ("green", 0.05)),
                   "Energy per effective sample saved against the reference; below 0 the tuner costs energy.", max_value=1),
        timeseries("Goodput against reference", "percentunit", [Query(f"gputuned_tuner_goodput_ratio{{{NODE}}}", "{{exported_job}}")],
                   low_bad(0.9, 0.97), "Goodput over the last interval relative to the reference; the default budget is a 3% slowdown.",
                   min_value=0),
        timeseries("Tuner decisions by move", "short", [Query(_increase("move", "gputuned_tuner_decisions_total"), "{{move}}")],
                   info_only(), "Decision intervals by chosen move: p power-limit step, b batch-size step (-1, 0, +1).",
                   min_value=0, stack=True),
    ]


def action_panels() -> list[g.Panel]:
    """Actions, guard interventions, rollbacks and actuation results."""
    return [
        timeseries("Tuner actions by knob", "short", [Query(_increase("knob", "gputuned_tuner_actions_total"), "{{knob}}")],
                   high_bad(5, 15), "Knob changes the tuner applied in each interval; many in a row mean it oscillates.",
                   min_value=0, stack=True),
        timeseries("Guard interventions by reason", "short",
                   [Query(_increase("reason", "gputuned_tuner_guard_interventions_total"), "{{reason}}")],
                   high_bad(1, 5), "Tuner proposals the safety guard refused or undid, by reason.", min_value=0, stack=True),
        stat("Rollbacks in range", "short", [Query(_increase("instance", "gputuned_tuner_rollbacks_total", RANGE), "{{instance}}")],
             high_bad(1, 5), "Actions undone because the objective got worse, over the dashboard's time range."),
        timeseries("Actuation results", "short", [
            Query(_increase("knob", "gputuned_actuation_changes_total"), "{{knob}} applied"),
            Query(_increase("knob, reason", "gputuned_actuation_refusals_total"), "{{knob}} refused: {{reason}}"),
        ], high_bad(1, 5), "GPU setting changes applied and verified, and those NVML refused or that failed.", min_value=0),
        stat("Restores to original", "short", [Query(f"sum by (instance) (gputuned_actuation_restores_total{{{NODE}}})", "{{instance}}")],
             info_only(), "Knobs put back to their recorded originals since the daemon started.", reduce="max"),
        state_timeline("Tuner frozen by hardware alerts",
                       [Query(f'max by (alert) (gputuned_alert_active{{{NODE}, alert=~"thermal|ecc|xid"}})', "{{alert}}")],
                       "Thermal, ECC and XID alerts; the guard freezes the tuner while one is active.",
                       ("clear", "green"), ("frozen", "red")),
    ]


def outcome_panels() -> list[g.Panel]:
    """What the changes bought: power and energy against throughput."""
    power = f"sum by (instance) (rate(gputuned_gpu_energy_joules_total{{{GPU}}}[{RATE}]))"
    samples = f"sum by (instance) (gputuned_trainer_samples_per_second{{{NODE}}})"
    return [
        timeseries("GPU power (sum)", "watt", [Query(power, "{{instance}}")], info_only(),
                   "Mean board power over each interval, from the energy counters of the selected GPUs.", min_value=0),
        timeseries("Energy per sample", "suffix: J/sample", [Query(f"{power} / on (instance) clamp_min({samples}, 1e-9)", "{{instance}}")],
                   info_only(), "GPU energy per trained sample on each node: what the power and clock knobs trade off.", min_value=0),
        timeseries("Throughput", "suffix: samples/s", [Query(samples, "{{instance}}")], info_only(),
                   "Samples per second of all jobs on each node, to set against the energy saved.", min_value=0),
        stat("GPU energy in range", "joule",
             [Query(f"sum by (instance) (increase(gputuned_gpu_energy_joules_total{{{GPU}}}[{RANGE}]))", "{{instance}}")],
             info_only(), "Energy the selected GPUs used over the dashboard's time range."),
    ]


def build() -> g.Dashboard:
    """The tuner dashboard."""
    return dashboard(
        "gputuned / Tuner",
        UID,
        "Knob values against the GPUs' originals, the objective (energy per effective sample and goodput against "
        "the reference interval, energy saved), tuner actions, guard interventions, rollbacks and actuation results.",
        [
            ("Knobs against originals", knob_panels()),
            ("Objective", objective_panels()),
            ("Actions and the guard", action_panels()),
            ("What it bought", outcome_panels()),
        ],
        tags=["tuner"],
        annotations=knob_change_annotations(),
    )
