"""Training job: which job is slow and why (compute, communication or data), and its numerics."""

from __future__ import annotations

from grafanalib import core as g

from gputuned.dashboards.board import dashboard, variable
from gputuned.dashboards.panels import fraction, stat, timeseries
from gputuned.dashboards.queries import GPU, NODE, RATE, Query
from gputuned.dashboards.thresholds import high_bad, info_only, low_bad, steps

UID = "gputuned-training"
# The trainer's series carry a label named job (the training job). Prometheus keeps its own
# target label job, so with the default honor_labels: false a scraped job label is stored as
# exported_job; the queries below select and group by that.
JOB = f'{NODE}, exported_job=~"$job"'
SAMPLES = "suffix: samples/s"
_EPS = "1e-9"


def _job(agg: str, metric: str) -> str:
    """``agg by (exported_job) (gputuned_trainer_<metric>{job})``: one value per training job."""
    return f"{agg} by (exported_job) (gputuned_trainer_{metric}{{{JOB}}})"


def _per_job(expr: str, what: str = "") -> Query:
    return Query(expr, f"{{{{exported_job}}}} {what}".rstrip())


def _over(numerator: str, denominator: str) -> str:
    """A ratio whose denominator never reaches zero."""
    return f"{numerator} / clamp_min({denominator}, {_EPS})"


def throughput_panels() -> list[g.Panel]:
    """Throughput, goodput and their ratio."""
    goodput, samples = _job("sum", "goodput_samples_per_second"), _job("sum", "samples_per_second")
    return [
        timeseries("Throughput", SAMPLES, [_per_job(samples)], info_only(),
                   "Samples per second summed over the job's ranks on the selected nodes.", min_value=0),
        timeseries("Goodput", SAMPLES, [_per_job(goodput)], info_only(),
                   "Throughput times statistical efficiency: progress per second that larger batches do not waste.", min_value=0),
        fraction("Statistical efficiency", [_per_job(_over(goodput, samples))], low_bad(0.5, 0.8),
                 "Goodput over throughput; low means the batch is far above the gradient noise scale."),
    ]


def step_panels() -> list[g.Panel]:
    """Step time and where it goes, and stragglers."""
    step = _job("avg", "step_time_seconds")
    return [
        timeseries("Step time breakdown", "s", [
            _per_job(_job("avg", "compute_seconds"), "compute"),
            _per_job(_job("avg", "communication_seconds"), "communication"),
            _per_job(_job("avg", "dataloader_wait_seconds"), "data wait"),
        ], info_only(), "Mean time per step in forward/backward compute, gradient communication and waiting for data.",
            min_value=0, stack=True),
        fraction("Share of step waiting", [
            _per_job(_over(_job("avg", "communication_seconds"), step), "communication"),
            _per_job(_over(_job("avg", "dataloader_wait_seconds"), step), "data wait"),
        ], high_bad(0.2, 0.4), "Communication and data-loader wait as fractions of the step time."),
        timeseries("Step time per rank", "s", [Query(f"gputuned_trainer_step_time_seconds{{{JOB}}}", "{{exported_job}} rank {{rank}}")],
                   info_only(), "Mean step time each rank reported; one rank above the rest is a straggler.", min_value=0),
        timeseries("Straggler ratio", "short", [_per_job(_over(_job("max", "step_time_seconds"), step))],
                   high_bad(1.1, 1.3), "Slowest rank's step time over the mean of the job's ranks.", min_value=1),
        stat("Ranks connected", "none", [_per_job(_job("sum", "rank_connected"))], steps("red", ("green", 1)),
             "Ranks of the job with a live control-socket connection on the selected nodes."),
        stat("Seconds since last report", "s", [_per_job(f"time() - {_job('max', 'last_report_timestamp_seconds')}")],
             high_bad(30, 120), "Age of the job's newest report; growing means the job hangs or its plugin lost the daemon."),
    ]


