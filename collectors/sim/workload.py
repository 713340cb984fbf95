"""Training workloads as data: one TOML file per workload, and their per-GPU step timing.

A workload says how long one training step takes on a GPU as a function of the local
batch size, split into host time (Python, launches, optimizer; independent of GPU
clocks), SM-bound time (scales with 1 / SM clock) and memory-bound time (scales with
1 / memory clock), all at the GPU's highest clocks; how much dynamic power its kernels
draw; how much device memory it needs; how many gradient bytes each step all-reduces;
and its gradient noise scale for statistical efficiency. Timing tables come from the
fitted calibration (``data/calibration.json``) where the workload was measured on that
GPU, else they are transferred from a measured GPU by peak FLOP/s and bandwidth ratios.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from gputuned.collectors.sim.gpu_model import PowerParams, default_power_params
from gputuned.collectors.sim.state import (
    PROFILE_ALIASES,
    GPUProfile,
    load_profile,
    read_toml,
    shipped_names,
)

logger = logging.getLogger(__name__)

_PKG = "gputuned.collectors.sim"

#: Short names accepted for shipped workloads.
WORKLOAD_ALIASES = {
    "resnet50": "imagenet-resnet50",
    "shufflenet": "cifar100-shufflenetv2",
    "shufflenetv2": "cifar100-shufflenetv2",
    "bert": "squad-bert",
    "squad": "squad-bert",
    "deepspeech2": "librispeech-deepspeech2",
    "ncf": "movielens-ncf",
    "sentiment140": "sentiment140-bert",
    "gpt2": "gpt2-small-openwebtext",
    "dlrm": "dlrm-criteo",
    "vit": "vit-b16-imagenet",
}


@dataclass(frozen=True)
class StepTiming:
    """Per-step times (s) at the GPU's highest clocks by local batch size, and kernel power."""

    batch_sizes: tuple[float, ...]
    host_s: tuple[float, ...]
    sm_s: tuple[float, ...]
    mem_s: tuple[float, ...]
    dynamic_power_w: tuple[float, ...]  # per batch size

    def at(self, batch: float) -> tuple[float, float, float]:
        """(host, sm, mem) seconds for one step of ``batch`` samples on one GPU.

        Linear in the batch between measured sizes (a step is a fixed cost plus a cost per
        sample, so samples per second never dips between two sizes that both run faster);
        below the smallest the step is latency-bound (held); above the largest it grows in
        proportion to the batch.
        """
        i, w = self._where(batch, log=False)
        if i < 0:
            return self.host_s[0], self.sm_s[0], self.mem_s[0]
        if i >= len(self.batch_sizes):
            k = batch / self.batch_sizes[-1]
            return self.host_s[-1] * k, self.sm_s[-1] * k, self.mem_s[-1] * k
        return tuple(  # type: ignore[return-value]
            s[i - 1] + (s[i] - s[i - 1]) * w for s in (self.host_s, self.sm_s, self.mem_s)
        )

    def power_at(self, batch: float) -> float:
        """Dynamic power (W) of the kernels at full clock and full activity for a local batch."""
        i, w = self._where(batch)
        p = self.dynamic_power_w
        if i < 0:
            return p[0]
        if i >= len(p):
            return p[-1]
        return p[i - 1] + (p[i] - p[i - 1]) * w

    def _where(self, batch: float, log: bool = True) -> tuple[int, float]:
        """Index of the next measured size above ``batch`` and the weight towards it."""
        bs = self.batch_sizes
        if batch <= bs[0]:
            return -1, 0.0
        if batch >= bs[-1]:
            return len(bs), 0.0
        i = bisect.bisect_right(bs, batch)
        if not log:
            return i, (batch - bs[i - 1]) / (bs[i] - bs[i - 1])
        return i, (math.log2(batch) - math.log2(bs[i - 1])) / (math.log2(bs[i]) - math.log2(bs[i - 1]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_sizes": list(self.batch_sizes),
            "host_s": list(self.host_s),
            "sm_s": list(self.sm_s),
            "mem_s": list(self.mem_s),
            "dynamic_power_w": list(self.dynamic_power_w),
        }


@dataclass(frozen=True)
class Workload:
    """A training job's description, loaded from a workload file."""

    name: str
    description: str
    dataset_samples: int
    default_batch_size: int
    min_batch_size: int
    max_batch_size: int
    held_out: bool
    memory_base_bytes: float
    memory_per_sample_bytes: float
    grad_noise_scale: float
    loss_initial: float
    loss_final: float
    target_epochs: float
    gradient_bytes: float
    comm_overlap: float
    input_bytes_per_sample: float
    loader_sample_s: float
    zeus: dict[str, Any]
    timing_gpu: str | None
    timing: StepTiming | None

    def efficiency(self, batch: float, noise_scale: float | None = None) -> float:
        """Pollux statistical efficiency relative to the default batch: (Bn + B0) / (Bn + B)."""
        bn = self.grad_noise_scale if noise_scale is None else noise_scale
        return (bn + self.default_batch_size) / (bn + batch)

    def memory_bytes(self, local_batch: float) -> float:
        """Device memory one GPU needs for a local batch."""
        return self.memory_base_bytes + self.memory_per_sample_bytes * local_batch


def _num(raw: dict[str, Any], key: str, where: str, *, lo: float = 0.0, default: float | None = None) -> float:
    if key not in raw:
        if default is None:
            raise ValueError(f"{where}: missing field {key!r}")
        return default
    v = raw[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < lo:
        raise ValueError(f"{where}: field {key!r} must be a number >= {lo}, got {v!r}")
    return float(v)


def _table(raw: dict[str, Any], key: str, where: str, n: int | None) -> tuple[float, ...]:
    v = raw.get(key)
    if not isinstance(v, list) or not v or (n is not None and len(v) != n):
        want = f"a list of {n} numbers" if n else "a non-empty list of numbers"
        raise ValueError(f"{where}: field {key!r} must be {want}")
    out = []
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, int | float) or x < 0 or not math.isfinite(x):
            raise ValueError(f"{where}: field {key}[{i}] must be a number >= 0, got {x!r}")
        out.append(float(x))
    return tuple(out)


def parse_timing(raw: dict[str, Any], where: str) -> StepTiming:
    """Build a :class:`StepTiming` from a mapping, naming the field that is wrong."""
    bs = _table(raw, "batch_sizes", where, None)
    if any(b <= 0 for b in bs) or list(bs) != sorted(set(bs)):
        raise ValueError(f"{where}: field 'batch_sizes' must be positive and strictly increasing")
    n = len(bs)
    return StepTiming(
        bs, _table(raw, "host_s", where, n), _table(raw, "sm_s", where, n), _table(raw, "mem_s", where, n),
        _power_table(raw, where, n),
    )


def _power_table(raw: dict[str, Any], where: str, n: int) -> tuple[float, ...]:
    if isinstance(raw.get("dynamic_power_w"), list):
        return _table(raw, "dynamic_power_w", where, n)
    return (_num(raw, "dynamic_power_w", where),) * n


_TOP = {"name", "description", "dataset_samples", "default_batch_size", "min_batch_size", "max_batch_size",
        "held_out", "memory", "statistics", "communication", "timing", "zeus"}
_SECTIONS = {
    "memory": {"base_bytes", "per_sample_bytes"},
    "statistics": {"grad_noise_scale", "loss_initial", "loss_final", "target_epochs"},
    "communication": {"gradient_bytes", "overlap", "input_bytes_per_sample", "loader_sample_s"},
    "timing": {"reference_gpu", "batch_sizes", "host_s", "sm_s", "mem_s", "dynamic_power_w"},
    "zeus": {"dataset", "network", "target_metric", "lower_is_better"},
}


def parse_workload(raw: dict[str, Any], where: str) -> Workload:
    """Validate a workload mapping; errors name the file and the field."""
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}")
    for sec, keys in _SECTIONS.items():
        if sec in raw:
            if not isinstance(raw[sec], dict):
                raise ValueError(f"{where}: field {sec!r} must be a table")
            bad = sorted(set(raw[sec]) - keys)
            if bad:
                raise ValueError(f"{where}: unknown field {sec}.{bad[0]!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: field 'name' must be a non-empty string")
    mem, st, comm = raw.get("memory", {}), raw.get("statistics", {}), raw.get("communication", {})
    timing, timing_gpu = None, None
    if "timing" in raw:
        t = raw["timing"]
        timing_gpu = t.get("reference_gpu")
        if not isinstance(timing_gpu, str):
            raise ValueError(f"{where}: field 'timing.reference_gpu' must be a profile name")
        timing = parse_timing(t, f"{where}: timing")
    held = raw.get("held_out", False)
    if not isinstance(held, bool):
        raise ValueError(f"{where}: field 'held_out' must be true or false")
    wl = Workload(
        name=name,
        description=str(raw.get("description", "")),
        dataset_samples=int(_num(raw, "dataset_samples", where, lo=1)),
        default_batch_size=int(_num(raw, "default_batch_size", where, lo=1)),
        min_batch_size=int(_num(raw, "min_batch_size", where, lo=1, default=1)),
        max_batch_size=int(_num(raw, "max_batch_size", where, lo=1, default=65536)),
        held_out=held,
        memory_base_bytes=_num(mem, "base_bytes", f"{where}: memory"),
        memory_per_sample_bytes=_num(mem, "per_sample_bytes", f"{where}: memory"),
        grad_noise_scale=_num(st, "grad_noise_scale", f"{where}: statistics"),
        loss_initial=_num(st, "loss_initial", f"{where}: statistics", default=2.5),
        loss_final=_num(st, "loss_final", f"{where}: statistics", default=0.3),
        target_epochs=_num(st, "target_epochs", f"{where}: statistics", lo=1e-6, default=10.0),
        gradient_bytes=_num(comm, "gradient_bytes", f"{where}: communication"),
        comm_overlap=_num(comm, "overlap", f"{where}: communication", default=0.0),
        input_bytes_per_sample=_num(comm, "input_bytes_per_sample", f"{where}: communication", default=0.0),
        loader_sample_s=_num(comm, "loader_sample_s", f"{where}: communication", default=0.0),
        zeus=dict(raw.get("zeus", {})),
        timing_gpu=timing_gpu,
        timing=timing,
    )
    if wl.comm_overlap > 1:
        raise ValueError(f"{where}: field 'communication.overlap' must be in [0, 1]")
    if not wl.min_batch_size <= wl.default_batch_size <= wl.max_batch_size:
        raise ValueError(f"{where}: field 'default_batch_size' must lie in [min_batch_size, max_batch_size]")
    return wl


