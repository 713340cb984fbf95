"""GPM (GPU Performance Monitoring) reads through an NVML API module: NVML's stand-in for DCGM's profiling fields.

From Hopper on, NVML samples the GPU's performance counters itself; two samples give the
activity between them. :class:`GpmSampler` keeps the previous sample of one GPU and turns each
new one into the fields of a :class:`GpmActivity`: graphics engine, SM active, SM occupancy, tensor pipes
(any kind) and DRAM bandwidth, as ratios. It calls the module it is given (the real pynvml or
the simulated one) and raises that module's NVMLError; the device layer maps the errors.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

#: GPM metric constant for each field of :class:`~gputuned.collectors.device.GpmActivity`, in field order.
METRICS = (
    "NVML_GPM_METRIC_GRAPHICS_UTIL",
    "NVML_GPM_METRIC_SM_UTIL",
    "NVML_GPM_METRIC_SM_OCCUPANCY",
    "NVML_GPM_METRIC_ANY_TENSOR_UTIL",
    "NVML_GPM_METRIC_DRAM_BW_UTIL",
)


class GpmSampler:
    """One GPU's GPM samples: each :meth:`activity` call returns the activity since the previous one.

    Two sample buffers are allocated once and taken in turn (the older one is filled again at the
    next call), so a call is NVML's sample and metrics calls alone, not an allocation and a free.
    """

    def __init__(self, nvml: ModuleType, handle: Any) -> None:
        self._nvml = nvml
        self._h = handle
        self._prev: Any = None  # the last sample taken
        self._spare: Any = None  # the buffer the next sample goes into
        self._req: Any = None  # the metrics request, built once: each call sets its two samples and NVML refills it
        self.supported: bool | None = None

    def query_support(self) -> bool:
        """Whether the GPU has GPM (asked once); False where the driver lacks the call."""
        if self.supported is None:
            try:
                self.supported = bool(self._nvml.nvmlGpmQueryDeviceSupport(self._h).isSupportedDevice)
            except (self._nvml.NVMLError, AttributeError):
                self.supported = False
        return self.supported

    def activity(self) -> tuple[float, ...] | None:
        """Activity since the previous call (:class:`GpmActivity`'s fields); None on the first call, which only samples."""
        n = self._nvml
        if self._spare is None:
            self._spare = n.nvmlGpmSampleAlloc()
        cur = self._spare
        n.nvmlGpmSampleGet(self._h, cur)  # on failure the buffer stays the spare, the last sample the last
        prev, self._prev, self._spare = self._prev, cur, self._prev
        if prev is None:
            return None
        req = self._req if self._req is not None else self._request()
        req.sample1, req.sample2 = prev, cur
        n.nvmlGpmMetricsGet(req)
        got = req.metrics[:len(METRICS)]
        for m in got:
            if m.nvmlReturn != 0:
                raise n.NVMLError(m.nvmlReturn)
        return tuple([min(1.0, max(0.0, float(m.value) / 100.0)) for m in got])

    def _request(self) -> Any:
        n = self._nvml
        req = self._req = n.c_nvmlGpmMetricsGet_t()
        req.version = n.NVML_GPM_METRICS_GET_VERSION
        req.numMetrics = len(METRICS)
        for i, name in enumerate(METRICS):
            req.metrics[i].metricId = getattr(n, name)
        return req
