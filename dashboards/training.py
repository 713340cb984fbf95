"""Training job: which job is slow and why (compute, communication or data), and its numerics."""

from __future__ import annotations

from grafanalib import core as g

from gputuned.dashboards.panels import (
    GPU,
    NODE,
    RATE,
    Query,
    dashboard,
    high_bad,
    info_only,
    low_bad,
    stat,
    steps,
    timeseries,
)

UID = "gputuned-training"
# The trainer's series carry a label named job (the training job). Prometheus keeps its own
# target label job, so with the default honor_labels: false a scraped job label is stored as
# exported_job; the queries below select and group by that.
JOB = f'{NODE}, exported_job=~"$job"'
SAMPLES = "suffix: samples/s"


def throughput_panels() -> list[g.Panel]:
    """Throughput, goodput and their ratio."""
    return [
        timeseries(
            "Throughput", SAMPLES,
            [Query(f"sum by (exported_job) (gputuned_trainer_samples_per_second{{{JOB}}})", "{{exported_job}}")],
            info_only(), "Samples per second summed over the job's ranks on the selected nodes.", min_value=0,
        ),
        timeseries(
            "Goodput", SAMPLES,
            [Query(f"sum by (exported_job) (gputuned_trainer_goodput_samples_per_second{{{JOB}}})", "{{exported_job}}")],
            info_only(), "Throughput times statistical efficiency: progress per second that larger batches do not waste.",
            min_value=0,
        ),
        timeseries(
            "Statistical efficiency", "percentunit",
            [Query(
                f"sum by (exported_job) (gputuned_trainer_goodput_samples_per_second{{{JOB}}})"
                f" / clamp_min(sum by (exported_job) (gputuned_trainer_samples_per_second{{{JOB}}}), 1e-9)",
                "{{exported_job}}",
            )],
            low_bad(0.5, 0.8), "Goodput over throughput; low means the batch is far above the gradient noise scale.",
            min_value=0, max_value=1,
        ),
    ]


def step_panels() -> list[g.Panel]:
    """Step time and where it goes, and stragglers."""
    return [
        timeseries(
            "Step time breakdown", "s",
            [
                Query(f"avg by (exported_job) (gputuned_trainer_compute_seconds{{{JOB}}})", "{{exported_job}} compute"),
                Query(f"avg by (exported_job) (gputuned_trainer_communication_seconds{{{JOB}}})", "{{exported_job}} communication"),
                Query(f"avg by (exported_job) (gputuned_trainer_dataloader_wait_seconds{{{JOB}}})", "{{exported_job}} data wait"),
            ],
            info_only(), "Mean time per step in forward/backward compute, gradient communication and waiting for data.",
            min_value=0, stack=True,
        ),
        timeseries(
            "Share of step waiting", "percentunit",
            [
                Query(
                    f"avg by (exported_job) (gputuned_trainer_communication_seconds{{{JOB}}})"
                    f" / clamp_min(avg by (exported_job) (gputuned_trainer_step_time_seconds{{{JOB}}}), 1e-9)",
                    "{{exported_job}} communication",
                ),
                Query(
                    f"avg by (exported_job) (gputuned_trainer_dataloader_wait_seconds{{{JOB}}})"
                    f" / clamp_min(avg by (exported_job) (gputuned_trainer_step_time_seconds{{{JOB}}}), 1e-9)",
                    "{{exported_job}} data wait",
                ),
            ],
            high_bad(0.2, 0.4), "Communication and data-loader wait as fractions of the step time.",
            min_value=0, max_value=1,
        ),
        timeseries(
            "Step time per rank", "s",
            [Query(f"gputuned_trainer_step_time_seconds{{{JOB}}}", "{{exported_job}} rank {{rank}}")],
            info_only(), "Mean step time each rank reported; one rank above the rest is a straggler.", min_value=0,
        ),
        timeseries(
            "Straggler ratio", "short",
            [Query(
                f"max by (exported_job) (gputuned_trainer_step_time_seconds{{{JOB}}})"
                f" / clamp_min(avg by (exported_job) (gputuned_trainer_step_time_seconds{{{JOB}}}), 1e-9)",
                "{{exported_job}}",
            )],
            high_bad(1.1, 1.3), "Slowest rank's step time over the mean of the job's ranks.", min_value=1,
        ),
        stat(
            "Ranks connected", "none",
            [Query(f"sum by (exported_job) (gputuned_trainer_rank_connected{{{JOB}}})", "{{exported_job}}")],
            steps("red", ("green", 1)), "Ranks of the job with a live control-socket connection on the selected nodes.",
        ),
        stat(
            "Seconds since last report", "s",
            [Query(f"time() - max by (exported_job) (gputuned_trainer_last_report_timestamp_seconds{{{JOB}}})", "{{exported_job}}")],
            high_bad(30, 120), "Age of the job's newest report; growing means the job hangs or its plugin lost the daemon.",
        ),
    ]