def available_workloads() -> list[str]:
    """Workload names shipped with the package."""
    return shipped_names("workloads")


def load_workload(name: str | Path) -> Workload:
    """Load a shipped workload by name, or a workload TOML by path."""
    raw, where = read_toml(WORKLOAD_ALIASES.get(str(name), str(name)), "workloads", "workload")
    return parse_workload(raw, where)


def profile_key(name: str) -> str:
    """Canonical profile key (file stem) for a profile name or alias; a profile file's path as given."""
    if name.endswith(".toml"):  # a path: its case is the file system's
        return name
    return PROFILE_ALIASES.get(name.lower(), name.lower())


def load_calibration(path: str | Path | None = None) -> dict[str, Any]:
    """The fitted calibration (shipped ``data/calibration.json`` unless a path is given)."""
    if path is not None:
        return json.loads(Path(path).read_text())
    res = resources.files(_PKG) / "data" / "calibration.json"
    if not res.is_file():
        logger.warning("no shipped calibration.json; using profile defaults and workload files only")
        return {"gpus": {}, "workloads": {}}
    return json.loads(res.read_text())


def power_params(profile_name: str, calibration: dict[str, Any]) -> PowerParams:
    """Fitted power constants of a GPU, or the profile's defaults if it was never measured."""
    fitted = calibration.get("gpus", {}).get(profile_key(profile_name))
    if fitted:
        return PowerParams(**{k: float(fitted[k]) for k in PowerParams.__dataclass_fields__ if k in fitted})
    return default_power_params(load_profile(profile_name))


