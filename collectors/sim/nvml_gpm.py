"""GPU Performance Monitoring (GPM) for the simulated NVML: nvidia-ml-py's GPM names, structures and calls.

GPM is what NVML offers from Hopper on in place of DCGM's profiling fields: a sample of the
GPU's performance counters is taken twice and ``nvmlGpmMetricsGet`` turns the pair into
activity percentages over the interval between them. On a profile with ``gpm = false``
(Ampere and older) ``nvmlGpmQueryDeviceSupport`` says so and the other calls fail with
NOT_SUPPORTED, as the driver does.

The simulated counters follow the utilization the node's physics computes: the graphics
engine is active while a kernel runs (``util_gpu_pct``), SMs and tensor pipes a fixed share of
that (:data:`GPM_SHARE_OF_GPU_UTIL`), DRAM as busy as the memory interface
(``util_mem_pct``); a metric is the mean of its two samples.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gputuned.collectors.sim.nvml_api import (
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_NOT_SUPPORTED,
    NVMLError,
    _Handle,
    c_nvmlGpmSupport_t,
)
from gputuned.collectors.sim.state import SimDevice

NVML_GPM_METRICS_GET_VERSION = 1
NVML_GPM_SUPPORT_VERSION = 1
NVML_GPM_METRIC_MAX = 210
#: The metrics simulated: nvidia-ml-py's constant and value, and the share of the GPU utilization it shows
#: (None: DRAM bandwidth, which follows the memory utilization instead).
_METRICS: tuple[tuple[str, int, float | None], ...] = (
    ("NVML_GPM_METRIC_GRAPHICS_UTIL", 1, 1.0),
    ("NVML_GPM_METRIC_SM_UTIL", 2, 0.9),
    ("NVML_GPM_METRIC_SM_OCCUPANCY", 3, 0.4),
    ("NVML_GPM_METRIC_ANY_TENSOR_UTIL", 5, 0.5),
    ("NVML_GPM_METRIC_HMMA_TENSOR_UTIL", 7, 0.5),
    ("NVML_GPM_METRIC_DRAM_BW_UTIL", 10, None),
)
GPM_SHARE_OF_GPU_UTIL: dict[int, float | None] = {value: share for _, value, share in _METRICS}
globals().update({name: value for name, value, _ in _METRICS})


@dataclass
class c_nvmlGpmSample_t:  # noqa: N801
    """An opaque sample: here the device it came from and its utilization when taken."""

    device: int = -1
    util_gpu_pct: float = 0.0
    util_mem_pct: float = 0.0


class c_metricInfo_t(ctypes.Structure):  # noqa: N801
    _fields_ = [("shortName", ctypes.c_char_p), ("longName", ctypes.c_char_p), ("unit", ctypes.c_char_p)]


class c_nvmlGpmMetric_t(ctypes.Structure):  # noqa: N801
    """One metric of a request, laid out as nvidia-ml-py's: a request's 210 of them are one array, not 210 objects."""

    _fields_ = [("metricId", ctypes.c_uint), ("nvmlReturn", ctypes.c_uint), ("value", ctypes.c_double),
                ("metricInfo", c_metricInfo_t)]


@dataclass
class c_nvmlGpmMetricsGet_t:  # noqa: N801
    version: int = 0
    numMetrics: int = 0  # noqa: N815
    sample1: c_nvmlGpmSample_t | None = None
    sample2: c_nvmlGpmSample_t | None = None
    metrics: ctypes.Array[c_nvmlGpmMetric_t] = field(default_factory=lambda: (c_nvmlGpmMetric_t * NVML_GPM_METRIC_MAX)())


def _percent(metric: int, s: c_nvmlGpmSample_t) -> float | None:
    if metric not in GPM_SHARE_OF_GPU_UTIL:
        return None
    share = GPM_SHARE_OF_GPU_UTIL[metric]
    return s.util_mem_pct if share is None else share * s.util_gpu_pct


def _metrics_get(metricsGet: c_nvmlGpmMetricsGet_t) -> c_nvmlGpmMetricsGet_t:  # noqa: N803
    s1, s2 = metricsGet.sample1, metricsGet.sample2
    if metricsGet.version != NVML_GPM_METRICS_GET_VERSION or s1 is None or s2 is None or s1.device != s2.device:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    for m in metricsGet.metrics[:metricsGet.numMetrics]:
        a, b = _percent(m.metricId, s1), _percent(m.metricId, s2)
        m.nvmlReturn, m.value = (NVML_ERROR_NOT_SUPPORTED, 0.0) if a is None or b is None else (0, (a + b) / 2.0)
    return metricsGet


def gpm_api(resolve: Callable[[_Handle, str], SimDevice]) -> dict[str, Any]:
    """The GPM calls by nvidia-ml-py's names, reading devices through ``resolve(handle, func)``."""

    def with_gpm(handle: _Handle, func: str) -> SimDevice:
        dev = resolve(handle, func)
        if not dev.profile.gpm:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return dev

    def nvmlGpmQueryDeviceSupport(device: _Handle) -> c_nvmlGpmSupport_t:  # noqa: N802
        dev = resolve(device, "nvmlGpmQueryDeviceSupport")
        return c_nvmlGpmSupport_t(NVML_GPM_SUPPORT_VERSION, int(dev.profile.gpm))

    def nvmlGpmSampleAlloc() -> c_nvmlGpmSample_t:  # noqa: N802
        return c_nvmlGpmSample_t()

    def nvmlGpmSampleFree(gpmSample: c_nvmlGpmSample_t) -> None:  # noqa: N802, N803
        gpmSample.device = -1

    def nvmlGpmSampleGet(device: _Handle, gpmSample: c_nvmlGpmSample_t) -> None:  # noqa: N802, N803
        dev = with_gpm(device, "nvmlGpmSampleGet")
        gpmSample.device, gpmSample.util_gpu_pct, gpmSample.util_mem_pct = dev.index, dev.util_gpu_pct, dev.util_mem_pct

    def nvmlGpmMetricsGet(metricsGet: c_nvmlGpmMetricsGet_t) -> c_nvmlGpmMetricsGet_t:  # noqa: N802, N803
        return _metrics_get(metricsGet)

    return {f.__name__: f for f in (nvmlGpmQueryDeviceSupport, nvmlGpmSampleAlloc, nvmlGpmSampleFree,
                                    nvmlGpmSampleGet, nvmlGpmMetricsGet)}


#: Constants and structures by nvidia-ml-py's names, for the simulated module to serve.
GPM_NAMES: dict[str, Any] = {k: v for k, v in dict(globals()).items() if k.startswith(("NVML_GPM_", "c_nvmlGpm", "c_metricInfo")) and k != "c_nvmlGpmSupport_t"}