def numerics_panels() -> list[g.Panel]:
    """Loss, loss scale and overflows, gradient statistics and batch size."""
    return [
        timeseries(
            "Loss", "short",
            [Query(f"avg by (exported_job) (gputuned_trainer_loss{{{JOB}}})", "{{exported_job}}")],
            info_only(), "Mean training loss over the ranks' last reports.",
        ),
        timeseries(
            "Loss scale", "short",
            [Query(f"min by (exported_job) (gputuned_trainer_loss_scale{{{JOB}}})", "{{exported_job}}")],
            low_bad(1, 128), "Mixed-precision loss scale; a collapse toward 1 means gradients keep overflowing.",
        ),
        timeseries(
            "Overflow steps", "short",
            [Query(f"sum by (exported_job) (increase(gputuned_trainer_overflows_total{{{JOB}}}[{RATE}]))", "{{exported_job}}")],
            high_bad(1, 10), "Steps skipped for gradient overflow in each interval.", min_value=0,
        ),
        timeseries(
            "Batch size and gradient noise scale", "short",
            [
                Query(f"max by (exported_job) (gputuned_trainer_batch_size{{{JOB}}})", "{{exported_job}} global batch"),
                Query(f"avg by (exported_job) (gputuned_trainer_grad_noise_scale{{{JOB}}})", "{{exported_job}} gradient noise scale"),
            ],
            info_only(), "Global batch size against the gradient noise scale (the critical batch size estimate).",
            min_value=0,
        ),
        timeseries(
            "Micro-batch and accumulation", "short",
            [
                Query(f"max by (exported_job) (gputuned_trainer_micro_batch_size{{{JOB}}})", "{{exported_job}} micro-batch"),
                Query(f"max by (exported_job) (gputuned_trainer_accumulation_steps{{{JOB}}})", "{{exported_job}} accumulation steps"),
            ],
            info_only(), "Per-rank micro-batch size and gradient accumulation steps per optimizer step.", min_value=0,
        ),
        timeseries(
            "Gradient norm", "short",
            [Query(f"avg by (exported_job) (gputuned_trainer_grad_norm{{{JOB}}})", "{{exported_job}}")],
            info_only(), "Mean global gradient norm; spikes precede divergence.", min_value=0,
        ),
        stat(
            "Out-of-memory recoveries", "short",
            [Query(f"sum by (exported_job) (gputuned_trainer_oom_total{{{JOB}}})", "{{exported_job}}")],
            high_bad(1, 3), "Out-of-memory errors the trainer recovered from since it started.", reduce="max",
        ),
    ]


def resource_panels() -> list[g.Panel]:
    """What the job costs: GPU load, power, energy per sample, communication volume."""
    return [
        timeseries(
            "GPU utilization (mean)", "percentunit",
            [Query(f"avg by (instance) (gputuned_gpu_utilization_ratio{{{GPU}}})", "{{instance}}")],
            low_bad(0.3, 0.7), "Mean GPU utilization over the selected GPUs of each node.", min_value=0, max_value=1,
        ),
        timeseries(
            "Node GPU power", "watt",
            [Query(f"sum by (instance) (gputuned_gpu_power_watts{{{GPU}}})", "{{instance}}")],
            info_only(), "Board power summed over the selected GPUs.", min_value=0,
        ),
        timeseries(
            "Energy per sample", "suffix: J/sample",
            [Query(
                f"sum(rate(gputuned_gpu_energy_joules_total{{{GPU}}}[{RATE}]))"
                f" / clamp_min(sum(gputuned_trainer_samples_per_second{{{JOB}}}), 1e-9)",
                "energy per sample",
            )],
            info_only(), "GPU energy of the selected GPUs per trained sample (all jobs on them together).", min_value=0,
        ),
        timeseries(
            "Gradient communication", "Bps",
            [
                Query(f"sum by (exported_job) (rate(gputuned_trainer_comm_bytes_total{{{JOB}}}[{RATE}]))", "{{exported_job}} sent"),
                Query(
                    f"sum by (exported_job) (rate(gputuned_trainer_comm_bytes_uncompressed_total{{{JOB}}}[{RATE}]))",
                    "{{exported_job}} uncompressed",
                ),
            ],
            info_only(), "Bytes per second sent by gradient communication, and what it would be uncompressed.",
            min_value=0,
        ),
    ]


def build() -> g.Dashboard:
    """The training job dashboard."""
    d = dashboard(
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
    )
    d.templating.list.append(
        g.Template(
            name="job", label="Job", query='label_values(gputuned_trainer_step{instance=~"$instance"}, exported_job)',
            dataSource={"type": "prometheus", "uid": "${datasource}"}, includeAll=True, multi=True, allValue=".*",
            default="$__all", refresh=2,
        )
    )
    return d
