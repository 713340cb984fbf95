"""Several of one GPU's counters in one ``nvmlDeviceGetFieldValues`` call, through an NVML API module.

NVML fills each requested field with its own return code (the call as a whole fails only as a
device call fails: a lost GPU, a bad handle). :class:`FieldReader` asks for the device layer's
:data:`~gputuned.collectors.device.FIELDS` that way; a field the driver answers NOT_SUPPORTED
(or a driver without the call) is read from then on by the single call that reads the same
counter, where one exists. It calls the module it is given (the real pynvml or the simulated
one) and returns or raises that module's NVMLError; the device layer maps the errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

# NVML return codes (nvml.h)
_NOT_SUPPORTED = 3
_FUNCTION_NOT_FOUND = 13

#: The field each key reads (nvidia-ml-py's constant) and what its value is divided by for the key's base unit
#: (a quotient, as each key's single call takes it: a product with the inverse can differ in the last bit).
FIELD_IDS: dict[str, tuple[str, float]] = {
    "energy_j": ("NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 1e3),  # mJ, as nvmlDeviceGetTotalEnergyConsumption
    "memory_temperature_c": ("NVML_FI_DEV_MEMORY_TEMP", 1.0),
    "nvlink_tx_bytes": ("NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX", 1 / 1024),  # KiB (exact)
    "nvlink_rx_bytes": ("NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX", 1 / 1024),
    "pcie_replays": ("NVML_FI_DEV_PCIE_REPLAY_COUNTER", 1.0),
    "ecc_corrected": ("NVML_FI_DEV_ECC_SBE_AGG_TOTAL", 1.0),  # aggregate, as nvmlDeviceGetTotalEccErrors(..., AGGREGATE)
    "ecc_uncorrected": ("NVML_FI_DEV_ECC_DBE_AGG_TOTAL", 1.0),
    "remapped_correctable": ("NVML_FI_DEV_REMAPPED_COR", 1.0),  # as nvmlDeviceGetRemappedRows
    "remapped_uncorrectable": ("NVML_FI_DEV_REMAPPED_UNC", 1.0),
    "remap_pending": ("NVML_FI_DEV_REMAPPED_PENDING", 1.0),
    "remap_failed": ("NVML_FI_DEV_REMAPPED_FAILURE", 1.0),
    "violation_power_s": ("NVML_FI_DEV_PERF_POLICY_POWER", 1e9),  # ns, as nvmlDeviceGetViolationStatus's violationTime
    "violation_thermal_s": ("NVML_FI_DEV_PERF_POLICY_THERMAL", 1e9),
}


#: nvml.h: the NVLink throughput fields read one link, named by the field's scopeId; UINT_MAX sums every link
#: (nvidia-ml-py takes a (fieldId, scopeId) pair for it; a bare id is scope 0, link 0 alone).
ALL_LINKS = 0xFFFFFFFF
_PER_LINK = {"nvlink_tx_bytes", "nvlink_rx_bytes"}


def single_reads(nvml: ModuleType, handle: Any) -> dict[str, Callable[[], float]]:
    """The single NVML call that reads each key where its field is not supported (keys without one: none)."""
    n, h = nvml, handle

    def ecc(kind: int) -> Callable[[], float]:
        return lambda: float(n.nvmlDeviceGetTotalEccErrors(h, kind, n.NVML_AGGREGATE_ECC))

    def remapped(i: int) -> Callable[[], float]:
        return lambda: float(n.nvmlDeviceGetRemappedRows(h)[i])

    def violation(policy: int) -> Callable[[], float]:
        return lambda: n.nvmlDeviceGetViolationStatus(h, policy).violationTime / 1e9

    return {
        "energy_j": lambda: n.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0,
        "ecc_corrected": ecc(n.NVML_MEMORY_ERROR_TYPE_CORRECTED),
        "ecc_uncorrected": ecc(n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
        **{key: remapped(i) for i, key in enumerate(
            ("remapped_correctable", "remapped_uncorrectable", "remap_pending", "remap_failed"))},
        "violation_power_s": violation(n.NVML_PERF_POLICY_POWER),
        "violation_thermal_s": violation(n.NVML_PERF_POLICY_THERMAL),
    }


def field_number(nvml: ModuleType, fv: Any) -> float:
    """A filled field value as a float, by its value type."""
    vt = fv.valueType
    if vt == nvml.NVML_VALUE_TYPE_DOUBLE:
        return float(fv.value.dVal)
    if vt == nvml.NVML_VALUE_TYPE_UNSIGNED_INT:
        return float(fv.value.uiVal)
    return float(fv.value.ullVal)


class FieldReader:
    """One GPU's fields: one field-values call for those the driver answers, single calls for the rest."""

    def __init__(self, nvml: ModuleType, handle: Any) -> None:
        self._nvml = nvml
        self._h = handle
        self._ids: dict[str, tuple[Any, float]] = {
            k: ((getattr(nvml, name), ALL_LINKS) if k in _PER_LINK else getattr(nvml, name), divisor)
            for k, (name, divisor) in FIELD_IDS.items() if hasattr(nvml, name)}
        self._single = single_reads(nvml, handle)
        self.alone: set[str] = set(FIELD_IDS) - set(self._ids)  # read by their single call from now on

    def read(self, keys: Sequence[str]) -> dict[str, float | Exception]:
        """Each key's value or its NVMLError; an NVMLError of the whole call (a lost GPU) is raised."""
        n = self._nvml
        asked = [k for k in keys if k not in self.alone]
        out: dict[str, float | Exception] = {}
        if asked:
            try:
                values = n.nvmlDeviceGetFieldValues(self._h, [self._ids[k][0] for k in asked])
            except n.NVMLError as e:
                if getattr(e, "value", None) not in (_NOT_SUPPORTED, _FUNCTION_NOT_FOUND):
                    raise
                values = []
                self.alone.update(asked)
            for key, fv in zip(asked, values, strict=False):
                ret = fv.nvmlReturn
                if ret == 0:
                    out[key] = field_number(n, fv) / self._ids[key][1]
                elif ret == _NOT_SUPPORTED and key in self._single:
                    self.alone.add(key)
                else:
                    out[key] = n.NVMLError(ret)
        for key in keys:
            if key not in out:
                out[key] = self._alone(key)
        return out

    def _alone(self, key: str) -> float | Exception:
        read = self._single.get(key)
        if read is None:
            return self._nvml.NVMLError(_NOT_SUPPORTED)
        try:
            return read()
        except self._nvml.NVMLError as e:
            return e