def numerics_panels() -> list[g.Panel]:
    """Loss, loss scale and overflows, gradient statistics and batch size."""
    overflows = f"sum by (exported_job) (increase(gputuned_trainer_overflows_total{{{JOB}}}[{RATE}]))"
    return [
        timeseries("Loss", "short", [_per_job(_job("avg", "loss"))], info_only(), "Mean training loss over the ranks' last reports."),
        timeseries("Loss scale", "short", [_per_job(_job("min", "loss_scale"))], low_bad(1, 128),
                   "Mixed-precision loss scale; a collapse toward 1 means gradients keep overflowing."),
        timeseries("Overflow steps", "short", [_per_job(overflows)], high_bad(1, 10),
                   "Steps skipped for gradient overflow in each interval.", min_value=0),
        timeseries("Batch size and gradient noise scale", "short", [
            _per_job(_job("max", "batch_size"), "global batch"),
            _per_job(_job("avg", "grad_noise_scale"), "gradient noise scale"),
        ], info_only(), "Global batch size against the gradient noise scale (the critical batch size estimate).", min_value=0),
        timeseries("Micro-batch and accumulation", "short", [
            _per_job(_job("max", "micro_batch_size"), "micro-batch"),
            _per_job(_job("max", "accumulation_steps"), "accumulation steps"),
        ], info_only(), "Per-rank micro-batch size and gradient accumulation steps per optimizer step.", min_value=0),
        timeseries("Gradient norm", "short", [_per_job(_job("avg", "grad_norm"))], info_only(),
                   "Mean global gradient norm; spikes precede divergence.", min_value=0),
        stat("Out-of-memory recoveries", "short", [_per_job(_job("sum", "oom_total"))], high_bad(1, 3),
             "Out-of-memory errors the trainer recovered from since it started.", reduce="max"),
    ]


def resource_panels() -> list[g.Panel]:
    """What the job costs: GPU load, power, energy per sample, communication volume."""
    energy = f"sum(rate(gputuned_gpu_energy_joules_total{{{GPU}}}[{RATE}]))"
    return [
        fraction("GPU utilization (mean)", [Query(f"avg by (instance) (gputuned_gpu_utilization_ratio{{{GPU}}})", "{{instance}}")],
                 low_bad(0.3, 0.7), "Mean GPU utilization over the selected GPUs of each node."),
        timeseries("Node GPU power", "watt", [Query(f"sum by (instance) (gputuned_gpu_power_watts{{{GPU}}})", "{{instance}}")],
                   info_only(), "Board power summed over the selected GPUs.", min_value=0),
        timeseries("Energy per sample", "suffix: J/sample",
                   [Query(_over(energy, f"sum(gputuned_trainer_samples_per_second{{{JOB}}})"), "energy per sample")],
                   info_only(), "GPU energy of the selected GPUs per trained sample (all jobs on them together).", min_value=0),
        timeseries("Gradient communication", "Bps", [
            _per_job(f"sum by (exported_job) (rate(gputuned_trainer_{counter}_total{{{JOB}}}[{RATE}]))", what)
            for counter, what in (("comm_bytes", "sent"), ("comm_bytes_uncompressed", "uncompressed"))
        ], info_only(), "Bytes per second sent by gradient communication, and what it would be uncompressed.", min_value=0),
    ]


def build() -> g.Dashboard:
    """The training job dashboard."""
    return dashboard(
        "gputuned / Training job",
        UID,
        "Throughput and goodput, step-time breakdown, stragglers, loss scale and overflows, batch size against "
        "the gradient noise scale, and what the job costs in GPU power and energy.",
        [
            ("Throughput", throughput_panels()),
            ("Step time", step_panels()),
            ("Numerics and batch size", numerics_panels()),
            ("Resources", resource_panels()),
        ],
        tags=["training"],
        variables=[variable("job", "Job", 'label_values(gputuned_trainer_step{instance=~"$instance"}, exported_job)')],
    )
