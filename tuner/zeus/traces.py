"""Load the Zeus NSDI'23 traces into per-(GPU, job) tables the trace environment replays."""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

logger = logging.getLogger(__name__)

#: Directory of the traces shipped with the package (unchanged copies, see its README).
PACKAGED_TRACES = Path(str(files("gputuned.tuner") / "data" / "zeus-nsdi23"))


@dataclass(frozen=True)
class JobSpec:
    """One of the six jobs of the Zeus trace simulator (README table)."""

    dataset: str
    network: str
    optimizer: str
    target_metric: float
    default_batch_size: int
    #: Training samples per epoch (public dataset sizes), to turn epoch time into step time.
    dataset_size: int


JOBS: dict[str, JobSpec] = {
    "cifar100": JobSpec("cifar100", "shufflenetv2", "adadelta", 0.60, 1024, 50_000),
    "imagenet": JobSpec("imagenet", "resnet50", "adadelta", 0.65, 256, 1_281_167),
    "squad": JobSpec("squad", "bert_base_uncased", "adamw", 84.0, 32, 88_641),
    "librispeech": JobSpec("librispeech", "deepspeech2", "adamw", 40.0, 192, 281_241),
    "movielens-1m": JobSpec("movielens-1m", "ncf", "adam", 0.41, 1024, 1_000_209),
    "sentiment140": JobSpec("sentiment140", "bert_base_uncased", "adamw", 0.84, 128, 1_600_000),
}


class TraceError(ValueError):
    """A trace file is missing, malformed or lacks a needed row."""


@dataclass(frozen=True)
class JobTrace:
    """Everything the trace knows about one job on one GPU (hidden from the live policy)."""

    gpu: str
    job: str
    default_batch_size: int
    batch_sizes: tuple[int, ...]
    power_limits_w: tuple[int, ...]
    #: (batch size, power limit W) -> (seconds per epoch, average watts)
    epoch: dict[tuple[int, int], tuple[float, float]]
    #: batch size -> epochs to target per seed (math.inf where the seed never reached it)
    epochs_to_target: dict[int, tuple[float, ...]]

    @property
    def max_power_w(self) -> int:
        """The GPU's maximum power limit in the trace grid (the default's)."""
        return max(self.power_limits_w)

    def mean_epochs(self, batch_size: int) -> float:
        """Expected epochs to target at ``batch_size`` (inf when any seed fails)."""
        seeds = self.epochs_to_target[batch_size]
        return sum(seeds) / len(seeds)


def _read_csv(path: Path, needed: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def _num(path: Path, line: int, row: dict[str, str], key: str) -> float:
    try:
        return float(row[key])
    except (TypeError, ValueError) as exc:
        raise TraceError(f"{path}:{line}: column {key} is not a number: {row[key]!r}") from exc


def available_gpus(trace_dir: Path) -> list[str]:
    """GPU names that have a summary_power_<gpu>.csv in ``trace_dir``."""
    return sorted(p.stem.removeprefix("summary_power_") for p in Path(trace_dir).glob("summary_power_*.csv"))


def load_gpu(trace_dir: Path, gpu: str, substitute_default: bool = False) -> dict[str, JobTrace]:
    """Load every job of ``gpu`` whose default (b0, max power limit) exists, keyed by job name.

    With ``substitute_default`` (training only), a job whose b0 was not measured on this GPU is
    kept with the measured size nearest to b0 as its default, for more varied training domains.
    """
    trace_dir = Path(trace_dir)
    train_path = trace_dir / "summary_train.csv"
    power_path = trace_dir / f"summary_power_{gpu.lower()}.csv"
    train = _read_csv(train_path, ("dataset", "network", "batch_size", "optimizer", "target_metric", "target_epoch"))
    power = _read_csv(
        power_path, ("dataset", "network", "batch_size", "optimizer", "power_limit", "time_per_epoch", "average_power")
    )
    out: dict[str, JobTrace] = {}
    for name, spec in JOBS.items():
        epoch: dict[tuple[int, int], tuple[float, float]] = {}
        for i, row in enumerate(power, start=2):
            if (row["dataset"], row["network"], row["optimizer"]) != (spec.dataset, spec.network, spec.optimizer):
                continue
            key = (int(_num(power_path, i, row, "batch_size")), int(_num(power_path, i, row, "power_limit")))
            epoch[key] = (_num(power_path, i, row, "time_per_epoch"), _num(power_path, i, row, "average_power"))
        seeds: dict[int, list[float]] = {}
        for i, row in enumerate(train, start=2):
            if (row["dataset"], row["network"], row["optimizer"]) != (spec.dataset, spec.network, spec.optimizer):
                continue
            if not math.isclose(_num(train_path, i, row, "target_metric"), spec.target_metric):
                continue
            value = _num(train_path, i, row, "target_epoch")
            seeds.setdefault(int(_num(train_path, i, row, "batch_size")), []).append(
                math.inf if math.isnan(value) else value
            )
        if not epoch:
            continue
        limits = tuple(sorted({p for _, p in epoch}))
        # Keep batch sizes measured at every power limit and present in the training trace.
        sizes = tuple(
            sorted(b for b in {b for b, _ in epoch} if b in seeds and all((b, p) in epoch for p in limits))
        )
        b0 = spec.default_batch_size
        if b0 not in sizes or not all(math.isfinite(e) for e in seeds[b0]):
            if not substitute_default or not sizes:
                logger.info("%s/%s: default (b=%d, %d W) missing; job skipped", gpu, name, b0, max(limits))
                continue
            finite = [b for b in sizes if all(math.isfinite(e) for e in seeds[b])]
            if not finite:
                continue
            b0 = min(finite, key=lambda b: abs(math.log2(b / spec.default_batch_size)))
        out[name] = JobTrace(
            gpu=gpu.lower(),
            job=name,
            default_batch_size=b0,
            batch_sizes=sizes,
            power_limits_w=limits,
            epoch={k: v for k, v in epoch.items() if k[0] in sizes},
            epochs_to_target={b: tuple(seeds[b]) for b in sizes},
        )
    if not out:
        raise TraceError(f"{power_path}: no job has its default configuration")
    return out
