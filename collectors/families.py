"""Metric families: the names, types and help texts of every series gputuned serves.

A sample is a plain tuple ``(family, labels, value)`` where labels is a tuple of
``(name, value)`` pairs; plain tuples keep the per-tick cost of 8 GPUs small. Each
family is declared once, here or in the module that produces it, with :func:`declare`:
its Prometheus type and, where dcgm-exporter has an equivalent, the DCGM name, unit scale
and the labels that select it. :func:`declare` returns the family's name (a :class:`str`
that also carries its :class:`Family`), which the module keeps as a constant; there is no
registry filled on import. :func:`catalog` builds the catalog of what a process serves from
an explicit list of declaring modules, and the exporter is given that catalog.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Labels, float]
Kind = Literal["gauge", "counter"]


@dataclass(frozen=True)
class DcgmName:
    """A dcgm-exporter equivalent: ``dcgm_value = value * scale`` for samples matching ``where``.

    ``counter`` types it as dcgm-exporter's CSV does (its counters carry no ``_total``); ``help`` is
    the CSV's help text; ``xid`` adds the ``err_code``/``err_msg`` labels dcgm-exporter puts on XID errors.
    """

    name: str
    scale: float = 1.0
    where: tuple[tuple[str, str], ...] = ()
    counter: bool = False
    help: str = ""  # noqa: A003 - the CSV column's name
    xid: bool = False


@dataclass(frozen=True)
class Family:
    """A metric family: sample name (counters with ``_total``), type, help and DCGM equivalents."""

    name: str
    kind: Kind
    help: str
    dcgm: tuple[DcgmName, ...] = field(default_factory=tuple)


#: Family by sample name: what an exporter serves types and help texts from.
Catalog = Mapping[str, Family]


class FamilyName(str):
    """A family's sample name that carries its declaration; compares, hashes and pickles as the name."""

    family: Family

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        # samples cross to the forecast worker by pickle: send the plain name
        return (str, (str(self),))


#: Labels that identify a GPU; a person reads them as ``gpu 3 (H100)``.
_GPU_IDENTITY = ("gpu", "model", "uuid", "pci_bus_id")


def describe_labels(labels: Labels) -> str:
    """Labels as a person reads them: ``gpu 3 (H100)``, ``job j rank 0``; ``node`` when empty."""
    d = dict(labels)
    parts = []
    if "gpu" in d:
        parts.append(f"gpu {d['gpu']}" + (f" ({d['model']})" if d.get("model") else ""))
    parts += [f"{k} {v}" for k, v in d.items() if k not in _GPU_IDENTITY]
    return " ".join(parts) or "node"


def declare(name: str, kind: Kind, help: str, *dcgm: DcgmName) -> FamilyName:  # noqa: A002
    """Declare a family; returns its name, carrying the family, for the module to keep as a constant."""
    if kind == "counter" and not name.endswith("_total"):
        raise ValueError(f"counter {name} must end in _total")
    if kind == "gauge" and name.endswith("_total"):
        raise ValueError(f"gauge {name} must not end in _total")
    out = FamilyName(name)
    out.family = Family(name, kind, help, tuple(dcgm))
    return out


def declared_in(module: ModuleType) -> Iterator[FamilyName]:
    """The family names a module keeps: its constants, and the names in its tables (dicts, tuples, sets)."""
    for value in vars(module).values():
        if isinstance(value, FamilyName):
            yield value
        elif isinstance(value, Mapping | tuple | list | set | frozenset):
            items = value.values() if isinstance(value, Mapping) else value
            yield from (v for v in items if isinstance(v, FamilyName))


def catalog(*sources: ModuleType | Iterable[str]) -> dict[str, Family]:
    """The catalog of the families that declaring modules (or sequences of family names) hold, by sample name."""
    out: dict[str, Family] = {}
    for source in sources:
        names: Iterable[str] = declared_in(source) if isinstance(source, ModuleType) else source
        for name in names:
            if not isinstance(name, FamilyName):
                raise ValueError(f"{name!r} is not a declared family")
            if out.setdefault(name, name.family) != name.family:
                raise ValueError(f"family {name} declared twice, differently")
    return out