def transfer_timing(
    timing: StepTiming, src: GPUProfile, src_p: PowerParams, dst: GPUProfile, dst_p: PowerParams
) -> StepTiming:
    """Move a timing table to another GPU: SM time by peak FLOP/s, memory time by bandwidth."""
    k_sm = src.peak_fp16_tflops / dst.peak_fp16_tflops
    k_mem = src.memory_bandwidth_bytes_per_s / dst.memory_bandwidth_bytes_per_s
    k_pow = (dst.power_limit_max_w - dst_p.active_idle_w) / max(src.power_limit_max_w - src_p.active_idle_w, 1.0)
    return StepTiming(
        timing.batch_sizes,
        timing.host_s,
        tuple(s * k_sm for s in timing.sm_s),
        tuple(m * k_mem for m in timing.mem_s),
        tuple(p * k_pow for p in timing.dynamic_power_w),
    )


def resolve_timing(wl: Workload, profile_name: str, calibration: dict[str, Any]) -> tuple[StepTiming, str]:
    """The workload's step timing on a GPU and where it came from (fitted, transferred, file)."""
    key = profile_key(profile_name)
    fitted = calibration.get("workloads", {}).get(wl.name, {}).get("gpus", {})
    if key in fitted:
        return parse_timing(fitted[key], f"calibration {wl.name}/{key}"), f"fitted on {key}"
    if fitted:
        src_key = "a40" if "a40" in fitted else sorted(fitted)[0]
        src_t = parse_timing(fitted[src_key], f"calibration {wl.name}/{src_key}")
    elif wl.timing is not None and wl.timing_gpu is not None:
        src_key, src_t = profile_key(wl.timing_gpu), wl.timing
        if src_key == key:
            return src_t, "workload file"
    else:
        raise ValueError(f"workload {wl.name!r} has no timing: add a [timing] table or calibrate it")
    dst = load_profile(key)
    out = transfer_timing(
        src_t, load_profile(src_key), power_params(src_key, calibration), dst, power_params(key, calibration)
    )
    return out, f"transferred from {src_key}"
