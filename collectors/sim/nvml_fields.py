"""Field values for the simulated NVML: ``nvmlDeviceGetFieldValues`` with the driver's semantics.

One call reads several of a device's fields: the call itself fails only as a whole-device call
fails (a lost GPU, a bad handle); each field carries its own ``nvmlReturn``, NOT_SUPPORTED where
the device lacks the field (scripted as ``field:<id>``, or as the single call that reads the
same counter, for example ``nvmlDeviceGetTotalEccErrors`` for the ECC totals) or where the
simulated node does not keep it. Field ids, value types and units are nvml.h's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gputuned.collectors.sim.nvml_api import (
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_SUCCESS,
    NVML_VALUE_TYPE_UNSIGNED_INT,
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
    _Handle,
    c_nvmlFieldValue_t,
    c_nvmlValue_t,
)
from gputuned.collectors.sim.state import SimDevice

_UINT, _ULL = NVML_VALUE_TYPE_UNSIGNED_INT, NVML_VALUE_TYPE_UNSIGNED_LONG_LONG

#: The fields simulated: nvidia-ml-py's constant, its id, value type, the device attribute it reads
#: (None: a counter the simulated node never moves) and the single call reading the same counter.
_FIELDS: tuple[tuple[str, int, int, str | None, str], ...] = (
    ("NVML_FI_DEV_ECC_SBE_AGG_TOTAL", 5, _ULL, "ecc_corrected", "nvmlDeviceGetTotalEccErrors"),
    ("NVML_FI_DEV_ECC_DBE_AGG_TOTAL", 6, _ULL, "ecc_uncorrected", "nvmlDeviceGetTotalEccErrors"),
    ("NVML_FI_DEV_PERF_POLICY_POWER", 74, _ULL, "power_violation_ns", "nvmlDeviceGetViolationStatus"),
    ("NVML_FI_DEV_PERF_POLICY_THERMAL", 75, _ULL, "thermal_violation_ns", "nvmlDeviceGetViolationStatus"),
    ("NVML_FI_DEV_MEMORY_TEMP", 82, _UINT, "memory_temperature_c", ""),
    ("NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 83, _ULL, "energy_mj", "nvmlDeviceGetTotalEnergyConsumption"),
    ("NVML_FI_DEV_PCIE_REPLAY_COUNTER", 94, _ULL, None, ""),  # the simulated PCIe link never retries
    ("NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX", 138, _ULL, "nvlink_tx_kib", ""),
    ("NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX", 139, _ULL, "nvlink_rx_kib", ""),
    ("NVML_FI_DEV_REMAPPED_COR", 142, _UINT, "remapped_correctable", "nvmlDeviceGetRemappedRows"),
    ("NVML_FI_DEV_REMAPPED_UNC", 143, _UINT, "remapped_uncorrectable", "nvmlDeviceGetRemappedRows"),
    ("NVML_FI_DEV_REMAPPED_PENDING", 144, _UINT, "remap_pending", "nvmlDeviceGetRemappedRows"),
    ("NVML_FI_DEV_REMAPPED_FAILURE", 145, _UINT, "remap_failure", "nvmlDeviceGetRemappedRows"),
)
_BY_ID = {fid: (vtype, attr, single) for _, fid, vtype, attr, single in _FIELDS}

#: The field-id constants by nvidia-ml-py's names, for the simulated module to serve.
FIELD_NAMES: dict[str, int] = {name: fid for name, fid, *_ in _FIELDS}


_PER_LINK = (138, 139)  # nvml.h: the NVLink throughput fields read the link named by scopeId; UINT_MAX sums them all
_ALL_LINKS = 0xFFFFFFFF


def _field_value(dev: SimDevice, asked: int | tuple[int, int]) -> c_nvmlFieldValue_t:
    fid, scope = asked if isinstance(asked, tuple) else (asked, 0)  # nvidia-ml-py: a bare id is scope 0
    known = _BY_ID.get(fid)
    if known is None or f"field:{fid}" in dev.unsupported or known[2] in dev.unsupported:
        return c_nvmlFieldValue_t(fid, scope, 0, 0, _ULL, NVML_ERROR_NOT_SUPPORTED, c_nvmlValue_t())
    vtype, attr, _ = known
    raw = int(getattr(dev, attr)) if attr else 0
    if fid in _PER_LINK and scope != _ALL_LINKS:  # one link of the node's evenly loaded links
        links = dev.profile.nvlink_links
        if scope >= links:
            return c_nvmlFieldValue_t(fid, scope, 0, 0, vtype, NVML_ERROR_INVALID_ARGUMENT, c_nvmlValue_t())
        raw //= links
    value = c_nvmlValue_t(uiVal=raw) if vtype == _UINT else c_nvmlValue_t(ullVal=raw)
    return c_nvmlFieldValue_t(fid, scope, 0, 0, vtype, NVML_SUCCESS, value)


def field_values_api(resolve: Callable[[_Handle, str], SimDevice]) -> dict[str, Any]:
    """``nvmlDeviceGetFieldValues`` by nvidia-ml-py's name, reading devices through ``resolve(handle, func)``."""

    def nvmlDeviceGetFieldValues(handle: _Handle, fieldIds: list[int | tuple[int, int]]) -> list[c_nvmlFieldValue_t]:  # noqa: N802, N803
        dev = resolve(handle, "nvmlDeviceGetFieldValues")
        return [_field_value(dev, fid) for fid in fieldIds]

    return {"nvmlDeviceGetFieldValues": nvmlDeviceGetFieldValues}