G: Kind = "gauge"
C: Kind = "counter"

_PCIE_HELP = ("The rate of data {} the PCIe bus - including both protocol headers and data payloads - "
              "in bytes per second.")

#: dcgm-exporter default counters gputuned cannot serve from NVML, and why.
DCGM_NOT_SERVED: dict[str, str] = {
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS": "a vGPU guest's license state; a bare-metal GPU has none "
                                       "(dcgm-exporter serves nothing for it there either)",
}

# --- per GPU (labels gpu, uuid, model, pci_bus_id [+ extra]) ----------------------------
GPU_UP = declare("gputuned_gpu_up", G, "1 when the GPU answers NVML, 0 once it is lost.")
GPU_UTIL = declare(
    "gputuned_gpu_utilization_ratio", G, "Fraction of time a kernel ran on the GPU (nvmlDeviceGetUtilizationRates.gpu).",
    DcgmName("DCGM_FI_DEV_GPU_UTIL", 100.0, help="GPU utilization (in %)."),
)
GPU_MEM_ACTIVITY = declare(
    "gputuned_gpu_memory_activity_ratio", G, "Fraction of time device memory was read or written.",
    DcgmName("DCGM_FI_DEV_MEM_COPY_UTIL", 100.0, help="Memory utilization (in %)."),
)
#: GPM activity (Hopper and later), in GpmActivity's field order: family, help, DCGM field, the CSV's help.
GPU_GR_ENGINE, GPU_SM_ACTIVE, GPU_SM_OCCUPANCY, GPU_TENSOR_ACTIVE, GPU_DRAM_BW = (
    declare(name, G, f"{text} (GPM; Hopper and later).", DcgmName(dcgm, 1.0, help=dcgm_help))
    for name, text, dcgm, dcgm_help in (
        ("gputuned_gpu_graphics_engine_active_ratio", "Fraction of time the graphics/compute engine was active",
         "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active."),
        ("gputuned_gpu_sm_active_ratio", "Fraction of SM cycles with at least one warp resident",
         "DCGM_FI_PROF_SM_ACTIVE", "The ratio of cycles an SM has at least 1 warp assigned."),
        ("gputuned_gpu_sm_occupancy_ratio", "Resident warps over the SMs' maximum",
         "DCGM_FI_PROF_SM_OCCUPANCY", "The ratio of number of warps resident on an SM."),
        ("gputuned_gpu_tensor_active_ratio", "Fraction of cycles a tensor pipe was active, any precision",
         "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "Ratio of cycles the tensor (HMMA) pipe is active."),
        ("gputuned_gpu_dram_bandwidth_ratio", "DRAM bandwidth used over its peak", "DCGM_FI_PROF_DRAM_ACTIVE",
         "Ratio of cycles the device memory interface is active sending or receiving data."),
    )
)
GPU_MEM_USED = declare(
    "gputuned_gpu_memory_used_bytes", G, "Device memory in use.",
    DcgmName("DCGM_FI_DEV_FB_USED", 1.0 / 2**20, help="Framebuffer memory used (in MiB)."),
)
GPU_MEM_FREE = declare(
    "gputuned_gpu_memory_free_bytes", G, "Device memory free.",
    DcgmName("DCGM_FI_DEV_FB_FREE", 1.0 / 2**20, help="Framebuffer memory free (in MiB)."),
)
GPU_MEM_RESERVED = declare(
    "gputuned_gpu_memory_reserved_bytes", G, "Device memory the driver holds back (NVML memory info v2).",
    DcgmName("DCGM_FI_DEV_FB_RESERVED", 1.0 / 2**20, help="Framebuffer memory reserved (in MiB)."),
)
GPU_MEM_TOTAL = declare("gputuned_gpu_memory_total_bytes", G, "Device memory size.")
GPU_SM_CLOCK = declare(
    "gputuned_gpu_sm_clock_hertz", G, "Current SM clock.",
    DcgmName("DCGM_FI_DEV_SM_CLOCK", 1e-6, help="SM clock frequency (in MHz)."),
)
GPU_SM_CLOCK_MAX = declare("gputuned_gpu_sm_clock_max_hertz", G, "Highest SM clock the GPU supports.")
GPU_MEM_CLOCK = declare(
    "gputuned_gpu_memory_clock_hertz", G, "Current memory clock.",
    DcgmName("DCGM_FI_DEV_MEM_CLOCK", 1e-6, help="Memory clock frequency (in MHz)."),
)
GPU_GFX_CLOCK = declare("gputuned_gpu_graphics_clock_hertz", G, "Current graphics clock.")
GPU_POWER = declare(
    "gputuned_gpu_power_watts", G, "Board power draw.",
    DcgmName("DCGM_FI_DEV_POWER_USAGE", 1.0, help="Power draw (in W)."),
)
GPU_POWER_LIMIT = declare(
    "gputuned_gpu_power_limit_watts", G, "Enforced power limit.", DcgmName("DCGM_FI_DEV_POWER_MGMT_LIMIT", 1.0)
)
GPU_POWER_LIMIT_MIN = declare("gputuned_gpu_power_limit_min_watts", G, "Lowest power limit NVML accepts.")
GPU_POWER_LIMIT_MAX = declare("gputuned_gpu_power_limit_max_watts", G, "Highest power limit NVML accepts.")
GPU_POWER_LIMIT_DEFAULT = declare("gputuned_gpu_power_limit_default_watts", G, "Default power limit.")
GPU_ENERGY = declare(
    "gputuned_gpu_energy_joules_total", C, "Energy consumed since the driver loaded.",
    DcgmName("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 1000.0, counter=True,
             help="Total energy consumption since boot (in mJ)."),
)
GPU_TEMP = declare(
    "gputuned_gpu_temperature_celsius", G, "GPU core temperature.",
    DcgmName("DCGM_FI_DEV_GPU_TEMP", 1.0, help="GPU temperature (in C)."),
)
GPU_MEM_TEMP = declare(
    "gputuned_gpu_memory_temperature_celsius", G, "Device memory (HBM) temperature.",
    DcgmName("DCGM_FI_DEV_MEMORY_TEMP", 1.0, help="Memory temperature (in C)."),
)
GPU_FAN = declare(
    "gputuned_gpu_fan_speed_ratio", G, "Fan speed as a fraction of its maximum.", DcgmName("DCGM_FI_DEV_FAN_SPEED", 100.0)
)
GPU_PCIE_TX = declare(
    "gputuned_gpu_pcie_transmit_bytes_per_second", G, "PCIe transmit throughput (NVML 20 ms window).",
    DcgmName("DCGM_FI_PROF_PCIE_TX_BYTES", 1.0, help=_PCIE_HELP.format("transmitted over")),
)
GPU_PCIE_RX = declare(
    "gputuned_gpu_pcie_receive_bytes_per_second", G, "PCIe receive throughput (NVML 20 ms window).",
    DcgmName("DCGM_FI_PROF_PCIE_RX_BYTES", 1.0, help=_PCIE_HELP.format("received over")),
)
GPU_PCIE_REPLAYS = declare(
    "gputuned_gpu_pcie_replays_total", C, "PCIe link-level retries (replays) since the driver loaded.",
    DcgmName("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", 1.0, counter=True, help="Total number of PCIe retries."),
)
GPU_NVLINK_TX = declare("gputuned_gpu_nvlink_transmit_bytes_total", C, "NVLink data bytes transmitted.")
GPU_NVLINK_RX = declare("gputuned_gpu_nvlink_receive_bytes_total", C, "NVLink data bytes received.")
# DCGM serves NVLINK_BANDWIDTH_TOTAL as a rate in KiB/s, though the CSV types it a counter.
GPU_NVLINK_BW = declare(
    "gputuned_gpu_nvlink_bytes_per_second", G, "NVLink data throughput, both directions, over the last interval.",
    DcgmName("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", 1.0 / 1024, counter=True,
             help="Total number of NVLink bandwidth counters for all lanes."),
)
GPU_ECC = declare(
    "gputuned_gpu_ecc_errors_total", C, "ECC errors since the counters were reset, by type (corrected, uncorrected).",
    DcgmName("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", 1.0, (("type", "corrected"),), counter=True),
    DcgmName("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", 1.0, (("type", "uncorrected"),), counter=True),
)
GPU_REMAPPED = declare(
    "gputuned_gpu_remapped_rows", G, "Memory rows remapped, by cause (correctable, uncorrectable).",
    DcgmName("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", 1.0, (("cause", "correctable"),), counter=True,
             help="Number of remapped rows for correctable errors"),
    DcgmName("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", 1.0, (("cause", "uncorrectable"),), counter=True,
             help="Number of remapped rows for uncorrectable errors"),
)
GPU_REMAP_PENDING = declare("gputuned_gpu_row_remap_pending", G, "1 when a row remap waits for a GPU reset.")
GPU_REMAP_FAILED = declare(
    "gputuned_gpu_row_remap_failed", G, "1 when a row remap failed.",
    DcgmName("DCGM_FI_DEV_ROW_REMAP_FAILURE", 1.0, help="Whether remapping of rows has failed"),
)
GPU_CLOCK_EVENT = declare(
    "gputuned_gpu_clock_event_active", G, "1 while a clock-event (throttle) reason holds, one series per reason."
)
GPU_CLOCK_EVENT_MASK = declare(
    "gputuned_gpu_clock_event_reasons_mask", G, "Bitmask of active clock-event reasons as NVML reports it.",
    DcgmName("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", 1.0),
)
GPU_PSTATE = declare("gputuned_gpu_performance_state", G, "Performance state P0 (fastest) to P15.")
GPU_XID = declare("gputuned_gpu_xid_events_total", C, "XID error events, by XID code.")
GPU_LAST_XID = declare(
    "gputuned_gpu_last_xid", G, "Code of the most recent XID error, 0 if none since start.",
    DcgmName("DCGM_FI_DEV_XID_ERRORS", 1.0, help="Value of the last XID error encountered.", xid=True),
)
GPU_ENC = declare(
    "gputuned_gpu_encoder_utilization_ratio", G, "Video encoder utilization.",
    DcgmName("DCGM_FI_DEV_ENC_UTIL", 100.0, help="Encoder utilization (in %)."),
)
GPU_DEC = declare(
    "gputuned_gpu_decoder_utilization_ratio", G, "Video decoder utilization.",
    DcgmName("DCGM_FI_DEV_DEC_UTIL", 100.0, help="Decoder utilization (in %)."),
)
GPU_POWER_VIOLATION = declare(
    "gputuned_gpu_power_violation_seconds_total", C, "Time clocks were held down by the power limit.",
    DcgmName("DCGM_FI_DEV_POWER_VIOLATION", 1e9, counter=True,
             help="Throttling duration due to power constraints (in ns)."),
)
GPU_THERMAL_VIOLATION = declare(
    "gputuned_gpu_thermal_violation_seconds_total", C, "Time clocks were held down by temperature.",
    DcgmName("DCGM_FI_DEV_THERMAL_VIOLATION", 1e9, counter=True,
             help="Throttling duration due to thermal constraints (in ns)."),
)
GPU_INFO = declare("gputuned_gpu_info", G, "Constant 1 with the GPU's driver version and backend as labels.")

# --- daemon self-metrics -----------------------------------------------------------------
COLLECTOR_UP = declare("gputuned_collector_up", G, "1 when the collector's last run succeeded.")
COLLECTOR_DURATION = declare("gputuned_collector_duration_seconds", G, "Duration of the collector's last run.")
COLLECTOR_ERRORS = declare("gputuned_collector_errors_total", C, "Collector runs that raised.")
TICKS = declare("gputuned_ticks_total", C, "Collection ticks run.")
TICK_OVERRUNS = declare("gputuned_tick_overruns_total", C, "Ticks that ran past their deadline (never stacked).")
TICK_DURATION = declare("gputuned_tick_duration_seconds", G, "Duration of the last collection tick.")
BUILD_INFO = declare("gputuned_build_info", G, "Constant 1 with the gputuned version as a label.")
